"""Input: image datasets as uint8 numpy arrays `(N, H, W, C)`, from files or tfds.

`load(config)` picks the source from the config:
  * `data_dir=PATH`: what PATH holds decides (`read_path`): the four IDX
    files, one `.npz` file (PATH may be the file), `train.npy` and `test.npy`
    (opened as memory maps, `vae_jax.sources.npy`), or a folder of PNG/JPEG
    images (`vae_jax.sources.image_folder` has the layouts; large ones are
    decoded once into an `.npy` cache, `vae_jax.sources.folder_cache`).
    `dataset` is then only the name results are labelled with, any string;
    left empty, the name comes from the data (`name_of`): MNIST, Fashion-MNIST
    and mnist_sample IDX files by their checksums, else the `.npz` file's or
    the folder's name;
  * `dataset` empty (the default): MNIST, downloaded once; on a machine that
    reaches no mirror and has no copy cached, the shipped `mnist_sample`
    instead, said in one line;
  * `dataset=mnist_sample`: 10,000 real MNIST digits shipped with the package;
  * `dataset=mnist|fashion_mnist`: MNIST or Fashion-MNIST, downloaded once into
    a cache by `vae_jax.download` (no TensorFlow);
  * `dataset=shapes2d`: dSprites' factor grid, rendered (`vae_jax.sources.shapes2d`);
    a `data_dir` holding the real dSprites `.npz` is read with its factors
    (`vae_jax.sources.dsprites`);
  * `dataset=tfds:NAME`: any tensorflow-datasets image dataset; one prepared
    in ArrayRecord is read by index from disk (`vae_jax.sources.tfds_records`).
Only tfds data sets not prepared in ArrayRecord import TensorFlow. Every
malformed input raises `UsageError` with one line, before anything is trained.

Inputs without a test split (an image folder without `test/`, a tfds dataset
with neither `test` nor `validation`) get one: a fraction `test_fraction` of
the images, drawn by a permutation with the fixed seed `SPLIT_SEED` (not
`config.seed`, so that runs with different seeds share their test set); both
parts keep the source's order. `image_size=S > 0` centre-crops every image to
a square and resizes it to S x S, whatever the source. `train_subset=N > 0`
keeps a fixed random subset of N training images (`subset_train`).

Data with known factors of variation (shapes2d, dSprites) carries each image's
factor indices in `Split.factors`, through the test split, resizing and
`train_subset`, and `ground_truth(dataset)` gives the image of any factor
combination (`vae_jax.sources.factors`).

Images stay uint8 on the host and on the device; `to_unit_interval` scales
them to [0, 1] inside the jitted step.
"""
import dataclasses
import gzip
import hashlib
import os
import pathlib
import sys
import zlib
from collections.abc import Callable
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from vae_jax import download
from vae_jax import fields
from vae_jax.errors import UsageError
from vae_jax.sources import dsprites
from vae_jax.sources import factors as factors_lib
from vae_jax.sources import folder_cache
from vae_jax.sources import idx
from vae_jax.sources import image_folder
from vae_jax.sources import npy
from vae_jax.sources import npz
from vae_jax.sources import pixels
from vae_jax.sources import shapes2d
from vae_jax.sources.splits import SPLIT_SEED  # noqa: F401  (re-exported)
from vae_jax.sources.splits import test_mask

DATASETS = ("mnist", "fashion_mnist", "mnist_sample", shapes2d.NAME)  # Names that need no data_dir.
TFDS_PREFIX = "tfds:"
SAMPLE_DIR = pathlib.Path(__file__).parent / "datasets" / "mnist_sample"
# What an empty `dataset` (the default config's) loads, and what instead offline.
DEFAULT_DATASET, OFFLINE_DATASET = "mnist", "mnist_sample"
# sha256 of the decompressed IDX files, for data sets whose files circulate
# re-compressed (so that the .gz digests download.SOURCES registers differ):
# Debian's dataset-fashion-mnist, and the shipped mnist_sample.
IDX_CONTENT_SHA256 = {
    "fashion_mnist": {
        "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"},
    "mnist_sample": {
        "train-images-idx3-ubyte": "32f59248fae0969dd0bbb05b2794cc41b762241ed9bab4896da46ecf56e12446",
        "train-labels-idx1-ubyte": "07710113603c9a9535b5cb91748b6d81c9c02cde8f470f3049761527b0dc5e66",
        "t10k-images-idx3-ubyte": "9d59f7940f4c524185895da9a4d43130d5fb8991662aeece1d2bd4596b0fc9c3",
        "t10k-labels-idx1-ubyte": "a6704401e7c4249814061accf1cb6cb30414fee3a11906ca4417485203916bdc"},
}
SUBSET_SEED = 1  # Of train_subset's images: fixed, as SPLIT_SEED, not config.seed.
_TFDS_HINT = ("offline, prepare it where there is network and pass --config.tfds_data_dir, "
              "or use --config.data_dir with IDX, .npz or image files")
