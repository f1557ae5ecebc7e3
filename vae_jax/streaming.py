"""The streamed epoch: training images stay on the host (a memmap) and go to the devices a
chunk of batches at a time, for training sets larger than device memory.

`StreamedRunner` has the interface of `epoch.Runner`, so the driver can use
either:

    runner = streaming.StreamedRunner(model, step_config, dataset.train.images,
                                      len(dataset.train.images), batch_size=128,
                                      chunks_per_epoch=10, mesh=mesh)
    runner.compile(state, shuffle_keys, step_keys, settings)   # optional
    batches = runner.batches(shuffle_keys)                     # an EpochStream
    for start in range(0, runner.steps_per_epoch, runner.chunk):
      state, metrics = runner.run_chunk(state, batches, step_keys, settings, start)
    runner.close()

Same results as the resident epoch, bit for bit on one machine: the order is
`jax.random.permutation(key, num_examples)` from the same key (computed on the
host's CPU device; integer arithmetic, the same on every backend), cut into
the same batches, and each chunk runs `epoch.train_chunk` (with
`chunk_batches=True`: batch i of the chunk is step `start + i`, whose key
stays `fold_in(step key, start + i)`).

Reading. While a chunk trains, a background thread reads the next chunk's
images (`Reader`: one `pread` per image, in index order, on a few threads)
and puts them on the devices, so reading overlaps training (double
buffering: at most one chunk waits). Reading with `pread` instead of indexing
the memmap turns a file truncated under a running reader into a short read,
raised as a one-line `UsageError`, where the memmap would kill the process
with SIGBUS; a file removed meanwhile is still read (the open descriptor
keeps its data) and training goes on.

Several processes. Each process reads only the rows its own devices hold
(`jax.sharding.Sharding.addressable_devices_indices_map` of the global
chunk) and assembles the global array from its pieces
(`jax.make_array_from_single_device_arrays`). Every process computes the
same permutation from the same key, so none needs another's data; each needs
the training files at the same path (a shared or copied folder).
"""
import concurrent.futures
import functools
import math
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from vae_jax import data
from vae_jax import epoch
from vae_jax import parallel
from vae_jax import schema
from vae_jax.errors import UsageError

PLACEMENTS = schema.choices("data_placement")  # auto | device | stream
# The bytes of one chunk of the global batches, at most (the chunk is shortened until
# it fits; each process holds its share): two of them exist at once (one training,
# one prefetched), plus, on a CPU device, the host buffer each was read into.
MAX_CHUNK_BYTES = 128 * 2**20
# Reading threads: pread releases the GIL, the per-image Python work holds it, so a
# few threads suffice.
READ_THREADS = 4


def choose_placement(requested: str, dataset: data.Dataset, budget_gib: float = 0.0,
                     devices=None) -> tuple[str, str]:
  """("device" or "stream", why) for `data_placement` = auto | device | stream.

  "auto" keeps the training set on the devices when it fits twice over (the
  images and one shuffled copy per epoch, see `data.check_fits`) next to the
  test set, within `budget_gib` GiB when that is > 0, else within the devices'
  free memory; it streams it otherwise.

  Raises:
    UsageError: an unknown placement.
  """
  if requested not in PLACEMENTS:
    raise UsageError(f"data_placement must be one of {', '.join(PLACEMENTS)}, got {requested!r}")
  if requested != "auto":
    return requested, f"data_placement={requested}"
  size = 2 * dataset.train.images.nbytes + dataset.test.images.nbytes
  what = f"the training set twice and the test set, {size / 2**30:.2f} GiB"
  if budget_gib:
    if size <= budget_gib * 2**30:
      return "device", f"{what}, fit device_data_budget={budget_gib:g} GiB"
    return "stream", f"{what}, exceed device_data_budget={budget_gib:g} GiB"
  try:
    data.check_fits(dataset, devices, train_copies=2)
  except UsageError:
    return "stream", f"{what}, do not fit the devices' free memory"
  return "device", f"{what}, fit the devices' free memory"


def permutations(keys: jax.Array, num_examples: int) -> np.ndarray:
  """`jax.random.permutation(key, num_examples)` for each key, computed on the host's CPU.

  Args:
    keys: (K,) keys, anywhere (a replicated global array too).

  Returns:
    int32 (K, num_examples): the orders `epoch.shuffle_batches` draws.
  """
  raw = parallel.to_host(jax.random.key_data(keys))
  cpu = jax.local_devices(backend="cpu")[0]  # jax.devices() lists other processes' too.
  on_cpu = jax.device_put(jax.random.wrap_key_data(raw, impl=jax.random.key_impl(keys)), cpu)
  # One key at a time, as shuffle_batches does for K = 1 (no vmap).
  return np.stack([np.asarray(_permutation(key, num_examples)) for key in on_cpu])


@functools.partial(jax.jit, static_argnames=("num_examples",))
def _permutation(key, num_examples: int):
  return jax.random.permutation(key, num_examples)


