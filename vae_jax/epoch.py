"""The device-resident epoch: what the trainer and the benchmarks run.

The training set lives in device memory as uint8 (examples sharded over the
devices). Each epoch it is shuffled there from a key and cut into batches,
which `lax.scan` steps through in chunks of equal length (one compiled
program), so that between chunks the host can show progress, check for
non-finite losses and honour Ctrl-C. Step `s` of an epoch draws from
`fold_in(epoch key, s)`: chunking never changes the result.

    runner = epoch.Runner(step, train_images, num_examples, batch_size=128,
                          chunks_per_epoch=10, mesh=mesh)
    runner.compile(state, shuffle_keys, step_keys, hyper)  # optional: apart from timing
    batches = runner.batches(shuffle_keys)
    for start in range(0, runner.steps_per_epoch, runner.chunk):
      state, metrics = runner.run_chunk(state, batches, step_keys, hyper, start)

`StreamedRunner` runs the same epoch for a training set kept on the host (a
memmap), read a chunk of batches at a time (`vae_jax.streaming` reads them).
"""
import concurrent.futures
import functools
import math
import time

import jax
import jax.numpy as jnp
import numpy as np

from vae_jax import parallel
from vae_jax import stacked
from vae_jax import streaming
from vae_jax import train_state

# The bytes of one chunk of the global batches of a streamed epoch, at most (the chunk
# is shortened until it fits; each process holds its share): two of them exist at once
# (one training, one prefetched), plus, on a CPU device, the host buffer each was read into.
MAX_CHUNK_BYTES = 128 * 2**20


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


@functools.partial(jax.jit, static_argnames=("step", "num_steps", "chunk_batches"),
                   donate_argnames=("state",))
def train_chunk(step, state, batches, step_keys, hyper, start, *,
                num_steps: int, chunk_batches: bool = False):
  """Steps `start .. start + num_steps - 1` of an epoch with `lax.scan`, for every model.

  Args:
    step: static; see `train_state.Step`.
    state: the stacked train state; its buffers are donated.
    batches: the epoch's batches from `shuffle_batches`; with `chunk_batches`
      only this chunk's, batch i for step `start + i` (`vae_jax.streaming`).
    step_keys: (N,) keys of the epoch; step s of model i draws from `fold_in(step_keys[i], s)`.
    hyper: per-model settings, (N,) arrays by name.
    start: index of the first step, a scalar.
    num_steps: steps to run (static).
    chunk_batches: whether `batches` holds this chunk's batches only (static).

  Returns:
    The new state and the steps' metrics, each (N, num_steps).
  """
  def one_model(state, batches, step_key, hyper):
    def body(state, i):
      position = start + i
      # The key always follows the epoch's step, whichever batches are at hand.
      batch = jax.tree.map(lambda b: jax.lax.dynamic_index_in_dim(
          b, i if chunk_batches else position, keepdims=False), batches)
      return train_state.step_one(step, state, batch, jax.random.fold_in(step_key, position),
                                  hyper)
    after, metrics = jax.lax.scan(body, state, jnp.arange(num_steps))
    return train_state.freeze_diverged(state, after, metrics), metrics

  # The whole scan is mapped over the models (not each step), so one model runs
  # exactly the single-model loop.
  batch_axis = None if jax.tree.leaves(batches)[0].ndim == 5 else 0
  return stacked.over_models(one_model, state.num_models, (0, batch_axis, 0, 0),
                             sequential=step.sequential_models)(
                                 state, batches, step_keys, hyper)


