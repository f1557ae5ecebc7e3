"""The real dSprites file, `dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz` (DeepMind's).

    imgs             uint8 (737280, 64, 64), 0 or 1
    latents_classes  int (737280, 6): colour, shape, scale, orientation, posX, posY
    latents_values   float64 (737280, 6)   (not read)
    metadata         a pickled dict        (not read: pickles are refused)

`--config.data_dir=` the file, or a folder holding it as its only `.npz`: a
`.npz` holding `imgs` or `latents_classes` is read here (any other `.npz` by
`vae_jax.sources.npz`), named "dsprites" unless `dataset` names it. The
images become 0 / 255 uint8 `(N, 64, 64, 1)`; the factors are the indices of
`latents_classes` columns 1 .. 5 (`FACTOR_NAMES`, colour being constant),
the labels the shape. The file must hold a full grid: column j takes the
values 0 .. K_j - 1 and every combination occurs once (in any order; the real
file's is row-major, posY fastest), so that `vae_jax.sources.factors.lookup`
finds the image of any combination. A smaller file of the same layout (a
sub-grid, as the tests write) is read the same way. It is read whole into
memory (3.0 GB for the real file, about twice that while `vae_jax.data`
splits off the test set by `test_fraction`).
"""
import pathlib
import zipfile

import numpy as np

from vae_jax.errors import UsageError
from vae_jax.sources import factors as factors_lib

NAME = "dsprites"
FILE_NAME = "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz"
IMAGES, CLASSES = "imgs", "latents_classes"
COLUMNS = ("color", "shape", "scale", "orientation", "posX", "posY")
FACTOR_NAMES = ("shape", "scale", "orientation", "x", "y")  # Columns 1 .. 5, as in shapes2d.
SHAPE_NAMES = ("square", "ellipse", "heart")


def holds(path: pathlib.Path) -> bool:
  """Whether the `.npz` at `path` is in this layout (holds `imgs` or `latents_classes`);
  reads the archive's list of names only."""
  try:
    with zipfile.ZipFile(path) as archive:
      names = {name.removesuffix(".npy") for name in archive.namelist()}
  except (OSError, zipfile.BadZipFile):
    return False  # vae_jax.sources.npz reports what is wrong with it.
  return bool(names & {IMAGES, CLASSES})


def read(path: pathlib.Path) -> tuple[np.ndarray, np.ndarray, tuple[int, ...]]:
  """Reads the file.

  Returns:
    (images uint8 `(N, H, W, 1)` 0 or 255, factors int32 `(N, 5)` in the file's
    order, factor sizes (K_1, .., K_5)).

  Raises:
    UsageError: a missing key, arrays of the wrong dtype, shape or values, or
      factors that are not a full grid or do not match the images (one line).
  """
  images, classes = _load(path)
  if images.dtype != np.uint8 or images.ndim != 3:
    raise UsageError(f"{path}: {IMAGES} is {images.dtype} of shape {images.shape}; expected "
                     "uint8 images (N, H, W) of 0 and 1, as in dSprites")
  if not np.issubdtype(classes.dtype, np.integer) or classes.shape != (len(images), len(COLUMNS)):
    raise UsageError(f"{path}: {CLASSES} is {classes.dtype} of shape {classes.shape}; expected "
                     f"integers of shape ({len(images)}, {len(COLUMNS)}), one row per image "
                     f"({', '.join(COLUMNS)})")
  if len(images) and images.max() > 1:
    raise UsageError(f"{path}: {IMAGES} holds values up to {images.max()}; expected 0 and 1")
  factors = classes[:, 1:].astype(np.int32)
  sizes = _grid_sizes(path, classes)
  np.multiply(images, 255, out=images)  # In place: the real file's images are 3.0 GB.
  return images[..., None], factors, sizes


def _load(path: pathlib.Path) -> tuple[np.ndarray, np.ndarray]:
  """The file's `imgs` and `latents_classes`."""
  try:
    with np.load(path, allow_pickle=False) as archive:
      missing = [key for key in (IMAGES, CLASSES) if key not in archive.files]
      if missing:
        raise UsageError(f"{path}: lacks {', '.join(missing)} (it holds "
                         f"{', '.join(archive.files) or 'nothing'}; a dSprites file holds "
                         f"{IMAGES} and {CLASSES})")
      return archive[IMAGES], archive[CLASSES]
  except (OSError, EOFError, ValueError, zipfile.BadZipFile) as e:
    if isinstance(e, UsageError):
      raise
    reason = str(e).splitlines()[0] if str(e) else type(e).__name__
    raise UsageError(f"{path}: cannot read as .npz ({reason})") from None


def _grid_sizes(path: pathlib.Path, classes: np.ndarray) -> tuple[int, ...]:
  """K_j of the factor columns 1 .. 5, checked to form a full grid of len(classes) rows."""
  if not len(classes):
    raise UsageError(f"{path}: holds no images")
  low, high = classes.min(0), classes.max(0)
  if low[0] != high[0]:
    raise UsageError(f"{path}: its {COLUMNS[0]} column takes several values; expected one")
  if (low[1:] != 0).any():
    j = int(np.flatnonzero(low[1:])[0]) + 1
    raise UsageError(f"{path}: {CLASSES} column {j} ({COLUMNS[j]}) starts at {low[j]}; "
                     "expected factor indices 0 .. K - 1")
  sizes = tuple(int(k) + 1 for k in high[1:])
  grid = "x".join(map(str, sizes))
  if np.prod(sizes, dtype=np.int64) != len(classes):
    raise UsageError(f"{path}: {len(classes):,} images, but its factors span a {grid} grid "
                     f"of {np.prod(sizes, dtype=np.int64):,}; expected one image per combination")
  counts = np.bincount(factors_lib.grid_index(classes[:, 1:].astype(np.int64), sizes),
                       minlength=len(classes))
  if (counts != 1).any():
    raise UsageError(f"{path}: {int((counts == 0).sum()):,} combinations of its {grid} factor "
                     "grid have no image and others several; expected each exactly once")
  return sizes