_EXPECTED = ("the four IDX files (train-images-idx3-ubyte[.gz], ...), one .npz file "
             "(x_train, x_test, ...), train.npy and test.npy, or PNG/JPEG images (directly, "
             "in class folders, or under train/ and test/)")

_TEST_FRACTION = fields.FIELDS["test_fraction"].default

# What `load` reads: the config's data fields.
DataSettings = fields.settings_class(
    "DataSettings", fields.group("data"),
    "The config's data fields (`vae_jax.fields`, group data): what `load` reads.")


@dataclasses.dataclass(frozen=True)
class Split:
  """One split: `images` `(N, H, W, C)` uint8, `labels` `(N,)` int32, -1 where unknown, and
  for data with known factors their indices `factors` `(N, F)` int32 (else None)."""

  images: np.ndarray
  labels: np.ndarray
  factors: np.ndarray | None = None

  def take(self, rows) -> "Split":
    """Images `rows` (indices or a boolean mask) with their labels and factors; lazy images
    (tfds_records.RecordImages, shapes2d.RenderedImages) stay lazy, a memmap's are read."""
    pick = getattr(self.images, "subset", self.images.__getitem__)
    factors = None if self.factors is None else self.factors[rows]
    return Split(pick(rows), self.labels[rows], factors)


@dataclasses.dataclass(frozen=True)
class Dataset:
  """Train and test splits of images of one shape.

  Attributes:
    name: what results are labelled with (`config.dataset`).
    train: the training split.
    test: the test split.
    class_names: label i's name, when the source names classes (image
      folders' class folders, tfds ClassLabels); None otherwise.
    grid: for data with known factors, the observations of the full factor
      grid (`ground_truth` returns it); None otherwise.
  """

  name: str
  train: Split
  test: Split
  class_names: tuple[str, ...] | None = None
  grid: factors_lib.GroundTruth | None = None

  @property
  def factor_names(self) -> tuple[str, ...] | None:
    """The factors' names, for data with known factors; else None."""
    return self.grid and self.grid.factor_names

  @property
  def factor_sizes(self) -> tuple[int, ...] | None:
    """The number of values of each factor, for data with known factors; else None."""
    return self.grid and self.grid.factor_sizes

  @property
  def image_shape(self) -> tuple[int, int, int]:
    """(H, W, C), C = 1 for grey and 3 for colour."""
    return tuple(self.train.images.shape[1:])


def settings(config) -> "DataSettings":
  """The data fields of a config (a ConfigDict, a config.json's values, or settings)."""
  return fields.settings_of(DataSettings, config)


def check_config(config) -> None:
  """Raises UsageError naming the first invalid data field of `config` (reads no data)."""
  name = config.dataset
  if name and not config.data_dir and name not in DATASETS and not name.startswith(TFDS_PREFIX):
    raise UsageError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}, "
                     f"{TFDS_PREFIX}NAME (tensorflow-datasets), or set data_dir")
  if name == TFDS_PREFIX:
    raise UsageError(f"dataset={name!r} lacks the tfds name, e.g. {TFDS_PREFIX}cifar10")
  for name in ("test_fraction", "image_size", "folder_cache", "train_subset"):
    fields.FIELDS[name].check(getattr(config, name))


