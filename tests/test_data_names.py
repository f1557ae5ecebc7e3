"""The name results carry: from the data when `dataset` is not given; the offline default."""
import gzip
import hashlib
import pathlib
import shutil

import numpy as np
import pytest

from vae_jax import data
from vae_jax import download
from vae_jax.configs import default

FASHION_DIR = pathlib.Path("/usr/share/datasets/fashion-mnist")


def _config(**overrides):
  config = default.get_config()
  config.update(overrides)
  return config


def test_the_default_config_names_no_dataset():
  assert default.get_config().dataset == ""


def test_the_shipped_digits_are_recognised_by_checksum_wherever_they_lie(tmp_path):
  """Copied, renamed and decompressed: still mnist_sample, not the folder's name."""
  folder = tmp_path / "my_copy"
  folder.mkdir()
  for path in data.SAMPLE_DIR.glob("*.gz"):
    (folder / path.stem).write_bytes(gzip.decompress(path.read_bytes()))
  dataset = data.load(_config(data_dir=str(folder)))
  assert dataset.name == "mnist_sample" and dataset.train.images.shape == (8004, 28, 28, 1)


@pytest.mark.skipif(not FASHION_DIR.is_dir(), reason="needs Debian's dataset-fashion-mnist")
def test_debians_fashion_mnist_is_named_fashion_mnist():
  """Debian re-compressed the files: recognised by the digests of their content."""
  assert data.name_of(FASHION_DIR) == "fashion_mnist"


def test_registered_download_digests_name_the_files(tmp_path, monkeypatch):
  """Files with the .gz digests download.py registers are that data set (as tfds' MNIST)."""
  shutil.copytree(data.SAMPLE_DIR, tmp_path / "idx")
  sources = {path.name: download.Source((), hashlib.sha256(path.read_bytes()).hexdigest(), 0)
             for path in (tmp_path / "idx").glob("*.gz")}
  monkeypatch.setitem(download.SOURCES, "mnist", sources)
  assert data.name_of(tmp_path / "idx") == "mnist"


def test_other_idx_files_are_named_after_their_folder(tmp_path):
  folder = tmp_path / "idx_digits"
  shutil.copytree(data.SAMPLE_DIR, folder)
  labels = folder / "t10k-labels-idx1-ubyte.gz"
  content = bytearray(gzip.decompress(labels.read_bytes()))
  content[-1] = (content[-1] + 1) % 10  # One label changed: no longer the shipped files.
  labels.write_bytes(gzip.compress(bytes(content)))
  assert data.load(_config(data_dir=str(folder))).name == "idx_digits"
  assert data.load(_config(data_dir=f"{folder}/")).name == "idx_digits"


def test_an_npz_is_named_after_its_file_and_an_image_folder_after_itself(tmp_path):
  sample = data.load_idx_dir(data.SAMPLE_DIR)
  x = sample.test.images[:40, ..., 0]
  np.savez(tmp_path / "keras_digits.npz", x_train=x[:30], x_test=x[30:])
  assert data.load(_config(data_dir=str(tmp_path / "keras_digits.npz"))).name == "keras_digits"
  assert data.load(_config(data_dir=str(tmp_path))).name == "keras_digits"  # The folder's file.
  from PIL import Image  # pylint: disable=g-import-not-at-top
  pictures = tmp_path / "holiday_pictures"
  pictures.mkdir()
  for i, image in enumerate(x):
    Image.fromarray(image).save(pictures / f"{i}.png")
  assert data.load(_config(data_dir=str(pictures))).name == "holiday_pictures"


def test_a_given_name_wins_over_the_data(tmp_path):
  assert data.load(_config(dataset="digits", data_dir=str(data.SAMPLE_DIR))).name == "digits"


def _offline(name, cache_dir, **kwargs):
  raise download.Offline(f"cannot download {name}: no mirror reachable (...)",
                         "storage.googleapis.com: timed out")


