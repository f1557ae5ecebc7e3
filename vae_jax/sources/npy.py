"""A folder of `.npy` files, opened as memory maps: images read by index, never all at once.

    DIR/train.npy          uint8 (N, H, W, C) or (N, H, W)
    DIR/test.npy           uint8 (M, H, W, C) or (M, H, W)
    DIR/train_labels.npy   optional, integers (N,)
    DIR/test_labels.npy    optional, integers (M,)
    DIR/class_names.json   optional, a JSON list of label names

The images are `np.memmap`s (`np.load(mmap_mode="r")`): opening costs no RAM
and the pages are read from disk (or the page cache) when indexed, which is
what `vae_jax.streaming` does batch by batch. Labels and names are small and
read in full. The image folder cache (`vae_jax.sources.folder_cache`) writes
this layout.
"""
import errno
import io
import json
import os
import pathlib

import numpy as np

from vae_jax.errors import UsageError

SPLITS = ("train", "test")
CLASS_NAMES = "class_names.json"


def holds_npy(folder: pathlib.Path) -> bool:
  """Whether `folder` has this layout (it holds `train.npy`)."""
  return (folder / "train.npy").is_file()


def read(folder: pathlib.Path) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]],
                                        tuple[str, ...] | None]:
  """Opens both splits.

  Returns:
    ({"train": (images, labels), "test": (images, labels)}, class names or
    None): images `(N, H, W, C)` uint8 memmaps, labels `(N,)` int32, -1 where
    the folder has no labels.

  Raises:
    UsageError: a missing `test.npy`, a file that is not a readable `.npy`, is
      truncated, is not uint8 images of rank 3 or 4 in C order, or labels of the
      wrong dtype or count.
  """
  folder = pathlib.Path(folder)
  if not (folder / "test.npy").is_file():
    raise UsageError(f"{folder}: holds train.npy but no test.npy; add test.npy (uint8 "
                     "(M, H, W, C)) or use a .npz file, which may omit nothing either")
  splits = {}
  for split in SPLITS:
    images = open_images(folder / f"{split}.npy")
    splits[split] = images, _labels(folder / f"{split}_labels.npy", len(images))
  return splits, _class_names(folder / CLASS_NAMES)


def open_images(path: pathlib.Path) -> np.memmap:
  """One images file as a read-only memmap `(N, H, W, C)` uint8, checked against its size.

  Raises:
    UsageError: unreadable, truncated, or not uint8 images of rank 3 or 4 in C order.
  """
  shape, dtype, fortran, offset = _header(path)
  if dtype != np.uint8 or len(shape) not in (3, 4) or fortran:
    order = ", Fortran order" if fortran else ""
    raise UsageError(f"{path}: holds {dtype} of shape {shape}{order}; expected uint8 images "
                     "(N, H, W) or (N, H, W, C) in C order")
  expected = offset + int(np.prod(shape))
  size = os.path.getsize(path)
  if size < expected:
    raise UsageError(f"{path}: is truncated ({size:,} bytes; its header promises "
                     f"{expected:,}); write it again")
  if not shape[0]:
    return np.zeros((0, *shape[1:], *(() if len(shape) == 4 else (1,))), np.uint8)
  images = np.load(path, mmap_mode="r", allow_pickle=False)
  return images if images.ndim == 4 else images[..., None]


def _header(path: pathlib.Path) -> tuple[tuple[int, ...], np.dtype, bool, int]:
  """(shape, dtype, fortran order, data offset) from the `.npy` header."""
  try:
    with open(path, "rb") as f:
      version = np.lib.format.read_magic(f)
      read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
              else np.lib.format.read_array_header_2_0)
      shape, fortran, dtype = read(f)
      return shape, dtype, fortran, f.tell()
  except (OSError, ValueError, EOFError) as e:
    reason = str(e).splitlines()[0] if str(e) else type(e).__name__
    raise UsageError(f"{path}: cannot read as .npy ({reason})") from None


