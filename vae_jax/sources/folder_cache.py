"""An image folder decoded once into an `.npy` folder (`vae_jax.sources.npy`), reused after.

    ROOT/folders/<key>/train.npy, test.npy, *_labels.npy, class_names.json, meta.json

ROOT is the `cache_dir` argument if given, else `$VAE_JAX_CACHE`, else
`~/.cache/vae_jax` (as for downloads). `<key>` hashes the folder's absolute
path and what shapes the arrays (`image_size`, and `test_fraction` when the
folder has no `test/`, since the cache holds the split already made), so each
variant has its own entry.

`meta.json` holds the folder's fingerprint (every image's relative name, size
and mtime in ns, and Pillow's version) and each file's expected size in bytes. An entry is used
only when both still match: a changed folder or a truncated, damaged or
half-deleted entry is rebuilt. An entry is built under a temporary name and
renamed into place once every file is written and fsynced, so a crash leaves
no half entry under the real name (and a killed build's temporary folder is
deleted by a build a day later). A full disk while building raises one
line and removes the partial build; the image folder itself is only read.

The build writes each image to its place in `train.npy` or `test.npy` as it
is decoded (`image_folder.decode_chunks`: threads, progress bar), so RAM
holds only the images of a minority shape, converted at the end as
`image_folder.decode` converts them: the arrays are those of a fresh decode.
Later runs open memmaps and read nothing until indexed. A file rewritten with the
same size within the file system's mtime granularity is not noticed.
"""
import dataclasses
import errno
import hashlib
import json
import os
import pathlib
import shutil
import sys
import time
import uuid

import numpy as np
import PIL

from vae_jax import download
from vae_jax import fields
from vae_jax.errors import UsageError
from vae_jax.sources import image_folder
from vae_jax.sources import npy
from vae_jax.sources.splits import test_mask

VERSION = 1  # Bump when the cached arrays would differ for the same folder.
MODES = fields.choices("folder_cache")  # auto | always | never
# Folders with fewer images decode in about a second (image_folder.PROGRESS_FROM): "auto"
# decodes them every time rather than keep a copy.
CACHE_FROM = image_folder.PROGRESS_FROM
META = "meta.json"
# A build's temporary folder untouched this long is a dead build's.
LEFTOVER_SECONDS = 24 * 3600


def root(cache_dir: str | os.PathLike | None = None) -> pathlib.Path:
  """The folder caches' root: ROOT/folders (see the module docstring)."""
  return download.dataset_dir("folders", cache_dir)


def wanted(mode: str, num_images: int) -> bool:
  """Whether to cache a folder of `num_images` images under `mode` (one of MODES)."""
  if mode not in MODES:
    raise UsageError(f"folder_cache must be one of {', '.join(MODES)}, got {mode!r}")
  return mode == "always" or (mode == "auto" and num_images >= CACHE_FROM)


def entry(folder: pathlib.Path, image_size: int, test_fraction: float | None,
          cache_dir=None) -> pathlib.Path:
  """The cache folder for `folder` decoded at `image_size` (split by `test_fraction`)."""
  what = json.dumps([VERSION, str(pathlib.Path(folder).resolve()), image_size, test_fraction])
  return root(cache_dir) / hashlib.sha256(what.encode()).hexdigest()[:20]


def fingerprint(listings: dict[str, tuple[list[str], np.ndarray]], folder: pathlib.Path) -> str:
  """A hash of every listed image's split, relative name, size and mtime (ns), the labels,
  and Pillow's version (another decoder may give other pixels)."""
  digest = hashlib.sha256(f"Pillow {PIL.__version__}\0".encode())
  for split, (files, labels) in listings.items():
    digest.update(f"{split}\0{len(files)}\0".encode())
    for name in files:
      stat = os.stat(name)
      digest.update(f"{os.path.relpath(name, folder)}\0{stat.st_size}\0{stat.st_mtime_ns}\0"
                    .encode())
    digest.update(np.asarray(labels, np.int32).tobytes())
  return digest.hexdigest()


def open_entry(path: pathlib.Path, expected_fingerprint: str) -> str | None:
  """None when the entry at `path` is intact and of `expected_fingerprint`, else why not."""
  try:
    meta = json.loads((path / META).read_text())
    sizes = meta["sizes"]
    if meta["fingerprint"] != expected_fingerprint:
      return "the folder changed"
    for name, size in sizes.items():
      if os.path.getsize(path / name) != size:
        return f"{name} is {os.path.getsize(path / name):,} bytes, expected {size:,}"
  except FileNotFoundError as e:
    return f"{pathlib.Path(e.filename).name} is missing"
  except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
    return f"{META} is damaged ({type(e).__name__})"
  return None


