"""Input: .npz files in the layout of Keras' mnist.npz, built from mnist_sample's real digits."""
import numpy as np
import pytest

from vae_jax import data
from vae_jax.errors import UsageError


@pytest.fixture(scope="module")
def sample():
  return data.load_idx_dir(data.SAMPLE_DIR)


def _config(**overrides):
  from vae_jax.configs import default  # pylint: disable=g-import-not-at-top
  config = default.get_config()
  config.update(dataset="npz", **overrides)
  return config


def _keras_arrays(sample, rgb=False):
  """x_* (N, H, W) uint8 as in mnist.npz, or (N, H, W, 3) tinted copies."""
  x_train, x_test = sample.train.images[..., 0], sample.test.images[..., 0]
  if rgb:
    x_train = np.stack([x_train, x_train // 2, 255 - x_train], -1)
    x_test = np.stack([x_test, x_test // 2, 255 - x_test], -1)
  return dict(x_train=x_train, y_train=sample.train.labels.astype(np.uint8),
              x_test=x_test, y_test=sample.test.labels.astype(np.uint8))


def test_npz_file_with_labels_gives_the_idx_arrays(tmp_path, sample):
  np.savez_compressed(tmp_path / "mnist.npz", **_keras_arrays(sample))
  ds = data.load(_config(data_dir=str(tmp_path / "mnist.npz")))
  np.testing.assert_array_equal(ds.train.images, sample.train.images)
  np.testing.assert_array_equal(ds.test.images, sample.test.images)
  np.testing.assert_array_equal(ds.test.labels, sample.test.labels)
  assert ds.image_shape == (28, 28, 1) and ds.test.labels.dtype == np.int32


def test_folder_with_one_rgb_npz_without_labels(tmp_path, sample):
  arrays = _keras_arrays(sample, rgb=True)
  np.savez(tmp_path / "colour.npz", x_train=arrays["x_train"], x_test=arrays["x_test"])
  (tmp_path / "README").write_text("not data")
  ds = data.load(_config(data_dir=str(tmp_path), image_size=16))
  assert ds.train.images.shape == (8004, 16, 16, 3) and ds.image_shape == (16, 16, 3)
  assert (ds.train.labels == -1).all() and (ds.test.labels == -1).all()
  # The blue channel was 255 - red before resizing; resizing keeps that (up to rounding).
  assert np.abs(ds.test.images[..., 2].astype(int) + ds.test.images[..., 0] - 255).max() <= 2


@pytest.mark.parametrize("edit, message", [
    (lambda a: a.pop("x_test"), r"lacks x_test \(it holds x_train, y_train, y_test; expected"),
    (lambda a: (a.pop("x_test"), a.pop("x_train")), "lacks x_train, x_test"),
    (lambda a: a.update(x_train=a["x_train"] / 255.0),
     r"x_train is float64 of shape \(8004, 28, 28\); expected uint8 images"),
    (lambda a: a.update(x_test=a["x_test"].reshape(1996, 784)),
     r"x_test is uint8 of shape \(1996, 784\); expected uint8 images \(N, H, W\) or \(N, H, W, C\)"),
    (lambda a: a.update(y_train=a["y_train"][:10]),
     r"y_train is uint8 of shape \(10,\); expected integer labels of shape \(8004,\)"),
    (lambda a: a.update(x_test=a["x_test"][:, :20]),
     "train images are 28x28x1 but test images are 20x28x1"),
    (lambda a: a.update(x_test=a["x_test"][:0], y_test=a["y_test"][:0]),
     "the test split holds no images"),
    (lambda a: a.update(x_train=np.zeros((10, 8, 8, 2), np.uint8), y_train=np.zeros(10, int)),
     "images of 2 channels; expected 1 .grey. or 3 .colour."),
])
def test_bad_npz_contents_raise_one_line(tmp_path, sample, edit, message):
  arrays = _keras_arrays(sample)
  edit(arrays)
  np.savez(tmp_path / "bad.npz", **arrays)
  with pytest.raises(UsageError, match=message) as error:
    data.load(_config(data_dir=str(tmp_path)))
  assert "\n" not in str(error.value)


def test_unreadable_or_ambiguous_npz(tmp_path):
  (tmp_path / "broken.npz").write_bytes(b"PK\x03\x04 not really a zip")
  with pytest.raises(UsageError, match="broken.npz: cannot read as .npz"):
    data.load(_config(data_dir=str(tmp_path)))
  np.save(tmp_path / "array.npy", np.zeros(3))
  (tmp_path / "array.npy").rename(tmp_path / "array.npz")
  with pytest.raises(UsageError, match="holds 2 .npz files .array.npz, broken.npz.; set data_dir"):
    data.load(_config(data_dir=str(tmp_path)))
  with pytest.raises(UsageError, match="array.npz: cannot read as .npz .a .npy array"):
    data.load(_config(data_dir=str(tmp_path / "array.npz")))