def load(config, *, say: Callable[[str], None] | None = None) -> Dataset:
  """Loads the dataset a config names.

  Fields read: `dataset`, `data_dir`, `cache_dir`, `tfds_data_dir`,
  `test_fraction`, `image_size`, `folder_cache`, `train_subset` (a config.json
  written before some of them existed is completed by `schema.upgrade` when it
  is read).

  Args:
    config: the run's `DataSettings` (`settings(config)`), or anything with those
      attributes (a ConfigDict).
    say: prints the one line that an empty `dataset` falls back to the shipped
      digits offline; default: stderr.

  Returns:
    The dataset, images `(N, H, W, C)` uint8 (memmaps for `.npy` folders and
    cached image folders); its `name` is what results carry.

  Raises:
    UsageError: an invalid field, or data that cannot be read (one line).
  """
  check_config(config)
  return subset_train(_load(config, say), config.train_subset)


def _load(config, say: Callable[[str], None] | None) -> Dataset:
  image_size, test_fraction = config.image_size, config.test_fraction
  if config.data_dir:
    return read_path(config.data_dir, _name_for(config.dataset, config.data_dir),
                     image_size=image_size,
                     test_fraction=test_fraction, folder_cache=config.folder_cache,
                     cache_dir=config.cache_dir or None)
  if not config.dataset:
    return _resized(_default_dataset(config.cache_dir or None, say), image_size)
  if config.dataset == "mnist_sample":
    return _resized(load_idx_dir(SAMPLE_DIR, name="mnist_sample"), image_size)
  if config.dataset == shapes2d.NAME:
    return _shapes2d(image_size, test_fraction)
  if config.dataset in download.DATASETS:
    folder = download.fetch(config.dataset, config.cache_dir or None)
    return _resized(load_idx_dir(folder, name=config.dataset), image_size)
  return load_tfds(config.dataset.removeprefix(TFDS_PREFIX), config.tfds_data_dir or None,
                   name=config.dataset, image_size=image_size, test_fraction=test_fraction)


def _name_for(dataset: str, data_dir: str) -> str | None:
  """The name of the data in `data_dir` given `dataset`: a name of the user's own, or a
  data set the library knows (the default of a named config, e.g. tiny's mnist_sample)
  only where `data_dir` holds that data set; None (the data's own name, `name_of`) else."""
  known = (OFFLINE_DATASET, shapes2d.NAME, dsprites.NAME, *download.DATASETS)
  if not dataset or dataset.startswith(TFDS_PREFIX):
    return None
  if dataset not in known:
    return dataset
  try:
    return dataset if name_of(data_dir) == dataset else None
  except (OSError, EOFError, ValueError, zlib.error):  # Damaged files: the reader says so.
    return None


def _default_dataset(cache_dir: str | None, say: Callable[[str], None] | None) -> Dataset:
  """MNIST (downloaded once), or the shipped digits when no mirror is reachable."""
  try:
    folder = download.fetch(DEFAULT_DATASET, cache_dir)
  except download.Offline as e:
    (say or _to_stderr)(
        f"offline ({e.reason}): training on {OFFLINE_DATASET}, the 10,000 MNIST digits shipped "
        "with vae_jax, not full MNIST; for full MNIST run once with network (it is cached), "
        "or pass --config.dataset=mnist --config.data_dir=DIR holding its four IDX files")
    return load_idx_dir(SAMPLE_DIR, name=OFFLINE_DATASET)
  return load_idx_dir(folder, name=DEFAULT_DATASET)


def _to_stderr(message: str) -> None:
  print(message, file=sys.stderr, flush=True)


