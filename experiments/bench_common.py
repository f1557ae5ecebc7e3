"""What the training benchmarks share: the images, the trainer's objects, XLA's FLOP count.

Imported by `bench_train.py`, `bench_families.py`, `bench_discrete.py` and
`bench_disentangle.py` (run from this folder's scripts,
which put it on the path).
"""
import functools
import time

import jax
import jax.numpy as jnp
import numpy as np

from vae_jax import data
from vae_jax import epoch
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


class EpochTimer:
  """The trainer's compiled epoch for `config` on these images, timed one epoch at a time.

  Compiled and run once (a warm-up) when made, XLA's FLOPs per step counted unless
  `count_flops` is False; `epoch()` runs and times the next one
  (the same keys each time: the data order does not change an epoch's work).
  """

  def __init__(self, config, train_images: np.ndarray, count_flops: bool = True):
    self.exp, self.times = build(config, train_images), []
    self.state = self.exp.create_state()
    self.keys = self.exp.keys.epoch(0)
    self.compile_seconds = self.exp.runner.compile(self.state, *self.keys, self.exp.hyper)
    batch = jnp.asarray(train_images[:self.exp.config.batch_size])
    self.flops = (step_flops(self.exp.step, self.state, self.exp.hyper, batch) if count_flops
                  else None)
    self.epoch()  # Warm-up.

  def epoch(self) -> float:
    start = time.perf_counter()
    self.state = epoch.run_epoch(self.exp.runner, self.state, *self.keys, self.exp.hyper)
    jax.block_until_ready(self.state)
    return time.perf_counter() - start
