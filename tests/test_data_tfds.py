"""Input: tensorflow-datasets through `tfds.testing.mock_data` (needs TensorFlow, in the test extra)."""
import types

import numpy as np
import pytest

from vae_jax import data
from vae_jax.errors import UsageError
from vae_jax.sources import tfds as tfds_source

tfds = pytest.importorskip("tensorflow_datasets")
tf = pytest.importorskip("tensorflow")


def _config(**overrides):
  from vae_jax.configs import default  # pylint: disable=g-import-not-at-top
  config = default.get_config()
  config.update(overrides)
  return config


@pytest.mark.parametrize("dataset, shape", [
    ("tfds:mnist", (28, 28, 1)), ("tfds:fashion_mnist", (28, 28, 1)),
    ("tfds:cifar10", (32, 32, 3)),
])
def test_tfds_keeps_channels(dataset, shape):
  with tfds.testing.mock_data(num_examples=24):
    ds = data.load(_config(dataset=dataset))
  assert ds.name == dataset and ds.image_shape == shape
  assert ds.train.images.shape == (24, *shape) and ds.train.images.dtype == np.uint8
  assert ds.test.images.shape == (24, *shape) and ds.test.labels.shape == (24,)
  assert ds.train.labels.dtype == np.int32 and 0 <= ds.train.labels.min() <= ds.train.labels.max() < 10
  assert len(ds.class_names) == 10


def test_tfds_image_size_and_datasets_without_labels():
  with tfds.testing.mock_data(num_examples=5):
    ds = data.load(_config(dataset="tfds:celeb_a", image_size=16))
  assert ds.train.images.shape == (5, 16, 16, 3) and ds.class_names is None
  assert (ds.train.labels == -1).all()


def test_tfds_images_of_varying_size_need_image_size():
  with tfds.testing.mock_data(num_examples=4):
    with pytest.raises(UsageError, match="tfds:caltech101 has images of varying size .*image_size=S"):
      data.load(_config(dataset="tfds:caltech101"))
    ds = data.load(_config(dataset="tfds:caltech101", image_size=12))
  assert ds.train.images.shape == (4, 12, 12, 3) and ds.class_names[0] == "accordion"


def test_tfds_dataset_without_images_is_refused():
  with tfds.testing.mock_data(num_examples=2):
    with pytest.raises(UsageError, match="tfds:imdb_reviews has no image features .text, label."):
      data.load(_config(dataset="tfds:imdb_reviews"))


def test_tensorflow_is_kept_off_accelerators(monkeypatch):
  hidden = []
  monkeypatch.setattr(tf.config, "set_visible_devices", lambda d, kind: hidden.append((d, kind)))
  with tfds.testing.mock_data(num_examples=2):
    data.load(_config(dataset="tfds:mnist"))
  assert hidden == [([], "GPU")]


def _builder(*splits):
  return types.SimpleNamespace(name="x", info=types.SimpleNamespace(splits=dict.fromkeys(splits)))


def test_test_split_falls_back_to_validation_then_a_fraction_of_train():
  split_names = tfds_source._split_names  # pylint: disable=protected-access
  assert split_names(_builder("train", "test", "validation")) == {"train": "train", "test": "test"}
  assert split_names(_builder("train", "validation")) == {"train": "train", "test": "validation"}
  assert split_names(_builder("train", "extra")) == {"train": "train"}
  with pytest.raises(UsageError, match="no train split"):
    split_names(_builder("test"))


def test_tfds_without_test_split_is_split_by_test_fraction(monkeypatch):
  monkeypatch.setattr(tfds_source, "_split_names", lambda builder: {"train": "train"})
  with tfds.testing.mock_data(num_examples=40):
    ds = data.load(_config(dataset="tfds:cifar10", test_fraction=0.25))
  assert len(ds.train.images) == 30 and len(ds.test.images) == 10


def test_unknown_tfds_name_is_one_line():
  with pytest.raises(UsageError, match="tensorflow-datasets could not load no_such_dataset_xyz: .*"
                                       "tfds_data_dir") as error:
    data.load(_config(dataset="tfds:no_such_dataset_xyz"))
  assert "\n" not in str(error.value)


def test_tfds_offline_download_says_what_to_do(tmp_path, monkeypatch):
  """A real download attempt with no network (tfds retries cut to zero to be quick)."""
  from tensorflow_datasets.core.download import downloader  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(downloader, "MAX_RETRIES", 0)
  with pytest.raises(UsageError) as error:
    data.load(_config(dataset="tfds:mnist", tfds_data_dir=str(tmp_path)))
  message = str(error.value)
  assert "could not load mnist" in message
  assert "tfds_data_dir" in message and "data_dir" in message
  assert "\n" not in message
