"""The device-resident epoch: what the trainer and the benchmarks run.

The training set lives in device memory as uint8 (examples sharded over the
devices). Each epoch it is shuffled there from a key and cut into batches,
which `lax.scan` steps through in chunks of equal length (one compiled
program), so that between chunks the host can show progress, check for
non-finite losses and honour Ctrl-C. Step `s` of an epoch draws from
`fold_in(epoch key, s)`: chunking never changes the result.

    runner = epoch.Runner(model, step_config, train_images, batch_size=128,
                          chunks_per_epoch=10, mesh=mesh)
    runner.compile(state, keys, settings)           # optional: apart from timing
    batches = runner.batches(shuffle_keys)
    for start in range(0, runner.steps_per_epoch, runner.chunk):
      state, metrics = runner.run_chunk(state, batches, step_keys, settings, start)
"""
import functools
import time

import jax
import jax.numpy as jnp
import numpy as np

from vae_jax import parallel
from vae_jax import stacked
from vae_jax import train_step as train_step_lib


def chunk_size(steps: int, chunks: int) -> int:
  """The divisor of `steps` closest to `steps / chunks`: one compiled chunk length."""
  divisors = [d for d in range(1, steps + 1) if steps % d == 0]
  return min(divisors, key=lambda d: (abs(steps / d - chunks), -d))


@functools.partial(jax.jit, static_argnames=("num_examples", "batch_size", "sharding"))
def shuffle_batches(images, keys, *, num_examples: int, batch_size: int, sharding):
  """Fresh permutations of the first `num_examples` images, cut into full batches.

  Args:
    images: uint8 (N_padded, H, W, C) on the devices, or a tuple of such arrays
      (images and labels, `data.examples`), each permuted alike.
    keys: (K,) keys: K = 1 for one order all models share, K = N for one each.
    num_examples: the real examples (the rest is padding).
    batch_size: examples per batch.
    sharding: where the batches go (the batch axis sharded over the devices).

  Returns:
    uint8 (S, B, H, W, C) for K = 1, (K, S, B, H, W, C) otherwise; S = num_examples // B.
    The last `num_examples % B` examples of each permutation are dropped this epoch.
  """
  steps = num_examples // batch_size

  def one(key):
    perm = jax.random.permutation(key, num_examples)[:steps * batch_size]
    return jax.tree.map(lambda a: a[perm].reshape(steps, batch_size, *a.shape[1:]), images)

  batches = one(keys[0]) if len(keys) == 1 else jax.vmap(one)(keys)
  return jax.lax.with_sharding_constraint(batches, sharding)


@functools.partial(jax.jit, static_argnames=("model", "step_config", "num_steps", "chunk_batches"),
                   donate_argnames=("state",))
def train_chunk(model, step_config, state, batches, step_keys, settings, start, *,
                num_steps: int, chunk_batches: bool = False):
  """Steps `start .. start + num_steps - 1` of an epoch with `lax.scan`, for every model.

  Args:
    model, step_config: static; see `train_step.step_one`.
    state: the stacked train state; its buffers are donated.
    batches: the epoch's batches from `shuffle_batches`; with `chunk_batches`
      only this chunk's, batch i for step `start + i` (`vae_jax.streaming`).
    step_keys: (N,) keys of the epoch; step s of model i draws from `fold_in(step_keys[i], s)`.
    settings: per-model settings.
    start: index of the first step, a scalar.
    num_steps: steps to run (static).
    chunk_batches: whether `batches` holds this chunk's batches only (static).

  Returns:
    The new state and the steps' metrics, each (N, num_steps).
  """
  def one_model(state, batches, step_key, settings):
    def body(state, i):
      step = start + i
      # The key always follows the epoch's step, whichever batches are at hand.
      batch = jax.tree.map(lambda b: jax.lax.dynamic_index_in_dim(
          b, i if chunk_batches else step, keepdims=False), batches)
      return train_step_lib.step_one(model, step_config, state, batch,
                                     jax.random.fold_in(step_key, step), settings)
    after, metrics = jax.lax.scan(body, state, jnp.arange(num_steps))
    return train_step_lib.freeze_diverged(state, after, metrics), metrics

  # The whole scan is mapped over the models (not each step), so one model runs
  # exactly the single-model loop.
  batch_axis = None if jax.tree.leaves(batches)[0].ndim == 5 else 0
  return stacked.over_models(one_model, state.num_models, (0, batch_axis, 0, 0),
                             sequential=step_config.sequential_models)(
                                 state, batches, step_keys, settings)