def test_offline_the_default_is_the_shipped_digits_said_in_one_line(monkeypatch):
  monkeypatch.setattr(download, "fetch", _offline)
  said = []
  dataset = data.load(_config(), say=said.append)
  assert dataset.name == "mnist_sample" and dataset.train.images.shape == (8004, 28, 28, 1)
  assert len(said) == 1 and "\n" not in said[0]
  assert said[0].startswith("offline (storage.googleapis.com: timed out): training on mnist_sample")
  assert "full MNIST" in said[0] and "--config.data_dir" in said[0]


def test_offline_an_explicit_mnist_is_still_refused(monkeypatch):
  monkeypatch.setattr(download, "fetch", _offline)
  with pytest.raises(download.Offline, match="no mirror reachable"):
    data.load(_config(dataset="mnist"), say=pytest.fail)


def test_online_the_default_is_mnist(monkeypatch, tmp_path):
  """A reachable mirror (here: a cache folder holding the files) gives full MNIST's name."""
  monkeypatch.setattr(download, "fetch", lambda name, cache_dir, **kw: data.SAMPLE_DIR)
  assert data.load(_config(), say=pytest.fail).name == "mnist"


def _npz(tmp_path):
  path = tmp_path / "strokes.npz"
  rng = np.random.default_rng(0)
  np.savez(path, x_train=rng.integers(0, 256, (40, 8, 8), np.uint8),
           x_test=rng.integers(0, 256, (10, 8, 8), np.uint8))
  return path, "strokes"


def _npy(tmp_path):
  folder = tmp_path / "my_arrays"
  folder.mkdir()
  rng = np.random.default_rng(1)
  np.save(folder / "train.npy", rng.integers(0, 256, (40, 8, 8, 1), np.uint8))
  np.save(folder / "test.npy", rng.integers(0, 256, (10, 8, 8, 1), np.uint8))
  return folder, "my_arrays"


def _pngs(tmp_path):
  from PIL import Image  # pylint: disable=g-import-not-at-top
  folder = tmp_path / "my_photos"
  folder.mkdir()
  rng = np.random.default_rng(2)
  for i in range(20):
    Image.fromarray(rng.integers(0, 256, (8, 8), np.uint8)).save(folder / f"{i}.png")
  return folder, "my_photos"


def _idx(tmp_path):
  """The shipped digits with one label changed: no longer mnist_sample by checksum."""
  folder = tmp_path / "pen_digits"
  shutil.copytree(data.SAMPLE_DIR, folder)
  labels = folder / "t10k-labels-idx1-ubyte.gz"
  content = bytearray(gzip.decompress(labels.read_bytes()))
  content[-1] = (content[-1] + 1) % 10
  labels.write_bytes(gzip.compress(bytes(content)))
  return folder, "pen_digits"


@pytest.mark.parametrize("source", [_npz, _npy, _pngs, _idx])
def test_a_named_configs_dataset_does_not_name_other_data(tmp_path, source):
  """tiny names mnist_sample; with data_dir elsewhere the data is named after what is read."""
  from vae_jax.configs import tiny  # pylint: disable=g-import-not-at-top
  path, name = source(tmp_path)
  config = tiny.get_config()
  assert config.dataset == "mnist_sample"
  config.data_dir = str(path)
  assert data.load(config).name == name


def test_a_named_configs_dataset_names_that_data_set_wherever_it_lies(tmp_path):
  from vae_jax.configs import tiny  # pylint: disable=g-import-not-at-top
  folder = tmp_path / "copy"
  shutil.copytree(data.SAMPLE_DIR, folder)
  config = tiny.get_config()
  config.data_dir = str(folder)
  assert data.load(config).name == "mnist_sample"
  config.dataset, config.data_dir = "my_name", str(_npy(tmp_path)[0])  # The user's own name.
  assert data.load(config).name == "my_name"
