"""A tensorflow-datasets data set prepared in ArrayRecord, read by index without TensorFlow.

    ds = tfds.builder("cifar10", file_format="array_record"); ds.download_and_prepare()
    # or: tfds build cifar10 --file_format=array_record

A data set prepared so is opened as tfds data sources (`builder.as_data_source`,
what `tfds.data_source` returns: random access
into the ArrayRecord files; reading needs tensorflow-datasets and
array_record, not TensorFlow). Its images stay on disk: `RecordImages` has
the shape, dtype, length and indexing of a uint8 array `(N, H, W, C)` and
decodes only the records asked for, so `vae_jax.streaming` reads it batch by
batch like an `.npy` memmap; `np.asarray` of it (what a device-resident run
does) decodes all of it. Labels (small) are read once, with the image
decoding skipped; images are decoded with PIL as they are read. The test
split is `test`, else `validation`; without either, `vae_jax.data` splits off
a test set by index (`RecordImages.subset`), still without decoding anything.

A data set prepared in TFRecord (tfds' default) is not opened here:
`vae_jax.sources.tfds` reads it through TensorFlow, into memory.
"""
import concurrent.futures
import io
import os

import numpy as np
import PIL.Image

from vae_jax.errors import UsageError
from vae_jax.sources import lazy
from vae_jax.sources import pixels
from vae_jax.sources import tfds as tfds_source

LABEL_BATCH = 4096  # Records whose labels are read at once.
READ_BATCH = 1024  # Records decoded at once by `np.asarray`.


def open_prepared(name: str, data_dir: str | None = None, image_size: int = 0
                  ) -> tuple[dict, tuple[str, ...] | None] | None:
  """Opens tfds data set `name` when it is prepared in ArrayRecord; None otherwise.

  None too when tensorflow-datasets (or array_record) is missing or the name is
  unknown here: `vae_jax.sources.tfds` then tries, and words the failure.

  Args:
    name: a tfds name, with config or version if wanted ("celeb_a", "mnist:3.*.*").
    data_dir: where tfds keeps prepared data; None for its default.
    image_size: S > 0 resizes every image to S x S (centre crop) as it is read.

  Returns:
    ({"train": (images, labels), maybe "test": ...}, class names or None):
    images `RecordImages` (N, H, W, C) uint8, labels `(N,)` int32 (-1 without
    a ClassLabel `label`).

  Raises:
    UsageError: no image feature, images of varying size with image_size = 0,
      no train split, or records that cannot be read (one line each).
  """
  builder = _prepared_builder(name, data_dir)
  if builder is None:
    return None
  image_key, label_key = tfds_source.feature_keys(builder.info.features, name)
  shape = tuple(builder.info.features[image_key].shape)
  if None in shape[:2] and not image_size:
    raise UsageError(f"tfds:{name} has images of varying size {shape}; set "
                     "--config.image_size=S to crop and resize them to S x S")
  if shape[2] is None:
    raise UsageError(f"tfds:{name} has images of unknown channels {shape}; expected 1 or 3")
  shape = (image_size, image_size, shape[2]) if image_size else shape
  splits = {}
  for split, tfds_split in _split_names(builder).items():
    images = RecordImages(_undecoded(builder, tfds_split, image_key), image_key, shape,
                          image_size, f"tfds:{name} split {tfds_split}")
    splits[split] = images, _labels(builder, tfds_split, image_key, label_key, len(images))
  names = tuple(builder.info.features[label_key].names) if label_key else None
  return splits, names


def _prepared_builder(name: str, data_dir: str | None):
  """The builder of `name` when its prepared data are ArrayRecord files, else None."""
  try:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    builder = tfds.builder(name, data_dir=data_dir)
    if not builder.is_prepared():
      return None
    # The format the data were written in (dataset_info.json), not the builder's default.
    prepared = builder.info.as_proto.file_format
    array_record = tfds.core.file_adapters.FileFormat.ARRAY_RECORD.value
  except Exception:  # pylint: disable=broad-except  # Not ours to word: see open_prepared.
    return None
  return builder if prepared == array_record else None


def _split_names(builder) -> dict[str, str]:
  """Our splits -> tfds split names: test, else validation, else none (split off later)."""
  available = set(builder.info.splits.keys())
  if "train" not in available:
    raise UsageError(f"tfds:{builder.name} has no train split (it has "
                     f"{', '.join(sorted(available)) or 'none'})")
  for test in ("test", "validation"):
    if test in available:
      return {"train": "train", "test": test}
  return {"train": "train"}


def _labels(builder, split: str, image_key: str, label_key: str | None,
            count: int) -> np.ndarray:
  """(count,) int32 labels of one split, the images left undecoded; -1 without labels."""
  if label_key is None:
    return np.full(count, -1, np.int32)
  source = _undecoded(builder, split, image_key)
  labels = np.empty(count, np.int32)
  for start in range(0, count, LABEL_BATCH):
    rows = range(start, min(start + LABEL_BATCH, count))
    records = _get(source, rows, f"tfds:{builder.name} split {split}")
    labels[start:start + len(records)] = [r[label_key] for r in records]
  return labels


