"""Which images a source without a test split holds out for testing: a fixed draw.

The draw uses its own seed, `SPLIT_SEED`, not a run's `seed`, so that runs with
different seeds (and `vae-jax evaluate`) share one test set.
"""
import numpy as np

from vae_jax.errors import UsageError

SPLIT_SEED = 0


def test_mask(n: int, fraction: float, where: str = "data") -> np.ndarray:
  """`(n,)` bool, True for the round(n * fraction) images `split_off_test` holds out.

  Raises:
    UsageError: too few images for both parts to be non-empty.
  """
  num_test = round(n * fraction)
  if not 0 < num_test < n:
    raise UsageError(f"{where}: {n} images and test_fraction={fraction} leave an empty "
                     f"{'test' if num_test == 0 else 'training'} split; add images or a "
                     "test/ folder")
  is_test = np.zeros(n, bool)
  is_test[np.random.default_rng(SPLIT_SEED).permutation(n)[:num_test]] = True
  return is_test
