"""Input: MNIST-like datasets as uint8 numpy arrays, from IDX files or tfds.

Three sources, chosen by the config:
  * `dataset=mnist_sample`: 10,000 real MNIST digits shipped with the package;
  * `data_dir=DIR`: the four standard IDX files in DIR (gzipped or not), read
    with numpy alone: no network, no TensorFlow;
  * otherwise `dataset=mnist|fashion_mnist` through tensorflow-datasets,
    imported only then.
Images stay uint8 on the host and on the device; `to_unit_interval` scales
them to [0, 1] inside the jitted step.
"""
import dataclasses
import gzip
import pathlib
import struct
import zlib

import jax
import jax.numpy as jnp
import numpy as np

from vae_jax.errors import UsageError

DATASETS = ("mnist", "fashion_mnist", "mnist_sample")
SAMPLE_DIR = pathlib.Path(__file__).parent / "datasets" / "mnist_sample"
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
# IDX type codes (http://yann.lecun.com/exdb/mnist/), all big-endian.
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_OFFLINE_HINT = ("offline, use --config.dataset=mnist_sample (shipped) or "
                 "--config.data_dir=DIR holding the four IDX files")


@dataclasses.dataclass(frozen=True)
class Split:
  """One split: `images` (N, H, W, C) uint8 (C = 1 for grey) and `labels` (N,) int32."""

  images: np.ndarray
  labels: np.ndarray


@dataclasses.dataclass(frozen=True)
class Dataset:
  name: str
  train: Split
  test: Split

  @property
  def image_shape(self) -> tuple[int, int, int]:
    """(H, W, C) of one image."""
    return tuple(self.train.images.shape[1:])


def load(config) -> Dataset:
  """Loads the dataset a config names (fields `dataset`, `data_dir`, `tfds_data_dir`).

  Raises:
    UsageError: unknown dataset, unreadable or malformed IDX files, or tfds
      unable to provide the data.
  """
  if config.dataset not in DATASETS:
    raise UsageError(f"unknown dataset {config.dataset!r}; choose one of {', '.join(DATASETS)}")
  if config.dataset == "mnist_sample":
    if config.data_dir:
      raise UsageError("dataset=mnist_sample is shipped with the package; leave data_dir empty")
    return load_idx_dir(SAMPLE_DIR, name="mnist_sample")
  if config.data_dir:
    return load_idx_dir(config.data_dir, name=config.dataset)
  return load_tfds(config.dataset, config.tfds_data_dir or None)


def load_idx_dir(data_dir, name: str = "idx") -> Dataset:
  """Reads the four standard IDX files (`.gz` or uncompressed) from `data_dir`."""
  data_dir = pathlib.Path(data_dir)
  if not data_dir.is_dir():
    raise UsageError(f"data_dir {str(data_dir)!r} is not a folder")
  splits = {}
  for split, (images_name, labels_name) in IDX_FILES.items():
    images = read_idx(_find_idx(data_dir, images_name), ndim=3)
    labels = read_idx(_find_idx(data_dir, labels_name), ndim=1)
    if len(images) != len(labels):
      raise UsageError(f"{data_dir}: {images_name} has {len(images)} images but "
                       f"{labels_name} has {len(labels)} labels")
    splits[split] = Split(images.astype(np.uint8)[..., None], labels.astype(np.int32))
  if splits["train"].images.shape[1:] != splits["test"].images.shape[1:]:
    raise UsageError(f"{data_dir}: train and test images differ in shape")
  return Dataset(name, splits["train"], splits["test"])


def _find_idx(data_dir: pathlib.Path, stem: str) -> pathlib.Path:
  for path in (data_dir / f"{stem}.gz", data_dir / stem):
    if path.is_file():
      return path
  wanted = ", ".join(f"{a}.gz, {b}.gz" for a, b in IDX_FILES.values())
  raise UsageError(f"data_dir {str(data_dir)!r} lacks {stem}.gz (it needs {wanted})")


def read_idx(path, ndim: int | None = None) -> np.ndarray:
  """Parses one IDX file (gzipped if its name ends in .gz) into a numpy array.

  Raises:
    UsageError: not gzip or not IDX (bad magic), truncated, or of the wrong rank.
  """
  path = pathlib.Path(path)
  try:
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
  except (OSError, EOFError, zlib.error) as e:
    raise UsageError(f"{path}: cannot read ({e})") from None
  if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] not in _IDX_DTYPES:
    raise UsageError(f"{path}: not an IDX file (bad magic number {raw[:4].hex() or 'empty'})")
  rank = raw[3]
  if ndim is not None and rank != ndim:
    raise UsageError(f"{path}: IDX file of rank {rank}, expected rank {ndim}")
  if len(raw) < 4 + 4 * rank:
    raise UsageError(f"{path}: truncated IDX header")
  shape = struct.unpack(f">{rank}I", raw[4:4 + 4 * rank])
  dtype = np.dtype(_IDX_DTYPES[raw[2]])
  body = raw[4 + 4 * rank:]
  expected = int(np.prod(shape)) * dtype.itemsize
  if len(body) != expected:
    raise UsageError(f"{path}: truncated or padded IDX data ({len(body)} bytes for shape "
                     f"{shape}, expected {expected})")
  return np.frombuffer(body, dtype).reshape(shape)


def load_tfds(name: str, data_dir: str | None = None) -> Dataset:
  """Loads `name` (mnist or fashion_mnist) through tensorflow-datasets.

  tfds downloads and prepares the data on first use, which needs network and
  TensorFlow; every failure becomes a UsageError naming the offline options.
  """
  try:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise UsageError(f"dataset={name} needs tensorflow-datasets ({e}); {_OFFLINE_HINT}") from None
  try:
    splits = {split: _tfds_split(tfds, name, split, data_dir) for split in ("train", "test")}
  except Exception as e:  # pylint: disable=broad-except
    # tfds raises many types (requests, tf, its own); all mean "no data".
    reason = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
    raise UsageError(f"tensorflow-datasets could not load {name}: {reason}; {_OFFLINE_HINT}") from None
  return Dataset(name, splits["train"], splits["test"])


def _tfds_split(tfds, name: str, split: str, data_dir: str | None) -> Split:
  ds = tfds.load(name, split=split, data_dir=data_dir, shuffle_files=False)
  # Batches, not batch_size=-1: the latter needs split sizes that mock data lacks.
  batches = list(tfds.as_numpy(ds.batch(10_000)))
  images = np.concatenate([b["image"] for b in batches])
  labels = np.concatenate([b["label"] for b in batches])
  if images.ndim == 3:
    images = images[..., None]
  return Split(images.astype(np.uint8), labels.astype(np.int32))


def to_unit_interval(images: jax.Array) -> jax.Array:
  """uint8 images (N, ...) -> float32 in [0, 1]: x / 255, so 0 and 255 map exactly to 0 and 1."""
  # Scaled as one flat row per image and reshaped back: XLA then compiles the
  # MLP's training step exactly as when images were flat vectors, which keeps
  # its results bit-identical to those of earlier versions.
  flat = images.reshape(images.shape[0], -1) if images.ndim > 1 else images
  return (flat.astype(jnp.float32) / 255.0).reshape(images.shape)


def binarize(key: jax.Array, x: jax.Array) -> jax.Array:
  """Dynamic binarisation: each pixel is 1 with probability x (Salakhutdinov & Murray)."""
  return jax.random.bernoulli(key, x).astype(x.dtype)
