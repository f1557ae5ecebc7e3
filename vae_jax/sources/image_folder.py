"""A folder of PNG or JPEG files, decoded with Pillow.

Layouts (torchvision's ImageFolder, with or without splits):

    DIR/train/CLASS/*.png  DIR/test/CLASS/*.png    labels from class folders
    DIR/train/*.png        DIR/test/*.png          no labels (-1)
    DIR/CLASS/*.png  or  DIR/*.png  or  DIR/train/ alone
                                                   one split: `vae_jax.data` splits off a test set

Class folders are sorted by name and numbered 0..K-1 from `train/`; a class
folder in `test/` must also be in `train/`. Inside a class folder, images in
nested folders count too. Files load in the sorted order of their paths
relative to the split folder (so labels come grouped by class), which makes
the arrays the same on every machine. Names starting with "." are skipped,
and files other than .png, .jpg and .jpeg are ignored.

Grey files give 1 channel and colour files 3 (alpha is dropped; a palette
of greys counts as grey, 16-bit grey is scaled to 8 bits). When the files
differ in mode or size, all are converted to the most common mode and size
(ties: colour, and the size met first); a different aspect ratio is
centre-cropped before resizing. With `image_size=S > 0` every image is
centre-cropped to a square and resized to S x S instead. EXIF orientation
tags are not applied (nor are they by torchvision's ImageFolder).
"""
import collections
import concurrent.futures
import contextlib
import dataclasses
import multiprocessing
import os
import pathlib
from collections.abc import Iterator

import numpy as np
from PIL import Image
import tqdm

from vae_jax.errors import UsageError
from vae_jax.sources import pixels

SUFFIXES = (".png", ".jpg", ".jpeg")
# Files per task handed to a worker: small enough for a smooth progress bar,
# large enough that the hand-over costs little next to decoding.
CHUNK = 256
# Smaller folders decode in about a second: no progress bar.
PROGRESS_FROM = 10_000
# Threads pay off once decoding, which runs without the GIL, outweighs the
# per-file Python work, which holds it: on 2 cores 28x28 grey PNGs (784
# values) decoded slower with 2 threads than with 1, 32x32 RGB PNGs (3,072)
# faster (experiments/bench_image_folder.py measures it).
THREADS_FROM_VALUES = 2048


@dataclasses.dataclass(frozen=True)
class FolderData:
  """The decoded splits of an image folder.

  Attributes:
    splits: "train" and, when the folder has `test/`, "test", each
      (images `(N, H, W, C)` uint8, labels `(N,)` int32).
    class_names: the class folders' names, label i being class_names[i];
      None without class folders.
  """

  splits: dict[str, tuple[np.ndarray, np.ndarray]]
  class_names: tuple[str, ...] | None


def holds_images(folder: pathlib.Path) -> bool:
  """Whether `folder` looks like an image folder: `train/`, images, or folders of images."""
  if (folder / "train").is_dir():
    return True
  for path, dirs, files in os.walk(folder):
    dirs[:] = [d for d in dirs if not d.startswith(".")]
    if any(_is_image(f) for f in files):
      return True
  return False


def read(folder, image_size: int = 0, *, workers: int | None = None,
         executor: str = "auto") -> FolderData:
  """Lists and decodes the images in `folder`.

  Args:
    folder: the data folder, in one of the layouts of the module docstring.
    image_size: S > 0 gives every image as S x S (centre crop, resize); 0
      keeps the most common size.
    workers: decoding threads or processes; None: the usable CPU cores.
    executor: how to decode (see `decode`).

  Returns:
    The decoded splits and class names.

  Raises:
    UsageError: an empty or mixed-up layout, or a file Pillow cannot decode.
  """
  folder = pathlib.Path(folder)
  listings, class_names = list_splits(folder)
  all_files = [f for files, _ in listings.values() for f in files]
  images = decode(all_files, image_size, workers=workers, executor=executor,
                  description=f"decoding {folder}")
  splits, start = {}, 0
  for split, (files, labels) in listings.items():
    splits[split] = images[start:start + len(files)], labels
    start += len(files)
  return FolderData(splits, class_names)


def list_splits(folder: pathlib.Path):
  """({split: (paths, labels)}, class names or None) of the folder's splits, in load order.

  Raises:
    UsageError: see `list_split`; train/ and test/ of different layouts.
  """
  listings, class_names = {}, None
  for split, root in _split_roots(folder).items():
    files, labels, names = list_split(root, class_names)
    listings[split] = (files, labels)
    if split == "train":
      class_names = names
    elif (names is None) != (class_names is None):
      raise UsageError(f"{folder}: train/ and test/ differ in layout (one has class folders, "
                       "the other images directly); use the same layout in both")
  return listings, class_names


def _split_roots(folder: pathlib.Path) -> dict[str, pathlib.Path]:
  """{"train": ..., maybe "test": ...}: the folders holding each split."""
  train, test = folder / "train", folder / "test"
  if train.is_dir():
    return {"train": train, "test": test} if test.is_dir() else {"train": train}
  if test.is_dir():
    raise UsageError(f"{folder}: has test/ but no train/; add train/ or put the images "
                     "in DIR directly (a test set is then split off)")
  return {"train": folder}


