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
from vae_jax import model as model_lib
from vae_jax import stacked
from vae_jax import train_step


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
  config = experiment.resolve_config(config, dataset)
  return experiment.Experiment.build(
      config, dataset, model_lib.from_config(config, train_images.shape[1:]),
      with_evaluation=False)


def step_flops(model, step_config, state, settings, batch) -> float:
  """FLOPs of one training step of every model, from XLA's cost analysis."""
  step = jax.jit(stacked.over_models(
      functools.partial(train_step.step_one, model, step_config), state.num_models,
      (0, None, 0, 0)))
  keys = jnp.stack([jax.random.key(i) for i in range(state.num_models)])
  analysis = step.lower(state, batch, keys, settings).compile().cost_analysis()
  analysis = analysis[0] if isinstance(analysis, (list, tuple)) else analysis
  return float(analysis.get("flops", float("nan")))
