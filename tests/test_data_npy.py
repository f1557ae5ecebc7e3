"""`.npy` folders (`vae_jax.sources.npy`) and the image folder cache (`sources.folder_cache`)."""
import errno
import os

import numpy as np
import pytest
from PIL import Image

from vae_jax import data
from vae_jax.configs import tiny
from vae_jax.errors import UsageError
from vae_jax.sources import folder_cache
from vae_jax.sources import image_folder
from vae_jax.sources import npy


def _images(n, shape=(8, 8, 1), seed=0):
  return np.random.default_rng(seed).integers(0, 256, (n, *shape), np.uint8)


@pytest.fixture
def npy_dir(tmp_path):
  folder = tmp_path / "npy"
  folder.mkdir()
  npy.write(folder, {"train": (_images(20), np.arange(20) % 3), "test": (_images(5, seed=1),
                                                                         np.arange(5) % 3)},
            ("a", "b", "c"))
  return folder


# ----------------------------------------------------------------------------
# .npy folders.


def test_an_npy_folder_opens_as_memmaps_without_copying(npy_dir):
  dataset = data.read_path(npy_dir, "mine")
  for split in (dataset.train, dataset.test):
    assert isinstance(split.images, np.memmap) and not split.images.flags.writeable
  np.testing.assert_array_equal(dataset.train.images, _images(20))
  np.testing.assert_array_equal(dataset.test.labels, np.arange(5) % 3)
  assert dataset.class_names == ("a", "b", "c") and dataset.image_shape == (8, 8, 1)


def test_grey_images_without_a_channel_axis_get_one(tmp_path):
  np.save(tmp_path / "train.npy", _images(4)[..., 0])
  np.save(tmp_path / "test.npy", _images(2)[..., 0])
  dataset = data.read_path(tmp_path, "grey")
  assert dataset.train.images.shape == (4, 8, 8, 1)
  assert (dataset.train.labels == -1).all()


@pytest.mark.parametrize("array, message", [
    (np.zeros((4, 8, 8, 1), np.float32), "holds float32 of shape"),
    (np.zeros((4, 64), np.uint8), "holds uint8 of shape \\(4, 64\\)"),
])
def test_wrong_dtype_or_rank_is_one_line(tmp_path, array, message):
  np.save(tmp_path / "train.npy", array)
  np.save(tmp_path / "test.npy", _images(2))
  with pytest.raises(UsageError, match=message):
    data.read_path(tmp_path, "bad")


def test_a_truncated_file_is_one_line(npy_dir):
  path = npy_dir / "train.npy"
  os.truncate(path, os.path.getsize(path) - 1)
  with pytest.raises(UsageError, match="train.npy: is truncated"):
    data.read_path(npy_dir, "bad")


def test_not_an_npy_file_is_one_line(npy_dir):
  (npy_dir / "test.npy").write_bytes(b"hello")
  with pytest.raises(UsageError, match="test.npy: cannot read as .npy"):
    data.read_path(npy_dir, "bad")


def test_label_count_must_match(npy_dir):
  np.save(npy_dir / "train_labels.npy", np.zeros(19, np.int64))
  with pytest.raises(UsageError, match="expected integer labels of shape \\(20,\\)"):
    data.read_path(npy_dir, "bad")


def test_a_missing_test_file_is_one_line(npy_dir):
  os.remove(npy_dir / "test.npy")
  with pytest.raises(UsageError, match="holds train.npy but no test.npy"):
    data.read_path(npy_dir, "bad")


def test_npy_folders_are_not_resized(npy_dir):
  assert data.read_path(npy_dir, "same", image_size=8).image_shape == (8, 8, 1)
  with pytest.raises(UsageError, match="are not resized"):
    data.read_path(npy_dir, "bad", image_size=4)


# ----------------------------------------------------------------------------
# The image folder cache.


def _image_folder(root, n=12, classes=("cat", "dog")):
  images = _images(n, (6, 5, 3), seed=2)
  for i, image in enumerate(images):
    folder = root / classes[i % len(classes)]
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(folder / f"{i:03d}.png")
  return root


@pytest.fixture
def cache_dir(tmp_path):
  return tmp_path / "cache"