def list_split(root: pathlib.Path, class_names: tuple[str, ...] | None = None
               ) -> tuple[list[str], np.ndarray, tuple[str, ...] | None]:
  """The image files of one split folder, in load order, and their labels.

  Args:
    root: a split folder holding images or class folders.
    class_names: the training split's classes, to number a test split's
      folders by; None for the training split itself.

  Returns:
    (paths, labels `(N,)` int32, class names or None).

  Raises:
    UsageError: no images, images beside class folders, an empty class
      folder, or a test class unknown to the training split.
  """
  entries = [e for e in os.scandir(root) if not e.name.startswith(".")]
  loose = sorted(e.name for e in entries if e.is_file() and _is_image(e.name))
  dirs = sorted(e.name for e in entries if e.is_dir())
  if loose and dirs:
    raise UsageError(f"{root}: holds both image files ({loose[0]}, ...) and folders ({dirs[0]}, "
                     "...); put every image in a class folder, or none")
  if loose:
    return [os.path.join(root, f) for f in loose], np.full(len(loose), -1, np.int32), None
  if not dirs:
    raise UsageError(f"{root}: holds no PNG or JPEG files (expected *.png, *.jpg or *.jpeg, "
                     "directly or in one folder per class)")
  names = tuple(dirs) if class_names is None else class_names
  files, labels = [], []
  for name in dirs:
    if name not in names:
      raise UsageError(f"{root}: class folder {name!r} is not among the training classes "
                       f"({', '.join(names)})")
    found = _images_below(root / name)
    if not found:
      raise UsageError(f"{root / name}: class folder holds no PNG or JPEG files")
    files += found
    labels += [names.index(name)] * len(found)
  return files, np.asarray(labels, np.int32), names


def _images_below(folder: pathlib.Path) -> list[str]:
  """Image files anywhere below `folder`, sorted by relative path."""
  found = []
  for path, dirs, files in os.walk(folder):
    dirs[:] = [d for d in dirs if not d.startswith(".")]
    found += [os.path.join(path, f) for f in files if _is_image(f) and not f.startswith(".")]
  start = len(str(folder)) + 1
  return sorted(found, key=lambda p: p[start:].split(os.sep))


def _is_image(name: str) -> bool:
  return name.lower().endswith(SUFFIXES) and not name.startswith(".")


# ----------------------------------------------------------------------------
# Decoding.


def decode(files: list[str], image_size: int = 0, *, workers: int | None = None,
           executor: str = "auto", description: str = "decoding") -> np.ndarray:
  """Decodes `files` into one array, in order.

  Images of a minority mode or size are converted to the majority's (see
  the module docstring).

  Args:
    files: image paths.
    image_size: S > 0 crops and resizes every image to S x S.
    workers: threads or processes; None: the usable CPU cores.
    executor: "serial" (the calling thread), "threads" (Pillow decodes
      without the GIL, Python's per-file work holds it), "processes"
      (spawned: each imports the package, and images travel back pickled),
      or "auto": threads when the first file holds at least
      THREADS_FROM_VALUES values (pixels x channels), serial below.

  Returns:
    `(N, H, W, C)` uint8, C = 1 (grey) or 3 (colour); H = W = image_size
    when image_size > 0.

  Raises:
    UsageError: naming the first file that Pillow cannot decode.
  """
  # Filled as chunks arrive, in the shape of the first image; the others
  # wait in `odd` for the majority to be known.
  out, odd = None, {}
  for start, chunk in decode_chunks(files, image_size, workers=workers, executor=executor,
                                    description=description):
    for i, array in enumerate(chunk, start):
      if out is None:
        out = np.empty((len(files), *array.shape), np.uint8)
      if array.shape == out.shape[1:]:
        out[i] = array
      else:
        odd[i] = array
  return _uniform(out, odd)


def decode_chunks(files: list[str], image_size: int = 0, *, workers: int | None = None,
                  executor: str = "auto", description: str = "decoding"
                  ) -> Iterator[tuple[int, list[np.ndarray]]]:
  """Decodes `files` in chunks of CHUNK, in order, with a progress bar for large folders.

  Arguments as for `decode`, which assembles the chunks; the folder cache
  writes them to disk as they come.

  Yields:
    (index of the chunk's first file, its images `(h, w, c)` uint8 as decoded,
    not yet converted to one shape).
  """
  if executor == "auto":
    executor = "threads" if _values(files[0]) >= THREADS_FROM_VALUES else "serial"
  chunks = [files[i:i + CHUNK] for i in range(0, len(files), CHUNK)]
  bar = tqdm.tqdm(total=len(files), desc=description, unit=" images", leave=False,
                  disable=None if len(files) >= PROGRESS_FROM else True)
  with _pool(executor, workers) as pool, bar:
    decoded = (pool.map if pool else map)(_decode_chunk, chunks, [image_size] * len(chunks))
    for start, chunk in zip(range(0, len(files), CHUNK), decoded):
      yield start, chunk
      bar.update(len(chunk))


