"""An image folder decoded once into an `.npy` folder (`vae_jax.sources.npy`), reused after.

    ROOT/folders/<key>/train.npy, test.npy, *_labels.npy, class_names.json, meta.json

ROOT is the `cache_dir` argument if given, else `$VAE_JAX_CACHE`, else
`~/.cache/vae_jax` (as for downloads). `<key>` hashes the folder's absolute
path and what shapes the arrays (`image_size`, and `test_fraction` when the
folder has no `test/`, since the cache holds the split already made), so each
variant has its own entry.

`meta.json` holds the folder's fingerprint (every image's relative name, size
and mtime in ns) and each file's expected size in bytes. An entry is used
only when both still match: a changed folder or a truncated, damaged or
half-deleted entry is rebuilt. An entry is built under a temporary name and
renamed into place once every file is written and fsynced, so a crash leaves
no half entry under the real name. A full disk while building raises one
line and removes the partial build; the image folder itself is only read.

The build decodes the whole folder in RAM first (`image_folder.read`, the
same arrays as without a cache, with its threads and progress bar); later
runs open memmaps and read nothing until indexed. A file rewritten with the
same size within the file system's mtime granularity is not noticed.
"""
import errno
import hashlib
import json
import os
import pathlib
import shutil
import sys
import uuid

import numpy as np

from vae_jax import download
from vae_jax.errors import UsageError
from vae_jax.sources import image_folder
from vae_jax.sources import npy

VERSION = 1  # Bump when the cached arrays would differ for the same folder.
MODES = ("auto", "always", "never")
# Folders with fewer images decode in about a second (image_folder.PROGRESS_FROM): "auto"
# decodes them every time rather than keep a copy.
CACHE_FROM = image_folder.PROGRESS_FROM
META = "meta.json"


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
  """A hash of every listed image's split, relative name, size and mtime (ns), and labels."""
  digest = hashlib.sha256()
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
  splits = _decode(folder, listings, image_size, split_fraction, workers)
  _build(path, splits, class_names, expected, folder)
  return path


def _decode(folder, listings, image_size, split_fraction, workers):
  """{"train": ..., "test": ...} as `vae_jax.data` would make them without a cache."""
  from vae_jax import data  # pylint: disable=g-import-not-at-top  # data imports this module.
  files = [f for names, _ in listings.values() for f in names]
  images = image_folder.decode(files, image_size, workers=workers,
                               description=f"decoding {folder} into the cache")
  splits, start = {}, 0
  for split, (names, labels) in listings.items():
    splits[split] = images[start:start + len(names)], labels
    start += len(names)
  if split_fraction is not None:
    train, test = data.split_off_test(data.Split(*splits["train"]), split_fraction, str(folder))
    splits = {"train": (train.images, train.labels), "test": (test.images, test.labels)}
  return splits


def _build(path: pathlib.Path, splits, class_names, expected: str, folder) -> None:
  """Writes the entry under a temporary name and renames it to `path`."""
  temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
  need = sum(images.nbytes for images, _ in splits.values())
  try:
    temporary.mkdir(parents=True)
    npy.write(temporary, splits, class_names)
    sizes = {p.name: p.stat().st_size for p in temporary.iterdir()}
    _write_meta(temporary / META, {"fingerprint": expected, "sizes": sizes,
                                   "folder": str(folder)})
    _replace(temporary, path)
  except BaseException as e:  # Ctrl-C too: no partial build is left behind.
    shutil.rmtree(temporary, ignore_errors=True)
    if not isinstance(e, OSError):
      raise
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
      raise UsageError(f"no space left to cache {folder} in {path.parent} (about "
                       f"{need / 2**20:,.0f} MiB needed); free some, point --config.cache_dir "
                       "or $VAE_JAX_CACHE elsewhere, or set --config.folder_cache=never") from None
    raise UsageError(f"cannot write the image cache {path} ({e.strerror or e}); point "
                     "--config.cache_dir or $VAE_JAX_CACHE elsewhere, or set "
                     "--config.folder_cache=never") from None


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
