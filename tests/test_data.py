"""Input: the IDX reader on real files, what data_dir recognises, errors, memory, pixel scaling."""
import gzip
import pathlib
import shutil
import struct

import jax
import jax.numpy as jnp
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
  assert ds.train.labels.dtype == np.int32 and ds.class_names is None
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


def test_with_data_dir_any_name_labels_the_results(sample_copy):
  ds = data.load(_config(dataset="my digits", data_dir=str(sample_copy)))
  assert ds.name == "my digits" and ds.train.images.shape == (8004, 28, 28, 1)


def test_image_size_resizes_idx_images():
  ds = data.load(_config(dataset="mnist_sample", image_size=14))
  assert ds.train.images.shape == (8004, 14, 14, 1) and ds.test.images.shape == (1996, 14, 14, 1)
  # Downscaling keeps the strokes where they were: the centre is inked, the border not.
  assert ds.train.images[:, 5:9, 5:9].mean() > 4 * ds.train.images[:, 0, :].mean()


@pytest.fixture
def sample_copy(tmp_path):
  """A writable copy of the mnist_sample IDX folder."""
  folder = tmp_path / "idx"
  shutil.copytree(data.SAMPLE_DIR, folder)
  return folder


def _rewrite(path: pathlib.Path, edit) -> None:
  path.write_bytes(gzip.compress(edit(gzip.decompress(path.read_bytes())), compresslevel=1))


