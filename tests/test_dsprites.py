"""The real dSprites file's layout (`vae_jax.sources.dsprites`), on small files the tests write:
a 2 x 2 x 3 x 4 x 4 sub-grid (192 images) with the same keys, dtypes and order."""
import numpy as np
import pytest

from vae_jax import data
from vae_jax.errors import UsageError
from vae_jax.sources import dsprites
from vae_jax.sources import factors as factors_lib
from vae_jax.sources import pixels
from vae_jax.sources import shapes2d

SIZES = (2, 2, 3, 4, 4)  # shape, scale, orientation, posX, posY: 192 images.


def _arrays(order: np.ndarray | None = None) -> dict[str, np.ndarray]:
  """The real file's arrays for SIZES: row-major (posY fastest), or rows in `order`.

  Each image is a shapes2d rendering of its factors (spread over shapes2d's grid, so every
  image differs), as 0/1 like dSprites' `imgs`.
  """
  factors = factors_lib.grid(SIZES)
  if order is not None:
    factors = factors[order]
  spread = factors * np.array([1, 5, 3, 8, 8])
  images = (shapes2d.render(spread)[..., 0] // 255).astype(np.uint8)
  classes = np.concatenate([np.zeros((len(factors), 1), np.int64), factors], 1)
  values = np.concatenate([np.ones((len(factors), 1)), factors / 10.0], 1)
  metadata = np.array({"description": "a small file of dSprites' layout"}, dtype=object)
  return {"imgs": images, "latents_classes": classes, "latents_values": values,
          "metadata": metadata}


def _write(folder, arrays=None, name=dsprites.FILE_NAME):
  path = folder / name
  np.savez_compressed(path, **(_arrays() if arrays is None else arrays))
  return path


def _config(**overrides):
  from vae_jax.configs import default  # pylint: disable=g-import-not-at-top
  config = default.get_config()
  config.update(overrides)
  return config


def test_reads_images_factors_and_labels_in_the_files_order(tmp_path):
  path = _write(tmp_path)
  arrays = _arrays()
  ds = data.load(_config(data_dir=str(path), test_fraction=0.25))
  assert ds.name == "dsprites" and ds.image_shape == (64, 64, 1)
  assert (len(ds.train.images), len(ds.test.images)) == (144, 48)
  assert ds.factor_names == ("shape", "scale", "orientation", "x", "y")
  assert ds.factor_sizes == SIZES and ds.class_names == ("square", "ellipse")
  is_test = data.test_mask(192, 0.25)
  for split, rows in ((ds.train, ~is_test), (ds.test, is_test)):
    assert split.images.dtype == np.uint8 and set(np.unique(split.images)) == {0, 255}
    np.testing.assert_array_equal(split.images[..., 0], arrays["imgs"][rows] * 255)
    np.testing.assert_array_equal(split.factors, arrays["latents_classes"][rows, 1:])
    np.testing.assert_array_equal(split.labels, arrays["latents_classes"][rows, 1])
    assert split.factors.dtype == np.int32 and split.labels.dtype == np.int32


def test_a_folder_holding_the_file_and_any_name(tmp_path):
  _write(tmp_path)
  ds = data.load(_config(data_dir=str(tmp_path)))
  assert ds.name == "dsprites" and len(ds.train.images) + len(ds.test.images) == 192
  assert data.load(_config(data_dir=str(tmp_path), dataset="sprites")).name == "sprites"


def test_ground_truth_looks_up_every_combination(tmp_path):
  path = _write(tmp_path)
  arrays = _arrays()
  ds = data.load(_config(data_dir=str(path), test_fraction=0.25, train_subset=10))
  assert len(ds.train.images) == 10
  truth = data.ground_truth(ds)
  assert truth.factor_sizes == SIZES and truth.factor_names == ds.factor_names
  # Every combination of the grid, those the subset and the test split left out too.
  everything = arrays["latents_classes"][:, 1:]
  order = np.random.default_rng(0).permutation(192)
  np.testing.assert_array_equal(truth.images(everything[order])[..., 0],
                                arrays["imgs"][order] * 255)
  # index -> image -> the same image.
  np.testing.assert_array_equal(truth.images(ds.train.factors), ds.train.images)
  with pytest.raises(ValueError, match=r"factor 2 takes the values 0 \.\. 2"):
    truth.images([[0, 0, 3, 0, 0]])


def test_a_file_in_another_row_order_pairs_images_and_factors(tmp_path):
  order = np.random.default_rng(3).permutation(192)
  arrays = _arrays(order)
  path = _write(tmp_path, arrays)
  ds = data.load(_config(data_dir=str(path), test_fraction=0.25))
  rows = ~data.test_mask(192, 0.25)
  np.testing.assert_array_equal(ds.train.factors, arrays["latents_classes"][rows, 1:])
  np.testing.assert_array_equal(ds.train.images[..., 0], arrays["imgs"][rows] * 255)
  grid = _arrays()
  np.testing.assert_array_equal(data.ground_truth(ds).images(grid["latents_classes"][:, 1:]),
                                grid["imgs"][..., None] * 255)


def test_image_size_resizes_images_and_ground_truth(tmp_path):
  path = _write(tmp_path)
  ds = data.load(_config(data_dir=str(path), image_size=32))
  assert ds.image_shape == (32, 32, 1) and ds.train.factors.shape == (len(ds.train.images), 5)
  want = pixels.resize(_arrays()["imgs"][..., None] * 255, 32)
  grid = _arrays()["latents_classes"][:, 1:]
  np.testing.assert_array_equal(data.ground_truth(ds).images(grid), want)
  rows = ~data.test_mask(192, 0.1)
  np.testing.assert_array_equal(ds.train.images, want[rows])


def _without(key):
  return lambda a: a.pop(key)


@pytest.mark.parametrize("edit, message", [
    (_without("imgs"), r"lacks imgs \(it holds latents_classes, latents_values, metadata; a "
     "dSprites file holds imgs and latents_classes\\)"),
    (_without("latents_classes"), "lacks latents_classes"),
    (lambda a: a.update(imgs=a["imgs"].astype(np.float32)),
     r"imgs is float32 of shape \(192, 64, 64\); expected uint8 images \(N, H, W\) of 0 and 1"),
    (lambda a: a.update(imgs=a["imgs"][..., None]), r"imgs is uint8 of shape \(192, 64, 64, 1\)"),
    (lambda a: a.update(imgs=a["imgs"] * 255), "imgs holds values up to 255; expected 0 and 1"),
    (lambda a: a.update(imgs=a["imgs"][:191]),
     r"latents_classes is int64 of shape \(192, 6\); expected integers of shape \(191, 6\)"),
    (lambda a: a.update(latents_classes=a["latents_classes"][:, 1:]),
     r"of shape \(192, 5\); expected integers of shape \(192, 6\)"),
    (lambda a: a.update(latents_classes=a["latents_classes"].astype(float)),
     r"latents_classes is float64"),
    (lambda a: a["latents_classes"].__setitem__((5, 0), 1),
     "its color column takes several values"),
    (lambda a: a["latents_classes"].__setitem__((slice(None), 3), a["latents_classes"][:, 3] + 1),
     r"column 3 \(orientation\) starts at 1; expected factor indices 0 \.\. K - 1"),
    (lambda a: a["latents_classes"].__setitem__((0, 5), 9),
     r"192 images, but its factors span a 2x2x3x4x10 grid of 480"),
    (lambda a: a["latents_classes"].__setitem__(1, a["latents_classes"][0]),
     "1 combinations of its 2x2x3x4x4 factor grid have no image and others several"),
])
def test_a_malformed_file_is_refused_in_one_line(tmp_path, edit, message):
  arrays = _arrays()
  edit(arrays)
  _write(tmp_path, arrays)
  with pytest.raises(UsageError, match=message) as error:
    data.load(_config(data_dir=str(tmp_path)))
  assert "\n" not in str(error.value)


def test_only_files_with_its_keys_are_read_as_dsprites(tmp_path):
  keras = tmp_path / "keras.npz"
  np.savez(keras, x_train=np.zeros((4, 8, 8), np.uint8), x_test=np.zeros((2, 8, 8), np.uint8))
  assert not dsprites.holds(keras) and data.load(_config(data_dir=str(keras))).grid is None
  assert dsprites.holds(_write(tmp_path))
  (tmp_path / "broken.npz").write_bytes(b"not a zip")
  assert not dsprites.holds(tmp_path / "broken.npz")
