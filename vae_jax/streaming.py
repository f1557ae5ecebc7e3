"""Reading images from the host for data larger than device memory: training and evaluation.

Training images stay on the host (a memmap) and go to the devices a chunk of
batches at a time (`vae_jax.epoch.StreamedRunner`, which reads them here);
evaluation reads the test set a chunk at a time (`StreamedChunks`).
`choose_placement` decides between that and device-resident data.

Same results as resident data, bit for bit on one machine: the order is
`jax.random.permutation(key, num_examples)` from the same key (computed on the
host's CPU device, `permutations`; integer arithmetic, the same on every
backend), cut into the same batches.

Reading. While a chunk trains or is evaluated, a background thread reads the
next chunk's images (`Reader`: one `pread` per image, in index order, on a few
threads) and puts them on the devices, so reading overlaps the work (double
buffering: at most one chunk waits). Reading with `pread` instead of indexing
the memmap turns a file truncated under a running reader into a short read,
raised as a one-line `UsageError`, where the memmap would kill the process
with SIGBUS; a file removed meanwhile is still read (the open descriptor
keeps its data) and training goes on.

Several processes. Each process reads only the rows its own devices hold
(`jax.sharding.Sharding.addressable_devices_indices_map` of the global
chunk, `put_rows`) and assembles the global array from its pieces
(`jax.make_array_from_single_device_arrays`). Every process computes the
same permutation from the same key, so none needs another's data; each needs
the training files at the same path (a shared or copied folder).
"""
import concurrent.futures
import functools
import os

import jax
import numpy as np

from vae_jax import data
from vae_jax import parallel
from vae_jax import fields
from vae_jax.errors import UsageError

PLACEMENTS = fields.choices("data_placement")  # auto | device | stream
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