def read_path(path, name: str | None = None, *, image_size: int = 0,
              test_fraction: float = _TEST_FRACTION, folder_cache: str = "auto",
              cache_dir=None) -> Dataset:
  """Reads what `path` holds: IDX files, a `.npz` file (or a folder with one), `.npy`
  files, or images.

  Checked in that order: a folder holding any of the four IDX file names is
  read as IDX (and must hold all four), else one holding a `.npz` as that
  file, else one holding `train.npy` as an `.npy` folder, else one holding
  PNG/JPEG files as an image folder.

  Args:
    path: the file or folder.
    name: the dataset's name; None: from the data (see `name_of`).
    image_size: S > 0 resizes every image to S x S.
    test_fraction: the share split off as test set where the input has none.
    folder_cache: for image folders: "auto" (cache those of at least
      `folder_cache.CACHE_FROM` images), "always" or "never".
    cache_dir: the cache root (`folder_cache.root`); None: the default.

  Raises:
    UsageError: a missing path, an empty folder, unknown content (saying what
      is expected), or a malformed file.
  """
  path = pathlib.Path(path)
  if path.is_file():
    if path.suffix != ".npz":
      raise UsageError(f"data_dir {str(path)!r} is a file but not a .npz; expected a folder "
                       "or a .npz file")
    return _from_npz(path, name or name_of(path), image_size, test_fraction)
  if not path.is_dir():
    raise UsageError(f"data_dir {str(path)!r} is not a folder or a .npz file")
  if idx.holds_idx(path):
    dataset = load_idx_dir(path, name=name or "")  # Read first: it reports missing files.
    return _resized(dataclasses.replace(dataset, name=name or name_of(path)), image_size)
  if npz_file := npz.find(path):
    return _from_npz(npz_file, name or name_of(npz_file), image_size, test_fraction)
  if npy.holds_npy(path):
    return _from_npy(path, name or name_of(path), image_size)
  if image_folder.holds_images(path):
    return _from_image_folder(path, name or name_of(path), image_size, test_fraction,
                              folder_cache, cache_dir)
  if not any(path.iterdir()):
    raise UsageError(f"data_dir {str(path)!r} is empty; expected {_EXPECTED}")
  raise UsageError(f"data_dir {str(path)!r} holds none of the inputs it can read; expected "
                   f"{_EXPECTED}")


def name_of(path) -> str:
  """The name results carry for the data at `path` when the config names none.

  An IDX folder whose four files are those of a known data set (by the sha256
  of each file as registered for the download, or of its decompressed bytes,
  `IDX_CONTENT_SHA256`) gets that data set's name; any other folder its own
  name, and a `.npz` file its name without the suffix (Keras' `mnist.npz`: mnist).
  """
  path = pathlib.Path(path).resolve()
  if path.is_file():
    return dsprites.NAME if dsprites.holds(path) else path.stem
  if idx.holds_idx(path):
    digests = {stem: _digests(path, stem) for pair in idx.FILES.values() for stem in pair}
    for known in (*download.DATASETS, *IDX_CONTENT_SHA256):
      if all(_is_known(known, stem, found) for stem, found in digests.items()):
        return known
  return path.name or "data"


def _digests(folder: pathlib.Path, stem: str) -> tuple[str, str]:
  """(sha256 of the file as stored, sha256 of its decompressed bytes); empty if absent."""
  try:
    path = idx.find(folder, stem)
  except UsageError:
    return "", ""
  stored = path.read_bytes()
  content = gzip.decompress(stored) if path.suffix == ".gz" else stored
  return hashlib.sha256(stored).hexdigest(), hashlib.sha256(content).hexdigest()


def _is_known(name: str, stem: str, digests: tuple[str, str]) -> bool:
  registered = download.SOURCES.get(name, {}).get(f"{stem}.gz")
  return ((registered is not None and digests[0] == registered.sha256)
          or IDX_CONTENT_SHA256.get(name, {}).get(stem) == digests[1] != "")


def load_idx_dir(data_dir, name: str = "idx") -> Dataset:
  """Reads the four standard IDX files (`.gz` or uncompressed) from `data_dir`."""
  data_dir = pathlib.Path(data_dir)
  if not data_dir.is_dir():
    raise UsageError(f"data_dir {str(data_dir)!r} is not a folder")
  splits = {split: idx.read_split(data_dir, split) for split in idx.FILES}
  return assemble(name, str(data_dir), splits)


def _from_npz(path: pathlib.Path, name: str, image_size: int, test_fraction: float) -> Dataset:
  if dsprites.holds(path):
    return _resized(_dsprites(path, name, test_fraction), image_size)
  return _resized(assemble(name, str(path), npz.read(path)), image_size)


def _dsprites(path: pathlib.Path, name: str, test_fraction: float) -> Dataset:
  """The dSprites file: labelled by shape, with its factors and their full grid."""
  images, factors, sizes = dsprites.read(path)
  dataset = assemble(name, str(path), {"train": (images, factors[:, 0], factors)},
                     dsprites.SHAPE_NAMES[:sizes[0]], test_fraction)
  grid = factors_lib.lookup(dsprites.FACTOR_NAMES, sizes, (dataset.train, dataset.test))
  return dataclasses.replace(dataset, grid=grid)