class Runner:
  """The compiled pieces of an epoch for one model shape, data set and batch size.

  Attributes:
    steps_per_epoch: full batches per epoch.
    chunk: steps per `run_chunk` call; divides `steps_per_epoch`.
    compile_seconds: time `compile` took (None before).
  """

  def __init__(self, model, step_config, train_images: jax.Array, num_examples: int, *,
               batch_size: int, chunks_per_epoch: int, mesh, independent_orders: bool = False):
    """
    Args:
      model, step_config: see `train_step.train_step`.
      train_images: uint8 (N_padded, H, W, C) on the devices (`place_training_set`).
      num_examples: the real examples among them.
      batch_size: the global batch.
      chunks_per_epoch: about this many `run_chunk` calls per epoch.
      mesh: the device mesh.
      independent_orders: shuffle each model's data in its own order.
    """
    self.model, self.step_config = model, step_config
    self.train_images, self.num_examples = train_images, num_examples
    self.batch_size = batch_size
    self.steps_per_epoch = num_examples // batch_size
    self.chunk = chunk_size(self.steps_per_epoch, chunks_per_epoch)
    self.independent_orders = independent_orders
    batch_axis = 2 if independent_orders else 1
    self._sharding = jax.tree.map(  # The batch axis of the images (and labels) sharded.
        lambda a: parallel.sharded(mesh, batch_axis, batch_axis + a.ndim), train_images)
    self._shuffle = functools.partial(
        shuffle_batches, num_examples=num_examples, batch_size=batch_size,
        sharding=self._sharding)
    self._chunk = functools.partial(train_chunk, model, step_config, num_steps=self.chunk)
    self.compile_seconds = None

  def compile(self, state, shuffle_keys, step_keys, settings) -> float:
    """Compiles the shuffle and the chunk ahead of time; returns the seconds it took."""
    start = time.perf_counter()
    shuffle = self._shuffle.func.lower(
        self.train_images, shuffle_keys, **self._shuffle.keywords).compile()
    batches = jax.tree.map(lambda info, sharding: jax.ShapeDtypeStruct(
        info.shape, info.dtype, sharding=sharding), shuffle.out_info, self._sharding)
    chunk = train_chunk.lower(self.model, self.step_config, state, batches, step_keys, settings,
                              jnp.int32(0), num_steps=self.chunk).compile()
    self._shuffle, self._chunk = shuffle, chunk
    self.compile_seconds = time.perf_counter() - start
    return self.compile_seconds

  def batches(self, shuffle_keys: jax.Array) -> jax.Array:
    """The epoch's batches: (S, B, H, W, C), or (N, S, B, H, W, C) with independent orders."""
    return self._shuffle(self.train_images, shuffle_keys)

  def run_chunk(self, state, batches, step_keys, settings, start: int):
    """Runs steps `start .. start + chunk - 1`; returns (state, metrics of shape (N, chunk))."""
    return self._chunk(state, batches, step_keys, settings, jnp.int32(start))

  @property
  def examples_per_epoch(self) -> int:
    return self.steps_per_epoch * self.batch_size


def run_epoch(runner, state, shuffle_keys, step_keys, settings):
  """One whole epoch through `runner` (an `epoch.Runner` or `streaming.StreamedRunner`),
  chunk by chunk with one sync per chunk as the trainer runs it, without its stops
  and reports: what the benchmarks time. Returns the state after the epoch."""
  batches = runner.batches(shuffle_keys)
  for start in range(0, runner.steps_per_epoch, runner.chunk):
    state, metrics = runner.run_chunk(state, batches, step_keys, settings, start)
    jax.block_until_ready(metrics)
  return state


def place_training_set(images, mesh):
  """uint8 (N, H, W, C) (or a tuple with labels, `data.examples`) -> the devices, examples
  sharded, zero-padded to divide over them."""
  def place(array):
    padded = parallel.pad_to_multiple(array, mesh.size)
    return parallel.put(padded, parallel.sharded(mesh, 0, padded.ndim))
  return jax.tree.map(place, images)