def cached(folder, image_size: int, test_fraction: float, *, cache_dir=None,
           listings=None, class_names=None, workers: int | None = None,
           say=None) -> pathlib.Path:
  """The intact cache entry of `folder`, building (or rebuilding) it when needed.

  Args:
    folder: an image folder (`vae_jax.sources.image_folder`).
    image_size: as for `image_folder.read`.
    test_fraction: the share split off as test set when the folder has no `test/`.
    cache_dir: the cache root; None or "": the default.
    listings, class_names: `image_folder.list_splits(folder)`, when already made.
    workers: decoding threads.
    say: prints a line (default: to stderr) when an existing entry is rebuilt.

  Returns:
    The entry, an `.npy` folder (`vae_jax.sources.npy.read` opens it).

  Raises:
    UsageError: the folder's own errors (see `image_folder.read`), or the entry
      cannot be written (a full disk, no permission); then no entry is left.
  """
  folder = pathlib.Path(folder)
  if listings is None:
    listings, class_names = image_folder.list_splits(folder)
  split_fraction = None if "test" in listings else test_fraction
  path = entry(folder, image_size, split_fraction, cache_dir)
  print_ = say or (lambda line: print(line, file=sys.stderr, flush=True))
  expected = fingerprint(listings, folder)
  if path.exists():
    why = open_entry(path, expected)
    if why is None:
      return path
    print_(f"rebuilding the image cache {path} of {folder} ({why})")
  _build(path, _Plan.of(folder, listings, image_size, split_fraction, class_names, workers),
         expected)
  return path


@dataclasses.dataclass(frozen=True)
class _Plan:
  """What to decode and where each image goes: file i to row `rows[i]` of split `splits[i]`.

  Attributes:
    folder: the image folder.
    files: every image file, in load order.
    splits: `(n,)` the split name of each file's image.
    rows: `(n,)` its row in that split's file.
    labels: each split's labels, `(count,)` int32.
    class_names, image_size, workers: as for `cached`.
  """

  folder: pathlib.Path
  files: list[str]
  splits: np.ndarray
  rows: np.ndarray
  labels: dict[str, np.ndarray]
  class_names: tuple[str, ...] | None
  image_size: int
  workers: int | None

  @classmethod
  def of(cls, folder, listings, image_size, split_fraction, class_names, workers) -> "_Plan":
    """The splits `vae_jax.data` makes: the folder's own, or a test set split off."""
    files = [f for names, _ in listings.values() for f in names]
    labels = np.concatenate([np.asarray(l, np.int32) for _, l in listings.values()])
    if split_fraction is None:
      splits = np.repeat(list(listings), [len(names) for names, _ in listings.values()])
    else:
      is_test = test_mask(len(files), split_fraction, str(folder))
      splits = np.where(is_test, "test", "train")
    rows = np.empty(len(files), np.int64)
    by_split = {}
    for split in ("train", "test"):
      members = splits == split
      rows[members] = np.arange(members.sum())
      by_split[split] = labels[members]
    return cls(pathlib.Path(folder), files, splits, rows, by_split, class_names, image_size,
               workers)


def _build(path: pathlib.Path, plan: _Plan, expected: str) -> None:
  """Writes the entry under a temporary name and renames it to `path`."""
  _remove_leftovers(path)
  temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
  try:
    temporary.mkdir(parents=True)
    _write_images(temporary, plan)
    for split, labels in plan.labels.items():
      npy.write_labels(temporary, split, labels)
    npy.write_class_names(temporary, plan.class_names)
    sizes = {p.name: p.stat().st_size for p in temporary.iterdir()}
    _write_meta(temporary / META, {"fingerprint": expected, "sizes": sizes,
                                   "folder": str(plan.folder)})
    _replace(temporary, path)
  except BaseException as e:  # Ctrl-C too: no partial build is left behind.
    shutil.rmtree(temporary, ignore_errors=True)
    if not isinstance(e, OSError):
      raise
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
      raise UsageError(f"no space left to cache {plan.folder} in {path.parent} (about "
                       f"{_first_size(plan) * len(plan.files) / 2**20:,.0f} MiB needed); free "
                       "some, point --config.cache_dir or $VAE_JAX_CACHE elsewhere, or set "
                       "--config.folder_cache=never") from None
    raise UsageError(f"cannot write the image cache {path} ({e.strerror or e}); point "
                     "--config.cache_dir or $VAE_JAX_CACHE elsewhere, or set "
                     "--config.folder_cache=never") from None