def _labels(path: pathlib.Path, count: int) -> np.ndarray:
  """The `(count,)` int32 labels in `path`, or -1 for every image when it does not exist."""
  if not path.exists():
    return np.full(count, -1, np.int32)
  try:
    labels = np.load(path, allow_pickle=False)
  except (OSError, ValueError, EOFError) as e:
    reason = str(e).splitlines()[0] if str(e) else type(e).__name__
    raise UsageError(f"{path}: cannot read as .npy ({reason})") from None
  if not np.issubdtype(labels.dtype, np.integer) or labels.shape != (count,):
    raise UsageError(f"{path}: holds {labels.dtype} of shape {labels.shape}; expected integer "
                     f"labels of shape ({count},), one per image")
  return labels.astype(np.int32)


def _class_names(path: pathlib.Path) -> tuple[str, ...] | None:
  if not path.exists():
    return None
  try:
    names = json.loads(path.read_text())
  except (OSError, ValueError) as e:
    raise UsageError(f"{path}: cannot read as JSON ({str(e).splitlines()[0]})") from None
  if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
    raise UsageError(f"{path}: expected a JSON list of class names (strings)")
  return tuple(names)


def write(folder: pathlib.Path, splits: dict[str, tuple[np.ndarray, np.ndarray]],
          class_names: tuple[str, ...] | None = None) -> None:
  """Writes `splits` in this layout with plain writes (not memmaps), each file fsynced.

  Plain writes make a full disk an `OSError` here rather than a SIGBUS later.

  Raises:
    OSError: as the file system reports it (ENOSPC for a full disk).
  """
  folder = pathlib.Path(folder)
  for split, (images, labels) in splits.items():
    _save(folder / f"{split}.npy", images)
    write_labels(folder, split, labels)
  write_class_names(folder, class_names)


def write_labels(folder: pathlib.Path, split: str, labels: np.ndarray) -> None:
  """`split`_labels.npy, unless every label is unknown (-1)."""
  if (np.asarray(labels) >= 0).any():
    _save(pathlib.Path(folder) / f"{split}_labels.npy", np.asarray(labels, np.int32))


def write_class_names(folder: pathlib.Path, class_names: tuple[str, ...] | None) -> None:
  if class_names is not None:
    with open(pathlib.Path(folder) / CLASS_NAMES, "w") as f:
      json.dump(list(class_names), f)
      f.flush()
      os.fsync(f.fileno())


class ImagesFile:
  """An images `.npy` file written row by row with pwrite, preallocated.

  The whole file is allocated up front (`posix_fallocate`), so a full disk shows
  as ENOSPC before any decoding, not as a SIGBUS or a short file later.
  """

  def __init__(self, path: pathlib.Path, count: int, shape: tuple[int, int, int]):
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "|u1", "fortran_order": False, "shape": (count, *shape)})
    self.path, self.shape, self.row = path, shape, int(np.prod(shape))
    self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    self._offset = len(header.getvalue())
    try:
      os.posix_fallocate(self._fd, 0, self._offset + count * self.row)
      self._write(header.getvalue(), 0)
    except BaseException:
      os.close(self._fd)
      raise

  def put(self, position: int, image: np.ndarray) -> None:
    self._write(np.ascontiguousarray(image, np.uint8).tobytes(), self._offset + position * self.row)

  def _write(self, raw: bytes, offset: int) -> None:
    if os.pwrite(self._fd, raw, offset) != len(raw):
      raise OSError(errno.EIO, f"short write to {self.path}")

  def close(self) -> None:
    """fsyncs and closes the file (once)."""
    if self._fd is None:
      return
    fd, self._fd = self._fd, None
    try:
      os.fsync(fd)
    finally:
      os.close(fd)


def _save(path: pathlib.Path, array: np.ndarray) -> None:
  with open(path, "wb") as f:
    np.save(f, np.ascontiguousarray(array), allow_pickle=False)
    f.flush()
    os.fsync(f.fileno())