def _shapes2d(image_size: int, test_fraction: float) -> Dataset:
  """shapes2d, rendered as read, labelled by shape, with its factors and their full grid."""
  factors = shapes2d.all_factors()
  images = shapes2d.RenderedImages(factors, image_size)
  dataset = assemble(shapes2d.NAME, shapes2d.NAME, {"train": (images, factors[:, 0], factors)},
                     shapes2d.SHAPES, test_fraction)
  return dataclasses.replace(dataset, grid=shapes2d.ground_truth(image_size))


def _from_npy(path: pathlib.Path, name: str, image_size: int) -> Dataset:
  """The memmapped `.npy` folder; never resized, which would copy it into RAM."""
  splits, class_names = npy.read(path)
  dataset = assemble(name, str(path), splits, class_names)
  if image_size and dataset.image_shape[:2] != (image_size, image_size):
    raise UsageError(f"{path}: images are {_hwc(dataset.image_shape)}; .npy folders are not "
                     f"resized (image_size={image_size}): resize them ahead of time or set "
                     "--config.image_size=0")
  return dataset


def _from_image_folder(path: pathlib.Path, name: str, image_size: int, test_fraction: float,
                       mode: str, cache_dir) -> Dataset:
  """Decoded afresh, or through the `.npy` cache: the same arrays either way."""
  listings, class_names = image_folder.list_splits(path)
  if not folder_cache.wanted(mode, sum(len(files) for files, _ in listings.values())):
    folder = image_folder.read(path, image_size)
    return assemble(name, str(path), folder.splits, folder.class_names, test_fraction)
  entry = folder_cache.cached(path, image_size, test_fraction, cache_dir=cache_dir,
                              listings=listings, class_names=class_names)
  splits, class_names = npy.read(entry)
  return assemble(name, str(path), splits, class_names)


def load_tfds(tfds_name: str, data_dir: str | None = None, *, name: str | None = None,
              image_size: int = 0, test_fraction: float = _TEST_FRACTION) -> Dataset:
  """Loads tensorflow-datasets' `tfds_name`.

  Prepared in ArrayRecord, it is opened by index and read lazily, without
  TensorFlow (`vae_jax.sources.tfds_records`); else read into memory through
  TensorFlow, preparing it first if needed (`vae_jax.sources.tfds`).

  Raises:
    UsageError: tfds cannot provide the data (saying what to do offline), or the
      dataset is not one of images.
  """
  from vae_jax.sources import tfds_records  # pylint: disable=g-import-not-at-top
  if prepared := tfds_records.open_prepared(tfds_name, data_dir, image_size):  # No TensorFlow.
    return assemble(name or tfds_name, f"tfds:{tfds_name}", *prepared, test_fraction)
  from vae_jax.sources import tfds  # pylint: disable=g-import-not-at-top  # Imports TensorFlow.
  try:
    splits, class_names = tfds.read(tfds_name, data_dir, image_size)
  except tfds.TfdsFailure as e:
    raise UsageError(f"tensorflow-datasets could not load {tfds_name}: {e}; {_TFDS_HINT}") from None
  return assemble(name or tfds_name, f"tfds:{tfds_name}", splits, class_names, test_fraction)


def _resized(dataset: Dataset, image_size: int) -> Dataset:
  """`dataset` with every image centre-cropped and resized to image_size x image_size."""
  if not image_size:
    return dataset
  resize = lambda s: Split(pixels.resize(s.images, image_size), s.labels, s.factors)
  grid = dataset.grid and dataset.grid.resized(image_size)
  return dataclasses.replace(dataset, train=resize(dataset.train), test=resize(dataset.test),
                             grid=grid)


# ----------------------------------------------------------------------------
# Splits.


