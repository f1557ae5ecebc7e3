"""The IDX format of MNIST (http://yann.lecun.com/exdb/mnist/), read with numpy alone.

A folder holds four files, gzipped or not:
`train-images-idx3-ubyte`, `train-labels-idx1-ubyte`, `t10k-images-idx3-ubyte`,
`t10k-labels-idx1-ubyte`. Images may be of rank 3 `(N, H, W)` (a channel axis
is added) or 4 `(N, H, W, C)`, of any IDX number type: integers must lie in
[0, 255], floats (type 0x0D or 0x0E) in [0, 1], scaled to 8 bits as
round(x * 255); anything else is refused.
"""
import gzip
import pathlib
import struct
import zlib

import numpy as np

from vae_jax.errors import UsageError
from vae_jax.sources import pixels

FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
# IDX type codes, all big-endian.
_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def holds_idx(folder: pathlib.Path) -> bool:
  """Whether `folder` holds any of the four IDX files (so it is meant as an IDX folder)."""
  stems = [stem for pair in FILES.values() for stem in pair]
  return any((folder / s).is_file() or (folder / f"{s}.gz").is_file() for s in stems)


def read_split(folder, split: str) -> tuple[np.ndarray, np.ndarray]:
  """Reads one split ("train" or "test") of an IDX folder.

  Returns:
    images `(N, H, W, C)` uint8 and labels `(N,)` int32.

  Raises:
    UsageError: a missing, unreadable or malformed file, pixels out of range,
      or image and label counts that differ.
  """
  folder = pathlib.Path(folder)
  images_name, labels_name = FILES[split]
  images_path = find(folder, images_name)
  images = read_idx(images_path, ndim=(3, 4))
  labels = read_idx(find(folder, labels_name), ndim=1)
  if len(images) != len(labels):
    raise UsageError(f"{folder}: {images_name} has {len(images)} images but "
                     f"{labels_name} has {len(labels)} labels")
  if not np.issubdtype(labels.dtype, np.integer):
    raise UsageError(f"{folder}: {labels_name} holds {labels.dtype} values; labels must be "
                     "integers")
  images = pixels.to_uint8(images, str(images_path))
  return (images if images.ndim == 4 else images[..., None]), labels.astype(np.int32)


def find(folder: pathlib.Path, stem: str) -> pathlib.Path:
  """The path of `stem.gz` or `stem` in `folder`."""
  for path in (folder / f"{stem}.gz", folder / stem):
    if path.is_file():
      return path
  wanted = ", ".join(f"{a}.gz, {b}.gz" for a, b in FILES.values())
  raise UsageError(f"data_dir {str(folder)!r} lacks {stem}.gz (it needs {wanted})")


def read_idx(path, ndim: int | tuple[int, ...] | None = None) -> np.ndarray:
  """Parses one IDX file (gzipped if its name ends in .gz) into a numpy array.

  Args:
    path: the file.
    ndim: the rank (or ranks) accepted; None accepts any.

  Returns:
    The array, of the file's shape and (native-endian) number type.

  Raises:
    UsageError: not gzip or not IDX (bad magic), truncated, or of the wrong rank.
  """
  path = pathlib.Path(path)
  try:
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
  except (OSError, EOFError, zlib.error) as e:
    raise UsageError(f"{path}: cannot read ({e})") from None
  if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] not in _DTYPES:
    raise UsageError(f"{path}: not an IDX file (bad magic number {raw[:4].hex() or 'empty'})")
  rank = raw[3]
  ranks = (ndim,) if isinstance(ndim, int) else ndim
  if ranks is not None and rank not in ranks:
    raise UsageError(f"{path}: IDX file of rank {rank}, expected rank "
                     f"{' or '.join(map(str, ranks))}")
  if len(raw) < 4 + 4 * rank:
    raise UsageError(f"{path}: truncated IDX header")
  shape = struct.unpack(f">{rank}I", raw[4:4 + 4 * rank])
  dtype = np.dtype(_DTYPES[raw[2]])
  body = raw[4 + 4 * rank:]
  expected = int(np.prod(shape)) * dtype.itemsize
  if len(body) != expected:
    raise UsageError(f"{path}: truncated or padded IDX data ({len(body)} bytes for shape "
                     f"{shape}, expected {expected})")
  return np.frombuffer(body, dtype).reshape(shape).astype(dtype.newbyteorder("="))