def _read(folder, cache_dir, mode="always", **kwargs):
  return data.read_path(folder, "pics", folder_cache=mode, cache_dir=str(cache_dir), **kwargs)


def test_the_cache_gives_the_arrays_of_a_fresh_decode(tmp_path, cache_dir):
  folder = _image_folder(tmp_path / "pics")
  fresh = _read(folder, cache_dir, "never", test_fraction=0.25)
  cached = _read(folder, cache_dir, test_fraction=0.25)
  assert isinstance(cached.train.images, np.memmap)
  for a, b in ((fresh.train, cached.train), (fresh.test, cached.test)):
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.labels, b.labels)
  assert cached.class_names == fresh.class_names == ("cat", "dog")


def _mixed_folder(root, first_shape, other_shape, num_first):
  """Images of `first_shape` (the first `num_first` in load order), then of `other_shape`."""
  root.mkdir(parents=True)
  for i in range(9):
    shape = first_shape if i < num_first else other_shape
    image = _images(1, shape, seed=i)[0]
    Image.fromarray(image[..., 0] if shape[2] == 1 else image).save(root / f"{i:03d}.png")
  return root


@pytest.mark.parametrize("first, other, num_first", [
    ((6, 5, 3), (7, 7, 3), 6),   # The first shape is the majority: the others converted in.
    ((6, 5, 1), (7, 7, 3), 2),   # The first shape is a minority: every file written again.
])
def test_mixed_shapes_give_the_arrays_of_a_fresh_decode(tmp_path, cache_dir, first, other,
                                                        num_first):
  folder = _mixed_folder(tmp_path / "mixed", first, other, num_first)
  fresh = _read(folder, cache_dir, "never", test_fraction=0.3)
  cached = _read(folder, cache_dir, test_fraction=0.3)
  assert cached.image_shape == fresh.image_shape
  np.testing.assert_array_equal(cached.train.images, fresh.train.images)
  np.testing.assert_array_equal(cached.test.images, fresh.test.images)
  entry = folder_cache.entry(folder, 0, 0.3, str(cache_dir))
  assert sorted(p.name for p in entry.iterdir()) == ["meta.json", "test.npy", "train.npy"]


def test_train_and_test_folders_give_the_arrays_of_a_fresh_decode(tmp_path, cache_dir):
  folder = tmp_path / "split"
  _image_folder(folder / "train", 8)
  _image_folder(folder / "test", 4)
  fresh = _read(folder, cache_dir, "never")
  cached = _read(folder, cache_dir)
  for a, b in ((fresh.train, cached.train), (fresh.test, cached.test)):
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.labels, b.labels)


def test_the_cache_is_reused_while_the_folder_is_unchanged(tmp_path, cache_dir, monkeypatch):
  folder = _image_folder(tmp_path / "pics")
  _read(folder, cache_dir)
  monkeypatch.setattr(image_folder, "decode", lambda *a, **k: pytest.fail("decoded again"))
  again = _read(folder, cache_dir)
  assert len(again.train.images) + len(again.test.images) == 12


def test_a_changed_folder_rebuilds_the_cache(tmp_path, cache_dir):
  folder = _image_folder(tmp_path / "pics")
  before = _read(folder, cache_dir, test_fraction=0.25)
  image = _images(1, (6, 5, 3), seed=9)[0]
  Image.fromarray(image).save(folder / "cat" / "000.png")
  os.utime(folder / "cat" / "000.png", ns=(1, 1))  # Whatever the mtime granularity.
  lines = []
  entry = folder_cache.cached(folder, 0, 0.25, cache_dir=str(cache_dir), say=lines.append)
  assert "the folder changed" in lines[0]
  after = data.read_path(entry, "pics")
  assert not np.array_equal(np.asarray(before.train.images), np.asarray(after.train.images)) or \
      not np.array_equal(np.asarray(before.test.images), np.asarray(after.test.images))
  assert [p.name for p in entry.parent.iterdir()] == [entry.name]  # No leftovers.


def test_a_truncated_cache_is_detected_and_rebuilt(tmp_path, cache_dir):
  folder = _image_folder(tmp_path / "pics")
  fresh = _read(folder, cache_dir, "never")
  entry = folder_cache.cached(folder, 0, 0.1, cache_dir=str(cache_dir))
  os.truncate(entry / "train.npy", 200)
  lines = []
  assert folder_cache.cached(folder, 0, 0.1, cache_dir=str(cache_dir), say=lines.append) == entry
  assert "train.npy is 200 bytes, expected" in lines[0]
  np.testing.assert_array_equal(_read(folder, cache_dir).train.images, fresh.train.images)