class Reader:
  """Reads images `(H, W, C)` uint8 by index from an `.npy` memmap, a lazy array of
  records, or an in-memory array.

  A memmap covering its whole file is read with `os.preadv` into a fresh
  buffer (see the module docstring); a lazy array (one with `read(rows)`, as
  `vae_jax.sources.tfds_records.RecordImages`) by its `read`, the rows split
  over the threads; any other array by numpy indexing.
  """

  def __init__(self, images: np.ndarray, threads: int = READ_THREADS):
    """
    Args:
      images: uint8 (N, H, W, C): a memmap from `np.load(mmap_mode="r")`, or in RAM.
      threads: reading threads.
    """
    self.shape = images.shape
    self.row_bytes = int(np.prod(images.shape[1:]))
    self._images, self._fd, self.path = images, None, None
    if _whole_file(images):
      self.path = images.filename
      self._offset = images.offset
      self._expected = images.offset + images.nbytes
      self._fd = os.open(self.path, os.O_RDONLY)
    self._pool = concurrent.futures.ThreadPoolExecutor(threads) if threads > 1 else None
    self._threads = threads

  def read(self, rows: np.ndarray) -> np.ndarray:
    """Images `rows` (any shape of indices) -> uint8 `rows.shape + (H, W, C)`, in that order.

    Raises:
      UsageError: the file was truncated (one line).
    """
    flat = np.asarray(rows, np.int64).reshape(-1)
    if self._fd is None and not hasattr(self._images, "read"):
      return np.take(self._images, flat, axis=0).reshape(*np.shape(rows), *self.shape[1:])
    if self._fd is not None:
      self._check_size()
    read_part = self._read_part if self._fd is not None else self._read_records
    out = np.empty((len(flat), self.row_bytes), np.uint8)
    parts = np.array_split(np.arange(len(flat)), max(1, min(self._threads, len(flat) // 64)))
    work = [(flat[p], out[p[0]:p[-1] + 1]) for p in parts if len(p)]
    list((self._pool.map if self._pool else map)(read_part, *zip(*work)))
    return out.reshape(*np.shape(rows), *self.shape[1:])

  def _read_records(self, rows: np.ndarray, out: np.ndarray) -> None:
    """Reads `rows` of a lazy array into the consecutive rows of `out`, in file order."""
    order = np.argsort(rows, kind="stable")
    out[order] = self._images.read(rows[order]).reshape(len(rows), -1)

  def _read_part(self, rows: np.ndarray, out: np.ndarray) -> None:
    """Reads `rows` into the consecutive rows of `out`, in file order (for read-ahead)."""
    view, size, fd, offset = memoryview(out.reshape(-1)), self.row_bytes, self._fd, self._offset
    order = np.argsort(rows, kind="stable")
    for k, row in zip(order.tolist(), rows[order].tolist()):
      if os.preadv(fd, [view[k * size:(k + 1) * size]], offset + row * size) != size:
        self._check_size()
        raise UsageError(f"{self.path}: short read at image {row} while training read it; "
                         "was it overwritten? Start the run again")

  def _check_size(self) -> None:
    size = os.fstat(self._fd).st_size
    if size < self._expected:
      raise UsageError(f"{self.path}: was truncated while training read it ({size:,} bytes, "
                       f"expected {self._expected:,}); restore the file and rerun the same "
                       "command to resume")

  def close(self) -> None:
    if self._pool:
      self._pool.shutdown()
    if self._fd is not None:
      os.close(self._fd)
      self._fd = None


def _whole_file(images: np.ndarray) -> bool:
  """Whether `images` is a C-contiguous memmap of all its file's data (offset known)."""
  if not isinstance(images, np.memmap) or not images.flags.c_contiguous:
    return False
  try:
    return images.offset + images.nbytes == os.path.getsize(images.filename)
  except (OSError, TypeError):
    return False


def put_rows(reader: Reader, indices: np.ndarray, sharding) -> jax.Array:
  """Images `indices` as one global array, each process reading only its devices' rows.

  Args:
    reader: reads the images (H, W, C).
    indices: int (..., B) image indices, the same on every process; -1 gives a
      zero image (padding).
    sharding: of the result, `indices.shape + (H, W, C)`.

  Returns:
    uint8 `indices.shape + (H, W, C)`, laid out by `sharding`.

  Raises:
    UsageError: the images cannot be read (one line).
  """
  shape = (*indices.shape, *reader.shape[1:])
  pieces = sharding.addressable_devices_indices_map(shape)
  rows = [indices[index[:indices.ndim]] for index in pieces.values()]
  flat = np.concatenate([r.reshape(-1) for r in rows])
  images = reader.read(np.maximum(flat, 0))
  images[flat < 0] = 0
  arrays, at = [], 0
  for device, r in zip(pieces, rows):
    piece = images[at:at + r.size].reshape(*r.shape, *reader.shape[1:])
    arrays.append(jax.device_put(piece, device))
    at += r.size
  return jax.make_array_from_single_device_arrays(shape, sharding, arrays)


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
    return put_rows(runner.reader, self._indices[..., start:start + runner.chunk, :],
                    runner.sharding)

  def close(self) -> None:
    """Waits for a prefetch in flight and drops it (its errors too: that chunk is not used)."""
    pending, self._pending = self._pending, None
    if pending:
      concurrent.futures.wait([pending[1]])


class StreamedRunner:
  """`epoch.Runner` for a training set on the host: the same attributes and calls.

  Attributes:
    steps_per_epoch: full batches per epoch.
    chunk: steps per `run_chunk` call; divides `steps_per_epoch`. That of
      `epoch.Runner`, or a divisor of it where a chunk's global batches would
      exceed `max_chunk_bytes`.
    compile_seconds: time `compile` took (None before).
  """

  def __init__(self, model, step_config, train_images: np.ndarray, num_examples: int, *,
               batch_size: int, chunks_per_epoch: int, mesh, independent_orders: bool = False,
               max_chunk_bytes: int = MAX_CHUNK_BYTES, read_threads: int = READ_THREADS):
    """
    Args:
      model, step_config: see `train_step.train_step`.
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
    self.model, self.step_config = model, step_config
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
    self.reader = Reader(train_images, read_threads)
    self.prefetcher = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="prefetch")
    self._train = functools.partial(epoch.train_chunk, model, step_config, num_steps=self.chunk,
                                    chunk_batches=True)
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
    chunk = epoch.chunk_size(self.steps_per_epoch, self._chunks_per_epoch)
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
    self._train = functools.partial(epoch.train_chunk, self.model, self.step_config,
                                    num_steps=self.chunk, chunk_batches=True)

  def _chunk_shape(self) -> tuple[int, ...]:
    lead = (self.num_orders,) if self.independent_orders else ()
    return (*lead, self.chunk, self.batch_size, *self.image_shape)

  def compile(self, state, shuffle_keys, step_keys, settings) -> float:
    """Compiles the chunk ahead of time; returns the seconds it took."""
    begin = time.perf_counter()
    self._set_orders(shuffle_keys)
    batches = jax.ShapeDtypeStruct(self._chunk_shape(), jnp.uint8, sharding=self.sharding)
    self._train = epoch.train_chunk.lower(
        self.model, self.step_config, state, batches, step_keys, settings, jnp.int32(0),
        num_steps=self.chunk, chunk_batches=True).compile()
    self.compile_seconds = time.perf_counter() - begin
    return self.compile_seconds

  def batches(self, shuffle_keys: jax.Array) -> EpochStream:
    """The epoch's batches, to be read as `run_chunk` asks for them.

    Args:
      shuffle_keys: (1,) one order for every model, or (N,) with independent orders.
    """
    self._set_orders(shuffle_keys)
    return EpochStream(self, permutations(shuffle_keys, self.num_examples))

  def run_chunk(self, state, batches: EpochStream, step_keys, settings, start: int):
    """Runs steps `start .. start + chunk - 1`; returns (state, metrics of shape (N, chunk)).

    Raises:
      UsageError: the training images cannot be read (one line).
    """
    return self._train(state, batches.take(start), step_keys, settings, jnp.int32(start))

  @property
  def examples_per_epoch(self) -> int:
    return self.steps_per_epoch * self.batch_size

  def close(self) -> None:
    """Stops the prefetching thread and closes the file."""
    self.prefetcher.shutdown()
    self.reader.close()


class StreamedChunks:
  """`evaluation.Chunks` kept on the host: chunk c goes to the devices when evaluated.

  The chunks of `evaluation.Chunks.place(images, size, mesh)`, the same
  zero padding and the same sharding along E, so every statistic gives the
  same numbers; only one chunk, and the next one read in the background,
  is on the devices at a time.
  """

  def __init__(self, images: np.ndarray, size: int, mesh, read_threads: int = READ_THREADS):
    """
    Args:
      images: uint8 (N, H, W, C) on the host, best a memmap; the same on every process.
      size: examples per chunk, a multiple of the device count.
      mesh: the device mesh.
      read_threads: threads reading images.
    """
    if len(images) == 0:
      raise UsageError("no examples to evaluate: the split has no images")
    self.num_examples, self.size = len(images), size
    self.reader = Reader(images, read_threads)
    self.sharding = parallel.sharded(mesh, 0, 4)
    self._prefetcher = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="eval-read")
    self._pending = None  # (chunk, future of its device array)

  def __len__(self) -> int:
    return -(-self.num_examples // self.size)

  def chunk_input(self, c: int) -> jax.Array:
    """Chunk c, uint8 (E, H, W, C) on the devices; reads chunk c + 1 meanwhile.

    Raises:
      UsageError: the images cannot be read (one line).
    """
    pending, self._pending = self._pending, None
    images = pending[1].result() if pending and pending[0] == c else self._load(c)
    if c + 1 < len(self):
      self._pending = (c + 1, self._prefetcher.submit(self._load, c + 1))
    return images

  def _load(self, c: int) -> jax.Array:
    rows = np.arange(c * self.size, (c + 1) * self.size)
    return put_rows(self.reader, np.where(rows < self.num_examples, rows, -1), self.sharding)

  def close(self) -> None:
    """Stops the reading thread and closes the file."""
    self._prefetcher.shutdown()
    self._pending = None
    self.reader.close()
