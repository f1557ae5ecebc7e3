"""One `.npz` file in the layout of Keras' `mnist.npz`.

Keys `x_train` and `x_test`: uint8 images `(N, H, W)` or `(N, H, W, C)`;
optional `y_train` and `y_test`: integer labels `(N,)` (-1 for every image
when absent). Pickled objects are refused (`allow_pickle=False`).
"""
import pathlib
import zipfile
import zlib

import numpy as np

from vae_jax.errors import UsageError

IMAGE_KEYS = {"train": "x_train", "test": "x_test"}
LABEL_KEYS = {"train": "y_train", "test": "y_test"}


def find(folder: pathlib.Path) -> pathlib.Path | None:
  """The one `.npz` file in `folder`; None when there is none.

  Raises:
    UsageError: several `.npz` files, so which one is meant is unclear.
  """
  found = sorted(p for p in folder.glob("*.npz") if p.is_file())
  if len(found) > 1:
    names = ", ".join(p.name for p in found)
    raise UsageError(f"data_dir {str(folder)!r} holds {len(found)} .npz files ({names}); "
                     "set data_dir to one of them")
  return found[0] if found else None


def read(path: pathlib.Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """Reads both splits from the file.

  Returns:
    {"train": (images, labels), "test": (images, labels)}: images
    `(N, H, W, C)` uint8, labels `(N,)` int32.

  Raises:
    UsageError: not a readable .npz, image keys missing, or arrays of the wrong
      dtype, rank or length.
  """
  arrays, keys = _load(path)
  missing = [key for key in IMAGE_KEYS.values() if key not in arrays]
  if missing:
    raise UsageError(f"{path}: lacks {', '.join(missing)} (it holds "
                     f"{', '.join(keys) or 'nothing'}; expected x_train, x_test and optionally "
                     "y_train, y_test)")
  return {split: _split(path, arrays, split) for split in IMAGE_KEYS}


def _load(path: pathlib.Path) -> tuple[dict[str, np.ndarray], list[str]]:
  """The arrays of the four known keys that the file holds, and all its keys."""
  wanted = [*IMAGE_KEYS.values(), *LABEL_KEYS.values()]
  try:
    archive = np.load(path, allow_pickle=False)
    if not isinstance(archive, np.lib.npyio.NpzFile):
      raise ValueError("a .npy array, not an .npz archive")
    with archive:
      return {k: archive[k] for k in wanted if k in archive.files}, list(archive.files)
  except (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error) as e:
    reason = str(e).splitlines()[0] if str(e) else type(e).__name__
    raise UsageError(f"{path}: cannot read as .npz ({reason})") from None


def _split(path, arrays: dict[str, np.ndarray], split: str) -> tuple[np.ndarray, np.ndarray]:
  """The checked (images, labels) of one split."""
  key = IMAGE_KEYS[split]
  images = arrays[key]
  if images.dtype != np.uint8 or images.ndim not in (3, 4):
    raise UsageError(f"{path}: {key} is {images.dtype} of shape {images.shape}; expected "
                     "uint8 images (N, H, W) or (N, H, W, C)")
  images = images if images.ndim == 4 else images[..., None]
  label_key = LABEL_KEYS[split]
  if label_key not in arrays:
    return images, np.full(len(images), -1, np.int32)
  labels = arrays[label_key]
  if not np.issubdtype(labels.dtype, np.integer) or labels.shape != (len(images),):
    raise UsageError(f"{path}: {label_key} is {labels.dtype} of shape {labels.shape}; expected "
                     f"integer labels of shape ({len(images)},)")
  return images, labels.astype(np.int32)