def assemble(name: str, where: str, splits: dict[str, tuple[np.ndarray, np.ndarray]],
             class_names: tuple[str, ...] | None = None,
             test_fraction: float = _TEST_FRACTION) -> Dataset:
  """A checked Dataset from a source's splits, splitting off a test set if it has none.

  Args:
    name: the dataset's name.
    where: names the source in error messages.
    splits: "train" and optionally "test": (images `(N, H, W, C)` uint8,
      labels `(N,)` int32[, factors `(N, F)` int32]).
    class_names: label names, or None.
    test_fraction: the share of "train" that becomes the test set when
      there is no "test".

  Raises:
    UsageError: an empty split, images that are not 1 or 3 channels, or
      train and test images of different shapes.
  """
  if "test" in splits:
    train, test = Split(*splits["train"]), Split(*splits["test"])
  else:
    train, test = split_off_test(Split(*splits["train"]), test_fraction, where)
  for split, part in (("train", train), ("test", test)):
    if not len(part.images):
      raise UsageError(f"{where}: the {split} split holds no images")
  shape = train.images.shape[1:]
  if shape[2] not in (1, 3):
    raise UsageError(f"{where}: images of {shape[2]} channels; expected 1 (grey) or 3 (colour)")
  if test.images.shape[1:] != shape:
    raise UsageError(f"{where}: train images are {_hwc(shape)} but test images are "
                     f"{_hwc(test.images.shape[1:])}")
  return Dataset(name, train, test, class_names)


def split_off_test(split: Split, fraction: float, where: str = "data") -> tuple[Split, Split]:
  """Splits `split` into (train, test), test holding round(N * fraction) images.

  The test images are drawn by a permutation seeded with SPLIT_SEED; both
  parts keep the order of `split`.

  Raises:
    UsageError: too few images for both parts to be non-empty.
  """
  is_test = test_mask(len(split.images), fraction, where)
  return split.take(~is_test), split.take(is_test)


def subset_train(dataset: Dataset, size: int) -> Dataset:
  """`dataset` with a fixed random subset of `size` training images (0: all), in their order.

  The subset is the first `size` of a permutation seeded with SUBSET_SEED, so
  a larger subset holds every smaller one; labels and factors follow, and the
  test split and `grid` stay whole. Only the chosen images of a memmap are read.

  Raises:
    UsageError: `size` exceeds the training images.
  """
  total = len(dataset.train.images)
  if not size:
    return dataset
  if size > total:
    raise UsageError(f"train_subset={size:,} exceeds the {total:,} training images of "
                     f"{dataset.name}; choose at most {total:,}, or 0 for all")
  rows = np.sort(np.random.default_rng(SUBSET_SEED).permutation(total)[:size])
  return dataclasses.replace(dataset, train=dataset.train.take(rows))


def ground_truth(dataset: Dataset) -> factors_lib.GroundTruth:
  """The observations of `dataset`'s full factor grid: `factor_names`, `factor_sizes` and
  `images(factors)` (`vae_jax.sources.factors.GroundTruth`), whatever its splits hold.

  Raises:
    UsageError: the data has no known factors.
  """
  if dataset.grid is None:
    raise UsageError(f"{dataset.name} has no known factors of variation; use "
                     f"--config.dataset={shapes2d.NAME}, or data_dir pointing at the dSprites "
                     f"file {dsprites.FILE_NAME}")
  return dataset.grid


def _hwc(shape) -> str:
  return "x".join(map(str, shape))


# ----------------------------------------------------------------------------
# Memory.