class Runner:
  """The compiled pieces of an epoch for one model shape, data set and batch size.

  Attributes:
    steps_per_epoch: full batches per epoch.
    chunk: steps per `run_chunk` call; divides `steps_per_epoch`.
    compile_seconds: time `compile` took (None before).
  """

  def __init__(self, step, train_images: jax.Array, num_examples: int, *,
               batch_size: int, chunks_per_epoch: int, mesh, independent_orders: bool = False):
    """
    Args:
      step: see `train_state.Step`.
      train_images: uint8 (N_padded, H, W, C) on the devices (`place_training_set`).
      num_examples: the real examples among them.
      batch_size: the global batch.
      chunks_per_epoch: about this many `run_chunk` calls per epoch.
      mesh: the device mesh.
      independent_orders: shuffle each model's data in its own order.
    """
    self.step = step
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
    self._chunk = functools.partial(train_chunk, step, num_steps=self.chunk)
    self.compile_seconds = None

  def compile(self, state, shuffle_keys, step_keys, hyper) -> float:
    """Compiles the shuffle and the chunk ahead of time; returns the seconds it took."""
    start = time.perf_counter()
    shuffle = self._shuffle.func.lower(
        self.train_images, shuffle_keys, **self._shuffle.keywords).compile()
    batches = jax.tree.map(lambda info, sharding: jax.ShapeDtypeStruct(
        info.shape, info.dtype, sharding=sharding), shuffle.out_info, self._sharding)
    chunk = train_chunk.lower(self.step, state, batches, step_keys, hyper, jnp.int32(0),
                              num_steps=self.chunk).compile()
    self._shuffle, self._chunk = shuffle, chunk
    self.compile_seconds = time.perf_counter() - start
    return self.compile_seconds

  def batches(self, shuffle_keys: jax.Array) -> jax.Array:
    """The epoch's batches: (S, B, H, W, C), or (N, S, B, H, W, C) with independent orders."""
    return self._shuffle(self.train_images, shuffle_keys)

  def run_chunk(self, state, batches, step_keys, hyper, start: int):
    """Runs steps `start .. start + chunk - 1`; returns (state, metrics of shape (N, chunk))."""
    return self._chunk(state, batches, step_keys, hyper, jnp.int32(start))

  @property
  def examples_per_epoch(self) -> int:
    return self.steps_per_epoch * self.batch_size


def run_epoch(runner, state, shuffle_keys, step_keys, hyper):
  """One whole epoch through `runner` (a `Runner` or a `StreamedRunner`),
  chunk by chunk with one sync per chunk as the trainer runs it, without its stops
  and reports: what the benchmarks time. Returns the state after the epoch."""
  batches = runner.batches(shuffle_keys)
  for start in range(0, runner.steps_per_epoch, runner.chunk):
    state, metrics = runner.run_chunk(state, batches, step_keys, hyper, start)
    jax.block_until_ready(metrics)
  return state


def place_training_set(images, mesh):
  """uint8 (N, H, W, C) (or a tuple with labels, `data.examples`) -> the devices, examples
  sharded, zero-padded to divide over them."""
  def place(array):
    padded = parallel.pad_to_multiple(array, mesh.size)
    return parallel.put(padded, parallel.sharded(mesh, 0, padded.ndim))
  return jax.tree.map(place, images)


# ----------------------------------------------------------------------------
# The streamed epoch: the training set on the host, read a chunk of batches at a time.


class EpochStream:
  """One epoch's batches, read a chunk at a time, the next one in the background.

  What `StreamedRunner.batches` returns and `run_chunk` takes.
  """

  def __init__(self, runner: "StreamedRunner", orders: np.ndarray):
    """
    Args:
      runner: whose reader, sharding and chunk to use.
      orders: int (K, num_examples) permutations; K = 1: one order for all models.
    """
    self._runner = runner
    steps, batch = runner.steps_per_epoch, runner.batch_size
    used = orders[:, :steps * batch].reshape(len(orders), steps, batch)
    self._indices = used[0] if not runner.independent_orders else used  # ([K,] S, B)
    self._pending = None  # (start, future of its device array)

  def take(self, start: int) -> jax.Array:
    """The batches of steps `start .. start + chunk - 1` on the devices; prefetches the next.

    Returns:
      uint8 (chunk, B, H, W, C), or (N, chunk, B, H, W, C) with independent orders,
      the batch axis sharded over the devices.

    Raises:
      UsageError: the images cannot be read (one line).
    """
    pending, self._pending = self._pending, None
    batches = (pending[1].result() if pending and pending[0] == start else self._load(start))
    following = start + self._runner.chunk
    if following < self._runner.steps_per_epoch:
      self._pending = (following, self._runner.prefetcher.submit(self._load, following))
    return batches

  def _load(self, start: int) -> jax.Array:
    runner = self._runner
    return streaming.put_rows(runner.reader, self._indices[..., start:start + runner.chunk, :],
                    runner.sharding)

  def close(self) -> None:
    """Waits for a prefetch in flight and drops it (its errors too: that chunk is not used)."""
    pending, self._pending = self._pending, None
    if pending:
      concurrent.futures.wait([pending[1]])


