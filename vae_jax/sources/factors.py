"""Data with known factors of variation: the grid of factor values and its observations.

A data set with known factors (`vae_jax.sources.shapes2d`, the dSprites file
read by `vae_jax.sources.dsprites`) is a full grid: one image for every
combination of F factors, factor j taking the values 0 .. K_j - 1
(`factor_sizes` = (K_1, ..., K_F)). Each split of it carries the `(N, F)`
int32 factor indices of its images (`data.Split.factors`), as it carries labels.

Metrics that draw their own observations (the beta-VAE and FactorVAE scores
fix one factor and vary the others) need more than the splits: the image of
any combination of the full grid, whichever images a split or `train_subset`
left out. `GroundTruth` is that: `factor_names`, `factor_sizes` and
`images(factors)`; `data.ground_truth(dataset)` returns a data set's.
"""
import dataclasses
import math
from collections.abc import Callable
from collections.abc import Sequence

import numpy as np

from vae_jax.sources import pixels


@dataclasses.dataclass(frozen=True)
class GroundTruth:
  """The observations of a full factor grid, by factor indices.

  Attributes:
    factor_names: factor j's name, e.g. ("shape", "scale", "orientation", "x", "y").
    factor_sizes: K_j, the number of values of factor j.
    observe: checked `(n, F)` int64 factor indices -> their uint8 images
      `(n, H, W, C)` at the source's size.
    image_size: S > 0: each image is resized to S x S (as `data.load` resized the
      splits, so the observations are those the model is trained on); 0 keeps it.
  """

  factor_names: tuple[str, ...]
  factor_sizes: tuple[int, ...]
  observe: Callable[[np.ndarray], np.ndarray] = dataclasses.field(repr=False)
  image_size: int = 0

  @property
  def num_values(self) -> int:
    """The number of combinations: the product of `factor_sizes`."""
    return math.prod(self.factor_sizes)

  def images(self, factors) -> np.ndarray:
    """The observations of `factors`.

    Args:
      factors: `(n, F)` integers, column j in 0 .. factor_sizes[j] - 1.

    Returns:
      uint8 `(n, H, W, C)`, row i the image of factors[i].

    Raises:
      ValueError: factors of the wrong shape, type or range.
    """
    images = self.observe(check(factors, self.factor_sizes))
    return pixels.resize(images, self.image_size) if self.image_size else images

  def resized(self, image_size: int) -> "GroundTruth":
    """The same grid, its images resized to image_size x image_size (0: as they are)."""
    return dataclasses.replace(self, image_size=image_size)


def check(factors, sizes: Sequence[int]) -> np.ndarray:
  """`factors` as int64 `(n, F)`, checked against the grid's `sizes`.

  Raises:
    ValueError: not integers of shape (n, len(sizes)), or a value outside its factor's range.
  """
  factors = np.asarray(factors)
  if (factors.ndim != 2 or factors.shape[1] != len(sizes)
      or not (np.issubdtype(factors.dtype, np.integer) or factors.size == 0)):
    raise ValueError(f"expected integer factor indices of shape (n, {len(sizes)}); got "
                     f"{factors.dtype} of shape {factors.shape}")
  factors = factors.astype(np.int64)
  low, high = factors.min(0, initial=0), factors.max(0, initial=0)
  for j, size in enumerate(sizes):
    if low[j] < 0 or high[j] >= size:
      raise ValueError(f"factor {j} takes the values 0 .. {size - 1}; got values in "
                       f"[{low[j]}, {high[j]}]")
  return factors


def grid_index(factors: np.ndarray, sizes: Sequence[int]) -> np.ndarray:
  """The row-major position in the grid of each row of checked `factors` `(n, F)`: `(n,)` int64
  (the last factor varies fastest, as in the dSprites file)."""
  return np.ravel_multi_index(tuple(factors.T), tuple(sizes)).astype(np.int64)


def grid(sizes: Sequence[int]) -> np.ndarray:
  """Every combination of factor indices, in row-major order: int32 `(prod(sizes), F)`."""
  return np.stack(np.unravel_index(np.arange(math.prod(sizes)), tuple(sizes)), 1).astype(np.int32)


def lookup(factor_names: Sequence[str], factor_sizes: Sequence[int], parts) -> GroundTruth:
  """The ground truth of a grid held as images in `parts`, looked up by grid index.

  Args:
    factor_names, factor_sizes: the grid's.
    parts: the splits that together hold every combination once (each with
      `images` `(N, H, W, C)` uint8, an array, memmap or lazy array, and
      `factors` `(N, F)`), e.g. a data set's train and test splits before any
      `train_subset`. They are kept, not copied.

  Raises:
    ValueError: the parts do not hold every combination exactly once.
  """
  sizes = tuple(int(k) for k in factor_sizes)
  position = np.full(math.prod(sizes), -1, np.int64)  # Grid index -> row of the parts, joined.
  start = 0
  for part in parts:
    where = grid_index(check(part.factors, sizes), sizes)
    if (position[where] >= 0).any() or len(np.unique(where)) != len(where):
      raise ValueError("a factor combination occurs more than once")
    position[where] = start + np.arange(len(where))
    start += len(where)
  if (position < 0).any():
    raise ValueError(f"{int((position < 0).sum())} factor combinations have no image")
  images = [part.images for part in parts]
  bounds = np.cumsum([0] + [len(x) for x in images])

  def observe(factors: np.ndarray) -> np.ndarray:
    rows = position[grid_index(factors, sizes)]
    out = np.empty((len(rows), *images[0].shape[1:]), np.uint8)
    part = np.searchsorted(bounds, rows, side="right") - 1
    for p, source in enumerate(images):
      mine = np.flatnonzero(part == p)
      if len(mine):
        out[mine] = np.asarray(source[rows[mine] - bounds[p]])
    return out

  return GroundTruth(tuple(factor_names), sizes, observe)