def check_fits(dataset: Dataset, devices: Sequence[jax.Device] | None = None, *,
               train_copies: int = 1) -> None:
  """Raises UsageError if the uint8 train + test images would not fit in device memory.

  The images are taken to be sharded evenly over `devices` (default: all),
  as training does. An accelerator is checked against its free memory
  (`memory_stats()`: bytes_limit - bytes_in_use); CPU devices, whose copy
  lives in host RAM next to the numpy arrays, against the host's available
  memory (/proc/meminfo's MemAvailable, else sysconf). Training also needs
  room for the parameters and one shuffled copy of the training set per epoch,
  so passing is necessary, not sufficient.

  Args:
    dataset: the loaded data.
    devices: the devices the data will be sharded over.
    train_copies: copies of the training images to count: 2 with the epoch's
      shuffled copy (`streaming.choose_placement`), 0 when they are streamed.
  """
  devices = list(devices or jax.devices())
  need = train_copies * dataset.train.images.nbytes + dataset.test.images.nbytes
  share = -(-need // len(devices))
  spread = f", over {len(devices)} devices" if len(devices) > 1 else ""
  copies = {0: "test ", 1: ""}.get(train_copies, f"{train_copies} x train + test ")
  what = (f"the {copies}images ({_size(need)} uint8: train {_size(dataset.train.images.nbytes)} + "
          f"test {_size(dataset.test.images.nbytes)}{spread})")
  host_need = 0
  for device in devices:
    if device.process_index != jax.process_index():
      continue
    stats = device.memory_stats() or {}
    if "bytes_limit" not in stats:
      host_need += share
    elif share > stats["bytes_limit"] - stats.get("bytes_in_use", 0):
      free = stats["bytes_limit"] - stats.get("bytes_in_use", 0)
      raise UsageError(f"{what} do not fit on {device}: {_size(share)} needed, {_size(free)} "
                       "free; use --config.image_size=S for smaller images, or fewer of them")
  free = _host_available_bytes()
  if host_need and free is not None and host_need > free:
    raise UsageError(f"{what} do not fit in host memory: {_size(host_need)} needed, "
                     f"{_size(free)} available; use --config.image_size=S for smaller images, "
                     "or fewer of them")


def _host_available_bytes() -> int | None:
  """Available host RAM: MemAvailable (counts reclaimable caches), else free pages, else None."""
  try:
    with open("/proc/meminfo") as f:
      for line in f:
        if line.startswith("MemAvailable:"):
          return int(line.split()[1]) * 1024
  except OSError:
    pass
  try:
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
  except (ValueError, OSError, AttributeError):
    return None


def _size(num_bytes: int) -> str:
  if num_bytes >= 2**30:
    return f"{num_bytes / 2**30:.2f} GiB"
  return f"{num_bytes / 2**20:.1f} MiB"


# ----------------------------------------------------------------------------
# Pixels on the device.


def num_classes(dataset: Dataset) -> int:
  """K of a dataset labelled 0 .. K - 1 throughout, for a conditional model: the largest
  label + 1 (or the count of class names, when the source names more).

  Raises:
    UsageError: some or all images have no label (-1).
  """
  missing = sum(int(np.sum(s.labels < 0)) for s in (dataset.train, dataset.test))
  total = len(dataset.train.labels) + len(dataset.test.labels)
  if missing:
    which = "has no labels" if missing == total else f"has {missing:,} images without a label"
    raise UsageError(f"conditional=True needs a label for every image, and {dataset.name} "
                     f"{which} (labels come from IDX label files, an .npz's y_train and "
                     "y_test, train_labels.npy and test_labels.npy beside an .npy folder's "
                     "images, class folders, or a tfds ClassLabel)")
  top = max(int(dataset.train.labels.max()), int(dataset.test.labels.max()))
  return max(top + 1, len(dataset.class_names or ()))


def examples(split: Split, conditional: bool) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
  """What training and evaluation take of a split: its uint8 images (N, H, W, C), or for a
  conditional model the pair (images, int32 labels (N,)), which every step indexes alike."""
  return (split.images, split.labels.astype(np.int32)) if conditional else split.images


def unpack(examples) -> tuple[jax.Array, jax.Array | None]:
  """(images, labels) of `examples` (see `examples`); labels None for images alone."""
  return tuple(examples) if isinstance(examples, (tuple, list)) else (examples, None)


def to_unit_interval(images: jax.Array) -> jax.Array:
  """uint8 pixels, any shape -> float32 in [0, 1] (x / 255: 0 -> 0.0, 255 -> 1.0)."""
  # Scaled as one flat row per image and reshaped back: XLA then compiles the
  # MLP's training step exactly as when images were flat vectors, which keeps
  # its results bit-identical to those of earlier versions.
  flat = images.reshape(images.shape[0], -1) if images.ndim > 1 else images
  return (flat.astype(jnp.float32) / 255.0).reshape(images.shape)


def binarize(key: jax.Array, x: jax.Array) -> jax.Array:
  """Dynamic binarisation: each pixel is 1 with probability x (Salakhutdinov & Murray)."""
  return jax.random.bernoulli(key, x).astype(x.dtype)
