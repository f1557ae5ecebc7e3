"""Any tensorflow-datasets image dataset, as numpy arrays.

Imports TensorFlow (tfds needs it to prepare and read data) and hides the
accelerators from it first, as the Flax examples do, so that it leaves the
GPU's memory to JAX. The images come from the dataset's `image` feature (or
its only Image feature), channels kept; labels from a `label` ClassLabel,
-1 without one. The test set is the `test` split, else `validation`; a
dataset with neither has only "train" here (`vae_jax.data` then splits off a
test set).
"""
import numpy as np

from vae_jax.errors import UsageError
from vae_jax.sources import pixels

BATCH = 1000  # Examples converted at once: bounds the memory of resizing.


class TfdsFailure(Exception):
  """tensorflow-datasets itself failed (not installed, no network, unknown name)."""


def read(name: str, data_dir: str | None = None, image_size: int = 0
         ) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], tuple[str, ...] | None]:
  """Loads the train and test (or validation) splits of tfds dataset `name`.

  Args:
    name: a tfds name, with config or version if wanted ("celeb_a", "mnist:3.*.*").
    data_dir: where tfds keeps prepared data; None for its default.
    image_size: S > 0 resizes every image to S x S (centre crop); 0 keeps sizes.

  Returns:
    ({"train": (images, labels), maybe "test": ...}, class names or None):
    images `(N, H, W, C)` uint8, labels `(N,)` int32.

  Raises:
    TfdsFailure: tfds could not provide the data (the caller words the hint).
    UsageError: the dataset has no image feature, or images of varying size
      with image_size = 0.
  """
  tfds = _import_tfds()
  try:
    builder = tfds.builder(name, data_dir=data_dir)
    builder.download_and_prepare()
  except Exception as e:  # pylint: disable=broad-except
    # tfds raises many types (requests, tf, its own); all mean "no data".
    raise TfdsFailure(_first_line(e)) from None
  image_key, label_key = feature_keys(builder.info.features, name)
  shape = builder.info.features[image_key].shape
  if None in shape[:2] and not image_size:
    raise UsageError(f"tfds:{name} has images of varying size {shape}; set "
                     "--config.image_size=S to crop and resize them to S x S")
  splits = {}
  for split, tfds_split in _split_names(builder).items():
    splits[split] = _read_split(tfds, builder, tfds_split, image_key, label_key, image_size)
  names = tuple(builder.info.features[label_key].names) if label_key else None
  return splits, names


def _import_tfds():
  """tensorflow_datasets, with TensorFlow kept off the accelerators."""
  try:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise TfdsFailure(f"needs tensorflow and tensorflow-datasets ({e})") from None
  try:
    tf.config.set_visible_devices([], "GPU")
  except RuntimeError:
    pass  # TensorFlow was initialised earlier, by someone else's choice.
  return tfds


def feature_keys(features, name: str) -> tuple[str, str | None]:
  """(the image feature's key, the ClassLabel `label` key or None) of a builder's
  `info.features`; imports tensorflow_datasets only, not TensorFlow (also for
  `sources.tfds_records`)."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  keys = list(features.keys())
  images = [k for k in keys if isinstance(features[k], tfds.features.Image)]
  if "image" in images:
    image_key = "image"
  elif len(images) == 1:
    image_key = images[0]
  else:
    raise UsageError(f"tfds:{name} has {'no' if not images else 'several'} image features "
                     f"({', '.join(images or keys)}); choose a dataset of images")
  label = features["label"] if "label" in keys else None
  label_key = "label" if isinstance(label, tfds.features.ClassLabel) else None
  return image_key, label_key


def _split_names(builder) -> dict[str, str]:
  """Our splits -> tfds split names. Unknown split lists (mock data) give train and test."""
  available = set(builder.info.splits.keys())
  if not available:
    return {"train": "train", "test": "test"}
  if "train" not in available:
    raise UsageError(f"tfds:{builder.name} has no train split (it has "
                     f"{', '.join(sorted(available))})")
  for test in ("test", "validation"):
    if test in available:
      return {"train": "train", "test": test}
  return {"train": "train"}


def _read_split(tfds, builder, split: str, image_key: str, label_key: str | None,
                image_size: int) -> tuple[np.ndarray, np.ndarray]:
  """(images `(N, H, W, C)` uint8, labels `(N,)` int32) of one tfds split."""
  try:
    ds = builder.as_dataset(split=split, shuffle_files=False)
    ds = ds.map(lambda ex: (ex[image_key], ex[label_key] if label_key else -1))
    fixed = None not in builder.info.features[image_key].shape
    # Batches, not batch_size=-1: the latter needs split sizes that mock data lacks.
    batches = tfds.as_numpy(ds.batch(BATCH) if fixed else ds)
    images, labels = [], []
    for image, label in batches:
      if not fixed:  # One example of its own size.
        image, label = image[None], np.asarray(label)[None]
      images.append(pixels.resize(image, image_size) if image_size else image)
      labels.append(np.asarray(label, np.int32))
  except UsageError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    raise TfdsFailure(f"reading split {split}: {_first_line(e)}") from None
  if not images:
    raise UsageError(f"tfds:{builder.name} split {split} holds no examples")
  return np.concatenate(images), np.concatenate(labels)


def _first_line(e: BaseException) -> str:
  return str(e).splitlines()[0][:200] if str(e) else type(e).__name__
