"""Figures of the latent space: test-image picking, image grids and the latent scatter.

What `vae-jax sample|interpolate|latent-map` draw, as functions a
notebook can call too. Grids come from `images.tile`, so their pixel sizes
follow `images.grid_size`; the scatter is a matplotlib figure of fixed size.
"""
import math
import pathlib

import numpy as np

from vae_jax import data
from vae_jax import evaluation
from vae_jax import images
from vae_jax.trained import TrainedModel
from vae_jax.errors import UsageError
from vae_jax.errors import counted

SCATTER_INCHES = 6
SCATTER_DPI = 100  # The scatter PNG is SCATTER_INCHES * SCATTER_DPI pixels square.


def output_dir(workdir, out: str | None, model: TrainedModel | None = None) -> pathlib.Path:
  """`out` when given, else where training writes the model's figures: `workdir/images`,
  or `workdir/images/model_I` for model I of a run of several."""
  if out:
    return pathlib.Path(out)
  if model is None or not model.config:
    return pathlib.Path(workdir) / "images"
  return (pathlib.Path(workdir) / "images"
          / images.model_subdir(model.config.num_models, model.index))


def test_set(model: TrainedModel) -> tuple[np.ndarray, np.ndarray]:
  """The test images as evaluation sees them (binarised if the config says so).

  Returns:
    (uint8 images (N, H, W, C), int labels (N,), -1 where unknown).
  """
  config = model.config
  split = data.load(data.settings(config)).test
  inputs = evaluation.evaluation_inputs(split.images, binarize=config.binarize, seed=config.seed)
  return inputs, split.labels


def pick_by_label(labels: np.ndarray, digit: int, count: int, rng: np.random.Generator,
                  exclude: np.ndarray = np.empty(0, int)) -> np.ndarray:
  """`count` distinct indices of test images with label `digit`, none in `exclude`.

  Raises:
    UsageError: too few such images.
  """
  candidates = np.setdiff1d(np.flatnonzero(labels == digit), exclude)
  if not (labels >= 0).any():
    raise UsageError("the test set has no labels to pick images by; choose them with "
                     "--from_index and --to_index")
  if len(candidates) == 0:
    raise UsageError(f"no test image with label {digit} (labels: "
                     f"{', '.join(map(str, np.unique(labels[labels >= 0])))})")
  if len(candidates) < count:
    raise UsageError(f"only {counted(len(candidates), 'test image')} with label {digit} to "
                     "pick from, "
                     f"{count} needed; lower --pairs")
  return np.sort(rng.choice(candidates, count, replace=False))


def check_indices(indices: list[int], num_images: int) -> np.ndarray:
  """The indices as an array; raises UsageError for any outside the test set."""
  bad = [i for i in indices if not 0 <= i < num_images]
  if bad:
    raise UsageError(f"test image index {bad[0]} out of range: the test set has "
                     f"{counted(num_images, 'image')} (0 .. {num_images - 1})")
  return np.asarray(indices, int)


def square_grid(pictures: np.ndarray) -> np.ndarray:
  """Pictures (N, H, W) or (N, H, W, 3) in [0, 1] -> a uint8 grid ceil(sqrt(N)) columns wide."""
  return images.tile(pictures, cols=math.ceil(math.sqrt(len(pictures))))


def interpolation_grid(start: np.ndarray, paths: np.ndarray, end: np.ndarray) -> np.ndarray:
  """One row per pair: the start image, its path, the end image.

  Args:
    start, end: the original pictures (P, H, W) or (P, H, W, 3) in [0, 1].
    paths: the decoded paths (P, S, H, W) or (P, S, H, W, 3) in [0, 1].

  Returns:
    uint8 grid of P rows and S + 2 columns.
  """
  rows = np.concatenate([start[:, None], paths, end[:, None]], axis=1)
  return images.tile(rows.reshape(-1, *rows.shape[2:]), cols=rows.shape[1])


def interpolation_frames(paths: np.ndarray) -> list[np.ndarray]:
  """Paths (P, S, H, W[, 3]) -> S uint8 frames, frame i showing step i of every pair in a row."""
  return [images.tile(paths[:, i], cols=paths.shape[0]) for i in range(paths.shape[1])]


def project_2d(codes: np.ndarray) -> tuple[np.ndarray, float | None]:
  """Codes (N, L) -> (N, 2) points: the codes when L <= 2, else their PCA projection.

  Returns:
    (points, fraction of the variance the two principal axes explain, or None
    when no projection was needed). L = 1 gets a zero second coordinate.
  """
  codes = np.asarray(codes, np.float64)
  if codes.shape[1] <= 2:
    return np.pad(codes, ((0, 0), (0, 2 - codes.shape[1]))), None
  centre, axes, explained = principal_axes(codes)
  return (codes - centre) @ axes.T, explained


def principal_axes(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
  """The plane of the codes' two principal axes.

  Args:
    codes: (N, L) with L >= 2.

  Returns:
    (centre (L,): the codes' mean, axes (2, L): orthonormal rows, the fraction of
    the variance the two axes explain).
  """
  codes = np.asarray(codes, np.float64)
  centre = codes.mean(axis=0)
  _, singular, vt = np.linalg.svd(codes - centre, full_matrices=False)
  explained = float(np.sum(singular[:2] ** 2) / max(np.sum(singular ** 2), 1e-30))
  return centre, vt[:2], explained


def save_latent_scatter(path, codes: np.ndarray, labels: np.ndarray,
                        title: str = "") -> pathlib.Path:
  """Scatters the codes (N, L) coloured by label into a square PNG, `title` on top.

  Codes of more than two dimensions are projected on their two principal
  axes (the title says so and how much variance that keeps).
  """
  from matplotlib.backends.backend_agg import FigureCanvasAgg  # pylint: disable=g-import-not-at-top
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  points, explained = project_2d(codes)
  latents = codes.shape[1]
  if explained is None:
    axes_names = ("z1", "z2") if latents == 2 else ("z1", "")
    heading = f"latent means ({latents}-D)"
  else:
    axes_names = ("principal axis 1", "principal axis 2")
    heading = f"PCA of the {latents}-D latent means ({explained:.0%} of variance)"
  figure = Figure(figsize=(SCATTER_INCHES, SCATTER_INCHES), dpi=SCATTER_DPI)
  FigureCanvasAgg(figure)
  ax = figure.add_subplot()
  for i, label in enumerate(np.unique(labels)):
    mine = labels == label
    ax.scatter(points[mine, 0], points[mine, 1], s=4, alpha=0.7, color=f"C{i % 10}",
               label=str(label), rasterized=True)
  ax.set(xlabel=axes_names[0], ylabel=axes_names[1],
         title=f"{title}\n{heading}" if title else heading)
  ax.legend(markerscale=3, fontsize="small", loc="best", title="label")
  figure.tight_layout()  # Rearranges inside the figure; the canvas size stays fixed.
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  figure.savefig(path, dpi=SCATTER_DPI)
  return path