class StreamedRunner:
  """`Runner` for a training set on the host: the same attributes and calls.

  Attributes:
    steps_per_epoch: full batches per epoch.
    chunk: steps per `run_chunk` call; divides `steps_per_epoch`. That of
      `epoch.Runner`, or a divisor of it where a chunk's global batches would
      exceed `max_chunk_bytes`.
    compile_seconds: time `compile` took (None before).
  """

  def __init__(self, step, train_images: np.ndarray, num_examples: int, *,
               batch_size: int, chunks_per_epoch: int, mesh, independent_orders: bool = False,
               max_chunk_bytes: int = MAX_CHUNK_BYTES,
               read_threads: int = streaming.READ_THREADS):
    """
    Args:
      step: see `train_state.Step`.
      train_images: uint8 (N, H, W, C) on the host, best a memmap (`vae_jax.sources.npy`);
        the same on every process.
      num_examples: N.
      batch_size: the global batch.
      chunks_per_epoch: at least this many `run_chunk` calls per epoch.
      mesh: the device mesh.
      independent_orders: shuffle each model's data in its own order.
      max_chunk_bytes: the most bytes of one chunk's global batches.
      read_threads: threads reading images.
    """
    self.step = step
    self.num_examples, self.batch_size = num_examples, batch_size
    self.image_shape = tuple(train_images.shape[1:])
    self.steps_per_epoch = num_examples // batch_size
    self.independent_orders = independent_orders
    self.num_orders = None  # Known from the keys: 1, or N with independent orders.
    self._chunks_per_epoch, self._max_chunk_bytes = chunks_per_epoch, max_chunk_bytes
    self.mesh = mesh
    batch_axis = 2 if independent_orders else 1
    self.sharding = parallel.sharded(mesh, batch_axis, batch_axis + 4)
    self.chunk = self._chunk_length(1)
    self.reader = streaming.Reader(train_images, read_threads)
    self.prefetcher = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="prefetch")
    self._train = functools.partial(train_chunk, step, num_steps=self.chunk, chunk_batches=True)
    self.compile_seconds = None

  def _chunk_length(self, num_orders: int) -> int:
    """Steps per chunk: the resident runner's, unless its batches exceed max_chunk_bytes;
    then its longest divisor that fits (one step at least).

    A divisor, so that every chunk boundary of the resident runner is one of this
    runner's: a run stopped at a boundary resumes with either. Counted over the
    global batch, not this process's share, so that the chunk depends on the config
    and the data alone, not on the machines a resume runs on.
    """
    step_bytes = self.batch_size * math.prod(self.image_shape) * num_orders
    chunk = chunk_size(self.steps_per_epoch, self._chunks_per_epoch)
    fitting = [d for d in range(1, chunk + 1)
               if chunk % d == 0 and d * step_bytes <= self._max_chunk_bytes]
    return max(fitting, default=1)

  def _set_orders(self, shuffle_keys: jax.Array) -> None:
    """Fixes the chunk for the number of orders (independent orders multiply the bytes)."""
    num_orders = len(shuffle_keys)
    if num_orders == self.num_orders:
      return
    if self.num_orders is not None:
      raise ValueError(f"shuffle keys for {num_orders} orders, the runner has {self.num_orders}")
    self.num_orders, self.chunk = num_orders, self._chunk_length(num_orders)
    self._train = functools.partial(train_chunk, self.step, num_steps=self.chunk,
                                    chunk_batches=True)

  def _chunk_shape(self) -> tuple[int, ...]:
    lead = (self.num_orders,) if self.independent_orders else ()
    return (*lead, self.chunk, self.batch_size, *self.image_shape)

  def compile(self, state, shuffle_keys, step_keys, hyper) -> float:
    """Compiles the chunk ahead of time; returns the seconds it took."""
    begin = time.perf_counter()
    self._set_orders(shuffle_keys)
    batches = jax.ShapeDtypeStruct(self._chunk_shape(), jnp.uint8, sharding=self.sharding)
    self._train = train_chunk.lower(self.step, state, batches, step_keys, hyper, jnp.int32(0),
                                    num_steps=self.chunk, chunk_batches=True).compile()
    self.compile_seconds = time.perf_counter() - begin
    return self.compile_seconds

  def batches(self, shuffle_keys: jax.Array) -> EpochStream:
    """The epoch's batches, to be read as `run_chunk` asks for them.

    Args:
      shuffle_keys: (1,) one order for every model, or (N,) with independent orders.
    """
    self._set_orders(shuffle_keys)
    return EpochStream(self, streaming.permutations(shuffle_keys, self.num_examples))

  def run_chunk(self, state, batches: EpochStream, step_keys, hyper, start: int):
    """Runs steps `start .. start + chunk - 1`; returns (state, metrics of shape (N, chunk)).

    Raises:
      UsageError: the training images cannot be read (one line).
    """
    return self._train(state, batches.take(start), step_keys, hyper, jnp.int32(start))

  @property
  def examples_per_epoch(self) -> int:
    return self.steps_per_epoch * self.batch_size

  def close(self) -> None:
    """Stops the prefetching thread and closes the file."""
    self.prefetcher.shutdown()
    self.reader.close()