def _values(path: str) -> int:
  """Pixels x channels of the image in `path` (its header only); 0 if unreadable."""
  try:
    with Image.open(path) as image:
      return image.width * image.height * len(image.getbands())
  except Exception:  # pylint: disable=broad-except  # decode() names the file.
    return 0


@contextlib.contextmanager
def _pool(executor: str, workers: int | None):
  """Yields a concurrent.futures executor, or None for "serial".

  On an error (a bad file, Ctrl-C) the files not yet started are dropped, so
  the error comes at once, not after the rest of the folder is decoded.
  """
  workers = workers or len(os.sched_getaffinity(0))
  if executor == "serial":
    yield None
    return
  if executor == "threads":
    pool = concurrent.futures.ThreadPoolExecutor(workers)
  elif executor == "processes":
    # Not fork: the parent runs JAX's threads, which a fork would copy mid-flight.
    pool = concurrent.futures.ProcessPoolExecutor(workers, multiprocessing.get_context("spawn"))
  else:
    raise ValueError(f"executor must be auto, serial, threads or processes, got {executor!r}")
  try:
    yield pool
  except BaseException:
    pool.shutdown(cancel_futures=True)
    raise
  pool.shutdown()


def _decode_chunk(files: list[str], image_size: int) -> list[np.ndarray]:
  return [decode_one(f, image_size) for f in files]


def decode_one(path: str, image_size: int = 0) -> np.ndarray:
  """One file as `(H, W, C)` uint8, C = 1 or 3 (see the module docstring).

  Raises:
    UsageError: Pillow cannot open or decode the file.
  """
  try:
    with Image.open(path) as image:
      if image_size:
        # JPEG decodes straight to a reduced scale (1/2, 1/4, 1/8) no smaller than asked.
        image.draft(image.mode, (image_size, image_size))
      image = _grey_or_rgb(image)
      if image_size:
        image = pixels.fit(image, (image_size, image_size))
      array = np.asarray(image)
  except Exception as e:  # pylint: disable=broad-except
    # Pillow raises OSError, SyntaxError, ValueError, DecompressionBombError, ...
    reason = str(e).splitlines()[0].replace(f" {path!r}", "") if str(e) else type(e).__name__
    raise UsageError(f"cannot decode image {path} ({reason})") from None
  return array.reshape(array.shape[0], array.shape[1], -1)


def _grey_or_rgb(image: Image.Image) -> Image.Image:
  """`image` in mode L or RGB, whichever keeps its content."""
  if image.mode in ("P", "PA"):
    grey = _grey_palette(image)
    image = image.convert("RGBA")  # Applies palette transparency, without Pillow's warning.
    return image.convert("L" if grey else "RGB")
  if image.mode == "L" or image.mode == "RGB":
    return image
  if image.mode.startswith("I"):  # 16-bit (or 32-bit) grey: scale to 8 bits.
    values = np.asarray(image).astype(np.int64)
    return Image.fromarray(((values * 255 + 32767) // 65535).clip(0, 255).astype(np.uint8))
  if image.mode in ("1", "LA", "La", "F"):
    return image.convert("L")
  return image.convert("RGB")  # RGBA, CMYK, YCbCr, ...


def _grey_palette(image: Image.Image) -> bool:
  palette = np.asarray(image.getpalette() or [0, 0, 0]).reshape(-1, 3)
  return bool((palette == palette[:, :1]).all())


def majority_shape(first: tuple[int, int, int], num_first: int,
                   odd: dict[int, np.ndarray]) -> tuple[int, int, int]:
  """The (H, W, C) every image is converted to, from `num_first` images of the first image's
  shape `first` and the others in `odd` (index -> `(h, w, c)`)."""
  sizes = collections.Counter({first[:2]: num_first})
  sizes.update(a.shape[:2] for a in odd.values())
  channels = collections.Counter({first[2]: num_first})
  channels.update(a.shape[2] for a in odd.values())
  # Ties: the size met first, and colour (converting grey to colour loses nothing).
  (height, width), _ = sizes.most_common(1)[0]
  return (height, width, 3 if channels[3] >= channels[1] else 1)


def _uniform(out: np.ndarray, odd: dict[int, np.ndarray]) -> np.ndarray:
  """`out` with the images in `odd` (index -> `(h, w, c)`) converted in, to the majority shape."""
  shape = majority_shape(out.shape[1:], len(out) - len(odd), odd)
  if shape != out.shape[1:]:  # The first image was in the minority: start again.
    odd = {i: odd.get(i, out[i]) for i in range(len(out))}
    out = np.empty((len(out), *shape), np.uint8)
  for i, array in odd.items():
    out[i] = array if array.shape == shape else convert(array, *shape)
  return out


def convert(array: np.ndarray, height: int, width: int, channels: int) -> np.ndarray:
  """One `(h, w, c)` image to `(height, width, channels)`: Pillow's mode conversion and `fit`."""
  image = Image.fromarray(array[..., 0] if array.shape[2] == 1 else array)
  image = pixels.fit(image.convert("L" if channels == 1 else "RGB"), (width, height))
  return np.asarray(image).reshape(height, width, channels)