def test_a_damaged_meta_file_is_rebuilt(tmp_path, cache_dir):
  folder = _image_folder(tmp_path / "pics")
  entry = folder_cache.cached(folder, 0, 0.1, cache_dir=str(cache_dir))
  (entry / folder_cache.META).write_text("{")
  lines = []
  folder_cache.cached(folder, 0, 0.1, cache_dir=str(cache_dir), say=lines.append)
  assert "meta.json is damaged" in lines[0]
  assert folder_cache.open_entry(entry, folder_cache.fingerprint(
      image_folder.list_splits(folder)[0], folder)) is None


def test_a_full_disk_is_one_line_and_leaves_nothing(tmp_path, cache_dir, monkeypatch):
  folder = _image_folder(tmp_path / "pics")

  written = []

  def full(self, position, image):  # The disk fills up after 5 images.
    if len(written) == 5:
      raise OSError(errno.ENOSPC, "No space left on device")
    written.append(position)

  monkeypatch.setattr(npy.ImagesFile, "put", full)
  with pytest.raises(UsageError, match="no space left to cache .* set --config.folder_cache=never"):
    _read(folder, cache_dir)
  assert list(folder_cache.root(str(cache_dir)).iterdir()) == []
  assert len(list(folder.rglob("*.png"))) == 12  # The folder is only read.


def test_a_crash_mid_build_leaves_no_entry_under_the_real_name(tmp_path, cache_dir, monkeypatch):
  folder = _image_folder(tmp_path / "pics")

  def crash(*args):
    raise KeyboardInterrupt

  monkeypatch.setattr(folder_cache, "_write_meta", crash)
  with pytest.raises(KeyboardInterrupt):
    _read(folder, cache_dir)
  path = folder_cache.entry(folder, 0, 0.1, str(cache_dir))
  assert not path.exists() and list(path.parent.iterdir()) == []
  monkeypatch.undo()
  assert len(_read(folder, cache_dir).train.images) == 11  # A later run builds it.


def test_a_killed_build_is_cleaned_up_by_a_later_one(tmp_path, cache_dir):
  folder = _image_folder(tmp_path / "pics")
  path = folder_cache.entry(folder, 0, 0.1, str(cache_dir))
  dead, live = (path.with_name(f".{path.name}.{name}.tmp") for name in ("dead", "live"))
  for leftover in (dead, live):
    leftover.mkdir(parents=True)
    (leftover / "train.npy").write_bytes(b"half")
  os.utime(dead, (1, 1))
  _read(folder, cache_dir)
  assert sorted(p.name for p in path.parent.iterdir()) == sorted([path.name, live.name])


def test_auto_caches_only_large_folders(tmp_path, cache_dir, monkeypatch):
  folder = _image_folder(tmp_path / "pics")
  _read(folder, cache_dir, "auto")
  assert not cache_dir.exists()
  monkeypatch.setattr(folder_cache, "CACHE_FROM", 12)
  assert isinstance(_read(folder, cache_dir, "auto").train.images, np.memmap)


def test_the_cache_root_follows_the_environment(monkeypatch, tmp_path):
  monkeypatch.setenv("VAE_JAX_CACHE", str(tmp_path / "env"))
  assert folder_cache.root() == tmp_path / "env" / "folders"
  assert folder_cache.root(str(tmp_path / "mine")) == tmp_path / "mine" / "folders"


def test_an_unknown_cache_mode_is_one_line():
  with pytest.raises(UsageError, match="folder_cache must be one of"):
    folder_cache.wanted("sometimes", 5)


def test_load_through_a_config_keeps_the_memmaps(npy_dir):
  config = tiny.get_config()
  config.data_dir, config.dataset = str(npy_dir), "mine"
  dataset = data.load(config)
  assert isinstance(dataset.train.images, np.memmap)
  config.folder_cache = "sometimes"
  with pytest.raises(UsageError, match="unknown folder_cache 'sometimes'; choose one of auto"):
    data.load(config)