def _idx_bytes(array: np.ndarray, type_code: int) -> bytes:
  header = struct.pack(">HBB", 0, type_code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
  return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def _write_idx(path: pathlib.Path, array: np.ndarray, type_code: int = 0x08) -> None:
  path.write_bytes(gzip.compress(_idx_bytes(array, type_code), compresslevel=1))


@pytest.mark.parametrize("breakage, message", [
    (lambda d: (d / "t10k-labels-idx1-ubyte.gz").unlink(), "lacks t10k-labels-idx1-ubyte.gz"),
    (lambda d: _rewrite(d / "train-images-idx3-ubyte.gz", lambda b: b"\x12\x34" + b[2:]),
     "not an IDX file"),
    (lambda d: _rewrite(d / "train-images-idx3-ubyte.gz", lambda b: b[:-100]), "truncated"),
    (lambda d: _rewrite(d / "t10k-labels-idx1-ubyte.gz", lambda b: b[:6]), "truncated IDX header"),
    (lambda d: (d / "train-labels-idx1-ubyte.gz").write_bytes(b"not gzip at all"),
     "cannot read"),
    (lambda d: shutil.copy(d / "t10k-labels-idx1-ubyte.gz", d / "t10k-images-idx3-ubyte.gz"),
     "expected rank 3 or 4"),
    (lambda d: shutil.copy(d / "train-labels-idx1-ubyte.gz", d / "t10k-labels-idx1-ubyte.gz"),
     "1996 images but t10k-labels-idx1-ubyte has 8004 labels"),
    (lambda d: (_write_idx(d / "t10k-images-idx3-ubyte.gz", np.zeros((0, 28, 28), np.uint8)),
                _write_idx(d / "t10k-labels-idx1-ubyte.gz", np.zeros(0, np.uint8))),
     "the test split holds no images"),
    (lambda d: (_write_idx(d / "t10k-images-idx3-ubyte.gz", np.zeros((1996, 32, 32), np.uint8))),
     "train images are 28x28x1 but test images are 32x32x1"),
    (lambda d: _write_idx(d / "t10k-images-idx3-ubyte.gz",
                          np.full((1996, 28, 28), 1.5, np.float32), 0x0D),
     r"float pixels must lie in \[0, 1\], found \[1.5, 1.5\]"),
    (lambda d: _write_idx(d / "t10k-images-idx3-ubyte.gz",
                          np.full((1996, 28, 28), np.nan, np.float32), 0x0D), "found no finite values"),
    (lambda d: _write_idx(d / "t10k-images-idx3-ubyte.gz",
                          np.full((1996, 28, 28), 300, np.int16), 0x0B),
     r"integer pixels must lie in \[0, 255\]"),
])
def test_broken_idx_folders_raise_usage_errors(sample_copy, breakage, message):
  breakage(sample_copy)
  with pytest.raises(UsageError, match=message) as error:
    data.load(_config(dataset="mnist", data_dir=str(sample_copy)))
  assert "\n" not in str(error.value)


def test_float_idx_pixels_in_unit_interval_are_scaled_to_bytes(sample_copy):
  """Pixels k / 255 stored as float32 (type 0x0D) give back the bytes k."""
  ref = data.load_idx_dir(data.SAMPLE_DIR)
  _write_idx(sample_copy / "t10k-images-idx3-ubyte.gz",
             ref.test.images[..., 0].astype(np.float32) / 255, 0x0D)
  ds = data.load_idx_dir(sample_copy)
  assert ds.test.images.dtype == np.uint8
  np.testing.assert_array_equal(ds.test.images, ref.test.images)


def test_missing_data_dir_and_unknown_dataset():
  with pytest.raises(UsageError, match="is not a folder or a .npz file"):
    data.load(_config(data_dir="/nonexistent/folder"))
  with pytest.raises(UsageError, match="unknown dataset 'cifar'.*tfds:NAME"):
    data.load(_config(dataset="cifar"))
  with pytest.raises(UsageError, match="test_fraction must lie in"):
    data.load(_config(dataset="mnist_sample", test_fraction=1.0))


@pytest.mark.parametrize("make, message", [
    (lambda d: None, "is empty; expected the four IDX files"),
    (lambda d: (d / "notes.txt").write_text("hello"),
     "holds none of the inputs it can read; expected the four IDX files .*PNG/JPEG"),
    (lambda d: (d / "data.csv").write_text("1,2"), "is a file but not a .npz"),
])
def test_unknown_content_says_what_is_expected(tmp_path, make, message):
  make(tmp_path)
  target = tmp_path / "data.csv" if (tmp_path / "data.csv").exists() else tmp_path
  with pytest.raises(UsageError, match=message):
    data.load(_config(dataset="x", data_dir=str(target)))


# ----------------------------------------------------------------------------
# Splits: factors and train_subset.


def test_factors_follow_their_images_through_the_test_split():
  images = np.arange(50, dtype=np.uint8).reshape(50, 1, 1, 1)
  split = data.Split(images, np.arange(50, dtype=np.int32) % 3,
                     np.stack([np.arange(50), np.arange(50) * 2], 1).astype(np.int32))
  assert data.Split(images, split.labels).factors is None
  for part in data.split_off_test(split, 0.2):
    np.testing.assert_array_equal(part.labels, part.images[:, 0, 0, 0] % 3)
    np.testing.assert_array_equal(part.factors[:, 1], part.images[:, 0, 0, 0] * 2)
  train, test = data.split_off_test(data.Split(images, split.labels), 0.2)
  assert train.factors is None and test.factors is None and len(test.images) == 10


def test_train_subset_is_a_fixed_nested_subset_with_its_labels():
  whole = data.load(_config(dataset="mnist_sample"))
  small = data.load(_config(dataset="mnist_sample", train_subset=100))
  assert len(small.train.images) == 100 and small.train.images.shape[1:] == (28, 28, 1)
  np.testing.assert_array_equal(small.test.images, whole.test.images)  # The test set stays.
  rows = {row.tobytes(): i for i, row in enumerate(whole.train.images)}
  picked = np.array([rows[row.tobytes()] for row in small.train.images])
  assert (np.diff(picked) > 0).all()  # In the source's order.
  np.testing.assert_array_equal(small.train.labels, whole.train.labels[picked])
  assert len(set(small.train.labels.tolist())) == 10  # Drawn at random, not the first 100.
  # The same for every run and seed; a larger subset holds the smaller.
  again = data.load(_config(dataset="mnist_sample", train_subset=100, seed=7))
  np.testing.assert_array_equal(again.train.images, small.train.images)
  larger = data.load(_config(dataset="mnist_sample", train_subset=1000))
  larger_rows = {row.tobytes() for row in larger.train.images}
  assert all(row.tobytes() in larger_rows for row in small.train.images)
  everything = data.load(_config(dataset="mnist_sample", train_subset=8004))
  np.testing.assert_array_equal(everything.train.images, whole.train.images)


def test_train_subset_refuses_more_images_than_there_are():
  with pytest.raises(UsageError, match="train_subset=8,005 exceeds the 8,004 training images of "
                                       "mnist_sample; choose at most 8,004, or 0 for all"):
    data.load(_config(dataset="mnist_sample", train_subset=8005))
  with pytest.raises(UsageError, match=r"train_subset must be >= 0 \(0 keeps every image\), "
                                       "got -1"):
    data.load(_config(dataset="mnist_sample", train_subset=-1))


def test_train_subset_of_memmapped_images_reads_only_those(tmp_path):
  images = np.random.default_rng(0).integers(0, 256, (40, 4, 4, 1), np.uint8)
  np.save(tmp_path / "train.npy", images)
  np.save(tmp_path / "test.npy", images[:5])
  np.save(tmp_path / "train_labels.npy", np.arange(40))
  whole = data.load(_config(data_dir=str(tmp_path)))
  assert isinstance(whole.train.images, np.memmap)
  small = data.load(_config(data_dir=str(tmp_path), train_subset=7))
  assert type(small.train.images) is np.ndarray  # pylint: disable=unidiomatic-typecheck
  np.testing.assert_array_equal(small.train.images, images[small.train.labels])


# ----------------------------------------------------------------------------
# check_fits.


class _FakeGpu:
  """A device with GPU-like memory_stats()."""

  process_index = 0

  def __init__(self, limit, in_use=0):
    self._stats = {"bytes_limit": limit, "bytes_in_use": in_use}

  def memory_stats(self):
    return self._stats

  def __str__(self):
    return "cuda:0"


def test_check_fits_compares_with_device_memory():
  ds = data.load(_config(dataset="mnist_sample"))  # 7,840,000 bytes.
  data.check_fits(ds)  # The CPU, against host RAM.
  data.check_fits(ds, [_FakeGpu(8_000_000)])
  with pytest.raises(UsageError, match=r"7.5 MiB uint8: train 6.0 MiB \+ test 1.5 MiB\) do not "
                                       r"fit on cuda:0: 7.5 MiB needed, 6.7 MiB free"):
    data.check_fits(ds, [_FakeGpu(8_000_000, in_use=1_000_000)])
  # Sharded over two devices, each needs half.
  data.check_fits(ds, [_FakeGpu(4_000_000), _FakeGpu(4_000_000)])


def test_check_fits_on_cpu_compares_with_available_host_memory(monkeypatch):
  ds = data.load(_config(dataset="mnist_sample"))
  monkeypatch.setattr(data, "_host_available_bytes", lambda: 5 * 2**20)
  with pytest.raises(UsageError, match="do not fit in host memory: 7.5 MiB needed, 5.0 MiB available"):
    data.check_fits(ds, jax.devices("cpu"))


def test_host_available_bytes_reads_real_memory():
  assert 2**26 < data._host_available_bytes() < 2**50  # pylint: disable=protected-access


# ----------------------------------------------------------------------------
# Pixels.


@pytest.mark.parametrize("jit", [False, True])
def test_to_unit_interval_maps_bytes_exactly(jit):
  scale = jax.jit(data.to_unit_interval) if jit else data.to_unit_interval
  x = scale(jnp.array([0, 128, 255], jnp.uint8))
  assert x.dtype == jnp.float32
  assert float(x[0]) == 0.0 and float(x[2]) == 1.0
  assert float(x[1]) == float(np.float32(128) / np.float32(255))
  assert abs(float(x[1]) - 128 / 255) < 1e-7


def test_the_conditional_refusal_names_every_source_of_labels():
  split = data.Split(np.zeros((2, 2, 2, 1), np.uint8), np.full(2, -1, np.int32))
  with pytest.raises(UsageError, match=r"conditional=True needs a label for every image, and "
                     r"mine has no labels \(labels come from IDX label files, an \.npz's y_train "
                     r"and y_test, train_labels\.npy and test_labels\.npy beside an \.npy "
                     r"folder's images, class folders, or a tfds ClassLabel\)"):
    data.num_classes(data.Dataset("mine", split, split))
