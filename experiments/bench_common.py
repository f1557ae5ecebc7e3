"""What the training benchmarks share: the images, the trainer's objects, XLA's FLOP count.

Imported by `bench_train.py` and `bench_families.py` (run from this folder's scripts,
which put it on the path).
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np

from vae_jax import data
from vae_jax import experiment
from vae_jax import stacked
from vae_jax import train_state


def images(data_dir: str, count: int) -> np.ndarray:
  """The first `count` training images of the IDX folder; random bytes if it is missing."""
  try:
    return data.load_idx_dir(data_dir).train.images[:count]
  except Exception:  # pylint: disable=broad-except
    return np.random.default_rng(0).integers(0, 256, (count, 28, 28, 1), np.uint8)


def build(config, train_images: np.ndarray) -> experiment.Experiment:
  """What the trainer builds for `config` on these images (no evaluation data)."""
  split = data.Split(train_images, np.full(len(train_images), -1, np.int32))
  dataset = data.Dataset("bench", split, split)
  config, family = experiment.resolve(config, dataset)
  return experiment.Experiment.build(config, family, dataset, with_evaluation=False)


def step_flops(step, state, hyper, batch) -> float:
  """FLOPs of one training step of every model, from XLA's cost analysis."""
  one_step = jax.jit(stacked.over_models(
      functools.partial(train_state.step_one, step), state.num_models, (0, None, 0, 0)))
  keys = jnp.stack([jax.random.key(i) for i in range(state.num_models)])
  analysis = one_step.lower(state, batch, keys, hyper).compile().cost_analysis()
  analysis = analysis[0] if isinstance(analysis, (list, tuple)) else analysis
  return float(analysis.get("flops", float("nan")))