def _undecoded(builder, split: str, image_key: str):
  """The split's data source, its images left as the encoded bytes (PNG or JPEG)."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  return builder.as_data_source(split=split, decoders={image_key: tfds.decode.SkipDecoding()})


def _decode(encoded, channels: int) -> np.ndarray:
  """PNG or JPEG bytes -> uint8 (H, W, channels).

  Decoded here with PIL rather than by tfds (whose per-record decoding, also PIL,
  read half as many images per second).
  """
  if isinstance(encoded, np.ndarray) and encoded.dtype == np.uint8 and encoded.ndim == 3:
    return encoded  # Stored undecoded.
  with PIL.Image.open(io.BytesIO(encoded)) as image:
    mode = "L" if channels == 1 else "RGB"
    image = np.asarray(image if image.mode == mode else image.convert(mode))
  return image[..., None] if image.ndim == 2 else image


def _get(source, rows, where: str) -> list:
  """source.__getitems__(rows), any failure of the files one UsageError."""
  try:
    return source.__getitems__(list(rows))
  except Exception as e:  # pylint: disable=broad-except  # array_record raises many types.
    reason = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
    raise UsageError(f"{where}: cannot read its records ({reason}); was the prepared data "
                     "set changed? Prepare it again and rerun the same command") from None


class RecordImages(lazy.LazyRows):
  """The images of one split of ArrayRecord files, as a lazy uint8 array (N, H, W, C).

  Indexing (an int, a slice, an array of indices or a boolean mask) decodes
  those records and returns a numpy array; `read(rows)` is the same for an
  index array; `subset(rows)` is a lazy subset (how a test set is split off);
  `np.asarray` decodes everything.
  """

  def __init__(self, source, image_key: str, shape: tuple[int, int, int], image_size: int,
               where: str, rows: np.ndarray | None = None):
    """
    Args:
      source: a tfds data source of the split, images undecoded (`_undecoded`).
      image_key: the image feature.
      shape: (H, W, C) of an image as read (after resizing).
      image_size: S > 0 resizes each image to S x S; 0 keeps it.
      where: names the split in error messages.
      rows: the source's records this array holds, in order; None: all.
    """
    self._source, self._key, self._image_size, self.where = source, image_key, image_size, where
    self._rows = np.arange(len(source)) if rows is None else np.asarray(rows, np.int64)
    self.shape = (len(self._rows), *shape)
    self.dtype = np.dtype(np.uint8)

  ndim = 4

  @property
  def nbytes(self) -> int:
    return int(np.prod(self.shape))

  def __len__(self) -> int:
    return self.shape[0]

  def subset(self, rows) -> "RecordImages":
    """Images `rows` (indices or a boolean mask), lazily: nothing is decoded."""
    return RecordImages(self._source, self._key, self.shape[1:], self._image_size, self.where,
                        self._rows[rows])

  def read(self, rows) -> np.ndarray:
    """Images `rows` (int (K,)) -> uint8 (K, H, W, C), decoded now.

    Raises:
      UsageError: the records cannot be read (one line).
    """
    rows = np.asarray(rows, np.int64).reshape(-1)
    out = np.empty((len(rows), *self.shape[1:]), np.uint8)
    if not len(rows):
      return out
    channels = self.shape[3]
    for k, record in enumerate(_get(self._source, self._rows[rows].tolist(), self.where)):
      try:
        image = _decode(record[self._key], channels)
      except (OSError, ValueError) as e:  # PIL's errors for bytes that are no image.
        raise UsageError(f"{self.where}: record {self._rows[rows[k]]} holds no readable "
                         f"image ({e}); prepare the data set again") from None
      if self._image_size:
        image = pixels.resize(image[None], self._image_size)[0]
      if image.shape != self.shape[1:]:
        raise UsageError(f"{self.where}: record {self._rows[rows[k]]} holds an image of "
                         f"shape {image.shape}, its features say {self.shape[1:]}")
      out[k] = image
    return out

  def __array__(self, dtype=None, copy=None) -> np.ndarray:
    """All images, decoded in batches on a few threads."""
    del copy  # Always a fresh array.
    starts = range(0, len(self), READ_BATCH)
    with concurrent.futures.ThreadPoolExecutor(min(4, os.cpu_count() or 1)) as pool:
      parts = list(pool.map(lambda s: self.read(np.arange(s, min(s + READ_BATCH, len(self)))),
                            starts))
    images = np.concatenate(parts) if parts else np.empty(self.shape, np.uint8)
    return images if dtype is None else images.astype(dtype)