def _remove_leftovers(path: pathlib.Path) -> None:
  """Deletes the temporary folders of builds of `path` killed (SIGKILL, power loss) long ago;
  younger ones may be another process's build in progress."""
  if not path.parent.is_dir():
    return
  for leftover in path.parent.glob(f".{path.name}.*"):
    try:
      if time.time() - leftover.stat().st_mtime > LEFTOVER_SECONDS:
        shutil.rmtree(leftover, ignore_errors=True)
    except OSError:
      pass


def _first_size(plan: _Plan) -> int:
  """Bytes of the first image, decoded (an estimate of every image's)."""
  return image_folder.decode_one(plan.files[0], plan.image_size).nbytes


def _write_images(folder: pathlib.Path, plan: _Plan) -> None:
  """Decodes the images into `folder`/{train,test}.npy as they come, in the first image's shape;
  the others (kept in RAM) are converted in once the majority shape is known, as
  `image_folder.decode` does."""
  files, odd = None, {}
  try:
    for start, chunk in image_folder.decode_chunks(
        plan.files, plan.image_size, workers=plan.workers,
        description=f"decoding {plan.folder} into the cache"):
      for i, image in enumerate(chunk, start):
        if files is None:
          files = _open_files(folder, plan, image.shape)
        if image.shape == files["train"].shape:
          files[plan.splits[i]].put(plan.rows[i], image)
        else:
          odd[i] = image
    first = files["train"].shape
    shape = image_folder.majority_shape(first, len(plan.files) - len(odd), odd)
    if shape != first:  # The first image was in the minority: write every file again.
      files = _reshaped(folder, plan, files, odd, shape)
    else:
      for i, image in odd.items():
        files[plan.splits[i]].put(plan.rows[i], image_folder.convert(image, *shape))
  finally:
    for f in (files or {}).values():
      f.close()


def _open_files(folder: pathlib.Path, plan: _Plan, shape) -> dict[str, npy.ImagesFile]:
  return {split: npy.ImagesFile(folder / f"{split}.npy", len(labels), shape)
          for split, labels in plan.labels.items()}


def _reshaped(folder, plan: _Plan, files, odd, shape) -> dict[str, npy.ImagesFile]:
  """The files rewritten in `shape`: each image converted from what was written or kept."""
  old = {}
  for split, f in files.items():
    f.close()
    os.rename(f.path, f.path.with_suffix(".old"))
    old[split] = npy.open_images(f.path.with_suffix(".old"))
  new = _open_files(folder, plan, shape)
  try:
    for i in range(len(plan.files)):
      split, row = plan.splits[i], plan.rows[i]
      image = odd[i] if i in odd else np.asarray(old[split][row])
      new[split].put(row, image if image.shape == shape else image_folder.convert(image, *shape))
  except BaseException:
    for f in new.values():
      f.close()
    raise
  for split in list(old):
    del old[split]  # Unmaps the file.
    os.remove(folder / f"{split}.old")
  return new


def _write_meta(path: pathlib.Path, meta: dict) -> None:
  with open(path, "w") as f:
    json.dump(meta, f)
    f.flush()
    os.fsync(f.fileno())


def _replace(temporary: pathlib.Path, path: pathlib.Path) -> None:
  """Renames the built `temporary` to `path`, moving a stale entry there aside first.

  When another process put an entry there meanwhile, theirs stays and ours goes.
  """
  stale = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.old")
  if path.exists():
    os.rename(path, stale)
  try:
    os.rename(temporary, path)
  except OSError as e:
    if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
      raise
    shutil.rmtree(temporary, ignore_errors=True)
  shutil.rmtree(stale, ignore_errors=True)
  _fsync_dir(path.parent)


def _fsync_dir(folder: pathlib.Path) -> None:
  fd = os.open(folder, os.O_RDONLY)
  try:
    os.fsync(fd)
  finally:
    os.close(fd)
