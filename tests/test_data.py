"""Input: the IDX reader on real files, its errors, and the tfds path."""
import gzip
import pathlib
import shutil

import numpy as np
import pytest

from vae_jax import data
from vae_jax.errors import UsageError

FASHION_DIR = pathlib.Path("/usr/share/datasets/fashion-mnist")


def _config(**overrides):
  from vae_jax.configs import default  # pylint: disable=g-import-not-at-top
  config = default.get_config()
  config.update(overrides)
  return config


def test_mnist_sample_is_real_mnist_with_a_fixed_split():
  ds = data.load(_config(dataset="mnist_sample"))
  assert ds.train.images.shape == (8004, 28, 28, 1) and ds.test.images.shape == (1996, 28, 28, 1)
  assert ds.train.images.dtype == np.uint8 and ds.image_shape == (28, 28, 1)
  assert np.bincount(ds.train.labels).tolist() == [801, 902, 793, 826, 784, 691, 812, 856, 756, 783]
  assert np.bincount(ds.test.labels).tolist() == [200, 225, 198, 206, 196, 172, 202, 214, 188, 195]
  # Real digits: dark background, bright strokes, about a fifth of the pixels inked.
  assert ds.train.images[:, 0, :].max() == 0
  assert 0.1 < (ds.train.images > 127).mean() < 0.25
  # Ones are thinner than zeros.
  ink = lambda d: (ds.train.images[ds.train.labels == d] > 127).mean()
  assert ink(1) < 0.6 * ink(0)
  # No test image is also a training image.
  train_rows = {row.tobytes() for row in ds.train.images}
  assert not any(row.tobytes() in train_rows for row in ds.test.images)


@pytest.mark.skipif(not FASHION_DIR.is_dir(), reason="needs Debian's dataset-fashion-mnist")
def test_reads_debian_fashion_mnist():
  ds = data.load(_config(dataset="fashion_mnist", data_dir=str(FASHION_DIR)))
  assert ds.train.images.shape == (60000, 28, 28, 1) and ds.test.images.shape == (10000, 28, 28, 1)
  assert np.bincount(ds.train.labels).tolist() == [6000] * 10
  assert np.bincount(ds.test.labels).tolist() == [1000] * 10


def test_reads_uncompressed_idx_files(tmp_path):
  for name in data.SAMPLE_DIR.glob("*.gz"):
    (tmp_path / name.stem).write_bytes(gzip.decompress(name.read_bytes()))
  ds = data.load_idx_dir(tmp_path)
  ref = data.load_idx_dir(data.SAMPLE_DIR)
  np.testing.assert_array_equal(ds.test.images, ref.test.images)
  np.testing.assert_array_equal(ds.train.labels, ref.train.labels)


@pytest.fixture
def sample_copy(tmp_path):
  """A writable copy of the mnist_sample IDX folder."""
  folder = tmp_path / "idx"
  shutil.copytree(data.SAMPLE_DIR, folder)
  return folder


def _rewrite(path: pathlib.Path, edit) -> None:
  path.write_bytes(gzip.compress(edit(gzip.decompress(path.read_bytes()))))


@pytest.mark.parametrize("breakage, message", [
    (lambda d: (d / "t10k-labels-idx1-ubyte.gz").unlink(), "lacks t10k-labels-idx1-ubyte.gz"),
    (lambda d: _rewrite(d / "train-images-idx3-ubyte.gz", lambda b: b"\x12\x34" + b[2:]),
     "not an IDX file"),
    (lambda d: _rewrite(d / "train-images-idx3-ubyte.gz", lambda b: b[:-100]), "truncated"),
    (lambda d: _rewrite(d / "t10k-labels-idx1-ubyte.gz", lambda b: b[:6]), "truncated IDX header"),
    (lambda d: (d / "train-labels-idx1-ubyte.gz").write_bytes(b"not gzip at all"),
     "cannot read"),
    (lambda d: shutil.copy(d / "t10k-labels-idx1-ubyte.gz", d / "t10k-images-idx3-ubyte.gz"),
     "expected rank 3"),
    (lambda d: shutil.copy(d / "train-labels-idx1-ubyte.gz", d / "t10k-labels-idx1-ubyte.gz"),
     "1996 images but t10k-labels-idx1-ubyte has 8004 labels"),
])
def test_broken_idx_folders_raise_usage_errors(sample_copy, breakage, message):
  breakage(sample_copy)
  with pytest.raises(UsageError, match=message):
    data.load(_config(dataset="mnist", data_dir=str(sample_copy)))


def test_missing_data_dir_and_unknown_dataset():
  with pytest.raises(UsageError, match="is not a folder"):
    data.load(_config(data_dir="/nonexistent/folder"))
  with pytest.raises(UsageError, match="unknown dataset 'cifar'"):
    data.load(_config(dataset="cifar"))


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_tfds_path_with_mock_data(name):
  tfds = pytest.importorskip("tensorflow_datasets")
  pytest.importorskip("tensorflow")
  with tfds.testing.mock_data(num_examples=24):
    ds = data.load(_config(dataset=name))
  assert ds.name == name
  assert ds.train.images.shape == (24, 28, 28, 1) and ds.train.images.dtype == np.uint8
  assert ds.test.images.shape == (24, 28, 28, 1) and ds.test.labels.shape == (24,)
  assert ds.train.labels.max() < 10


def test_tfds_offline_download_names_the_offline_options(tmp_path, monkeypatch):
  """A real download attempt with no network (tfds retries cut to zero to be quick)."""
  pytest.importorskip("tensorflow_datasets")
  from tensorflow_datasets.core.download import downloader  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(downloader, "MAX_RETRIES", 0)
  with pytest.raises(UsageError) as error:
    data.load(_config(dataset="mnist", tfds_data_dir=str(tmp_path)))
  message = str(error.value)
  assert "could not load mnist" in message
  assert "dataset=mnist_sample" in message and "data_dir" in message
  assert "\n" not in message
