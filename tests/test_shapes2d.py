"""shapes2d (`vae_jax.sources.shapes2d`): the renderer's geometry, its determinism, the data set
`--config.dataset=shapes2d` and its ground truth. Small subsets of the grid only."""
import hashlib
import math

import numpy as np
import pytest

from vae_jax import data
from vae_jax import streaming
from vae_jax.errors import UsageError
from vae_jax.sources import factors as factors_lib
from vae_jax.sources import pixels
from vae_jax.sources import shapes2d

SQUARE, ELLIPSE, HEART = range(3)
# sha256 of the bytes of `render(all_factors()[::97])` (7,601 images): the data set's definition.
# A change here changes every shapes2d result; make it on purpose or not at all.
GOLDEN_SHA256 = "f087815708c278145e51a0526885973372f5e093015c1021d1d4af08d3157a80"


def _config(**overrides):
  from vae_jax.configs import default  # pylint: disable=g-import-not-at-top
  config = default.get_config()
  config.update({"dataset": "shapes2d", **overrides})
  return config


@pytest.fixture(scope="module")
def shapes():
  return data.load(_config())


def _one(shape=SQUARE, scale=5, orientation=0, x=15, y=15) -> np.ndarray:
  """The (64, 64) image of one combination."""
  return shapes2d.render([[shape, scale, orientation, x, y]])[0, ..., 0]


def _centroid(image: np.ndarray) -> np.ndarray:
  """(row, column) of the inked pixels' mean."""
  return np.argwhere(image).mean(0)


def test_the_grid_is_dsprites_grid():
  assert shapes2d.FACTOR_NAMES == ("shape", "scale", "orientation", "x", "y")
  assert shapes2d.FACTOR_SIZES == (3, 6, 40, 32, 32)
  assert shapes2d.SHAPES == ("square", "ellipse", "heart")
  np.testing.assert_allclose(shapes2d.SCALES, np.linspace(0.5, 1, 6))
  grid = shapes2d.all_factors()
  assert grid.shape == (737_280, 5) and grid.dtype == np.int32
  # dSprites' order: the last factor (y) varies fastest.
  np.testing.assert_array_equal(grid[:3], [[0, 0, 0, 0, 0], [0, 0, 0, 0, 1], [0, 0, 0, 0, 2]])
  np.testing.assert_array_equal(grid[32], [0, 0, 0, 1, 0])
  np.testing.assert_array_equal(grid[-1], [2, 5, 39, 31, 31])


def test_rendering_is_deterministic_binary_and_equals_the_inside_test_on_the_canvas():
  factors = shapes2d.all_factors()[np.random.default_rng(0).choice(737_280, 1500, replace=False)]
  images = shapes2d.render(factors)
  assert images.shape == (1500, 64, 64, 1) and images.dtype == np.uint8
  assert set(np.unique(images)) == {0, 255}
  np.testing.assert_array_equal(shapes2d.render(factors), images)
  # The stamps pasted at whole-pixel positions are the inside test at every pixel, bit for bit.
  np.testing.assert_array_equal(shapes2d.render_on_canvas(factors), images)


def test_the_bytes_are_pinned():
  images = shapes2d.render(shapes2d.all_factors()[::97])
  assert hashlib.sha256(images.tobytes()).hexdigest() == GOLDEN_SHA256


def test_the_rotation_table_is_cos_and_sin_with_exact_quarter_turns():
  cos, sin = shapes2d.rotations()
  angles = 2 * np.pi * np.arange(40) / 40
  np.testing.assert_allclose(cos, [math.cos(a) for a in angles], rtol=0, atol=1e-15)
  np.testing.assert_allclose(sin, [math.sin(a) for a in angles], rtol=0, atol=1e-15)
  np.testing.assert_array_equal(np.roll(cos, -10), -sin)  # Exactly, not to within rounding.
  np.testing.assert_array_equal(np.roll(sin, -10), cos)


def test_every_stamp_is_inked_and_inside_its_window():
  """So pasting never clips a shape, and no shape touches the image's border."""
  stamps = shapes2d.stamps()
  assert stamps.shape == (3, 6, 40, 31, 31)
  assert (stamps.reshape(720, -1).max(1) == 255).all()
  ring = np.concatenate([stamps[..., 0, :], stamps[..., -1, :], stamps[..., 0], stamps[..., -1]],
                        -1)
  assert ring.max() == 0


def test_every_shape_and_scale_gives_another_image():
  images = shapes2d.render([[shape, scale, 3, 15, 15] for shape in range(3) for scale in range(6)])
  assert len({image.tobytes() for image in images}) == 18


@pytest.mark.parametrize("shape", [SQUARE, ELLIPSE, HEART])
def test_position_puts_the_centroid_on_the_grid_positions(shape):
  # Every x along one row, every y along one column, and a few orientations and scales.
  rows = [[shape, 5, 0, x, 7] for x in range(32)] + [[shape, 2, 13, 20, y] for y in range(32)]
  rows += [[shape, s, o, x, y] for s, o, x, y in [(0, 5, 0, 31), (3, 27, 31, 0), (4, 39, 9, 22)]]
  images = shapes2d.render(rows)[..., 0]
  for (_, _, _, x, y), image in zip(rows, images, strict=True):
    expected = (shapes2d.FIRST_CENTRE + y, shapes2d.FIRST_CENTRE + x)
    # Square and ellipse are point-symmetric about a pixel centre: exact; the heart's
    # centroid is its continuous shape's, up to the pixels.
    np.testing.assert_allclose(_centroid(image), expected, atol=0 if shape != HEART else 0.35)
  # A step of x is a shift by one pixel, exactly.
  np.testing.assert_array_equal(np.roll(images[0], 1, axis=1), images[1])


@pytest.mark.parametrize("shape", [SQUARE, ELLIPSE, HEART])
@pytest.mark.parametrize("orientation", [0, 7, 25])
def test_area_grows_with_scale_as_its_square(shape, orientation):
  images = shapes2d.render([[shape, scale, orientation, 16, 16] for scale in range(6)])
  areas = (images > 0).sum((1, 2, 3))
  assert (np.diff(areas) > 0).all()
  unit_area = {SQUARE: 4.0, ELLIPSE: math.pi * 1.3 * 0.65, HEART: 3.662}[shape]
  expected = unit_area * (np.array(shapes2d.SCALES) * shapes2d.UNIT) ** 2
  np.testing.assert_allclose(areas, expected, rtol=0.2)


def test_orientation_turns_the_shapes_with_their_symmetries():
  every = lambda shape: shapes2d.render([[shape, 5, k, 15, 15] for k in range(40)])[..., 0]
  square, ellipse, heart = every(SQUARE), every(ELLIPSE), every(HEART)
  # The heart has no rotational symmetry: 40 different images.
  assert len({image.tobytes() for image in heart}) == 40
  # A quarter turn (10 steps) leaves the square as it was, but not the ellipse; a half turn
  # (20 steps) leaves the ellipse; one step changes both.
  np.testing.assert_array_equal(square, np.roll(square, -10, axis=0))
  assert all((ellipse[k] != ellipse[k + 10]).any() for k in range(30))
  np.testing.assert_array_equal(ellipse, np.roll(ellipse, -20, axis=0))
  assert all((square[k] != square[k + 1]).any() and (ellipse[k] != ellipse[k + 1]).any()
             for k in range(39))
  assert len({image.tobytes() for image in square}) == 10
  assert len({image.tobytes() for image in ellipse}) == 20
  # A full turn is the same image: orientation k + 40 is k.
  np.testing.assert_array_equal(shapes2d.render([[HEART, 5, k + 40, 15, 15] for k in range(40)])
                                [..., 0], heart)


def test_orientation_turns_counter_clockwise_about_the_centre():
  """The heart's tip (its pixel farthest from the centroid) points down at orientation 0, and a
  quarter turn counter-clockwise later to the right, then up, then left."""
  for k, direction in ((0, (1, 0)), (10, (0, 1)), (20, (-1, 0)), (30, (0, -1))):
    image = _one(HEART, orientation=k)
    ink = np.argwhere(image)
    tip = ink[np.argmax(((ink - _centroid(image)) ** 2).sum(1))] - _centroid(image)
    np.testing.assert_allclose(tip / np.linalg.norm(tip), direction, atol=0.2)


def test_the_heart_centroid_constant():
  grid = np.linspace(-1.5, 1.5, 1501)
  u, v = np.meshgrid(grid, grid)
  inside = (u * u + v * v - 1) ** 3 - u * u * v ** 3 <= 0
  assert v[inside].mean() == pytest.approx(shapes2d.HEART_CENTROID, abs=1e-3)


def test_render_refuses_factors_outside_the_grid():
  for bad, message in [([[3, 0, 0, 0, 0]], r"factor 0 takes the values 0 \.\. 2"),
                       ([[0, 0, 0, 32, 0]], r"factor 3 takes the values 0 \.\. 31"),
                       ([[0, -1, 0, 0, 0]], r"factor 1 takes the values 0 \.\. 5"),
                       ([0, 0, 0, 0, 0], r"shape \(n, 5\)"),
                       ([[0.0, 0, 0, 0, 0]], r"integer factor indices")]:
    with pytest.raises(ValueError, match=message):
      shapes2d.render(bad)


def test_load_gives_a_split_grid_labelled_by_shape(shapes):
  assert shapes.name == "shapes2d" and shapes.image_shape == (64, 64, 1)
  assert (len(shapes.train.images), len(shapes.test.images)) == (663_552, 73_728)
  assert shapes.class_names == shapes2d.SHAPES
  assert shapes.factor_names == shapes2d.FACTOR_NAMES
  assert shapes.factor_sizes == shapes2d.FACTOR_SIZES
  for split in (shapes.train, shapes.test):
    assert split.factors.dtype == np.int32 and split.factors.shape == (len(split.images), 5)
    np.testing.assert_array_equal(split.labels, split.factors[:, 0])
  # The test split is the usual fixed-seed draw: train and test partition the grid, in order.
  cells = lambda s: factors_lib.grid_index(s.factors.astype(np.int64), shapes2d.FACTOR_SIZES)
  train, test = cells(shapes.train), cells(shapes.test)
  assert (np.diff(train) > 0).all() and (np.diff(test) > 0).all()
  np.testing.assert_array_equal(np.sort(np.concatenate([train, test])), np.arange(737_280))
  is_test = data.test_mask(737_280, 0.1)
  np.testing.assert_array_equal(test, np.flatnonzero(is_test))
  # Each image is its factors' rendering.
  rows = np.array([0, 1, 5000, 663_551])
  np.testing.assert_array_equal(shapes.train.images[rows],
                                shapes2d.render(shapes.train.factors[rows]))


def test_the_images_are_rendered_as_read(shapes):
  images = shapes.test.images
  assert isinstance(images, shapes2d.RenderedImages)
  assert images.shape == (73_728, 64, 64, 1) and images.nbytes == 73_728 * 4096
  assert images.dtype == np.uint8 and images.ndim == 4
  want = shapes2d.render(shapes.test.factors[:40])
  np.testing.assert_array_equal(images[:40], want)
  np.testing.assert_array_equal(images[7], want[7])
  np.testing.assert_array_equal(images[-1], shapes2d.render(shapes.test.factors[-1:])[0])
  mask = np.zeros(len(images), bool)
  mask[:40:3] = True
  np.testing.assert_array_equal(images[mask], want[::3])
  np.testing.assert_array_equal(images[:40, 10:20], want[:, 10:20])
  np.testing.assert_array_equal(np.asarray(images.subset(np.arange(40))), want)
  # What a streamed epoch reads: rows in any order, over threads.
  reader = streaming.Reader(images)
  rows = np.array([39, 3, 17, 3])
  np.testing.assert_array_equal(reader.read(rows), want[rows])
  reader.close()


def test_ground_truth_gives_the_image_of_any_combination(shapes):
  truth = data.ground_truth(shapes)
  assert truth.factor_sizes == shapes2d.FACTOR_SIZES and truth.factor_names == shapes2d.FACTOR_NAMES
  # The images of the splits' own factors: index -> image -> the same image.
  for split in (shapes.train, shapes.test):
    rows = np.random.default_rng(1).choice(len(split.images), 64, replace=False)
    np.testing.assert_array_equal(truth.images(split.factors[rows]), split.images[rows])
  # Any combination, in any order, with repeats; none at all.
  factors = np.array([[2, 5, 39, 31, 31], [0, 0, 0, 0, 0], [2, 5, 39, 31, 31]])
  np.testing.assert_array_equal(truth.images(factors), shapes2d.render(factors))
  assert truth.images(np.zeros((0, 5), int)).shape == (0, 64, 64, 1)
  with pytest.raises(ValueError, match=r"factor 2 takes the values 0 \.\. 39"):
    truth.images([[0, 0, 40, 0, 0]])  # The grid's indices only.


def test_train_subset_keeps_the_grid_whole():
  small = data.load(_config(train_subset=300))
  assert len(small.train.images) == 300 and len(small.test.images) == 73_728
  assert isinstance(small.train.images, shapes2d.RenderedImages)
  np.testing.assert_array_equal(small.train.labels, small.train.factors[:, 0])
  np.testing.assert_array_equal(small.train.images[:5], shapes2d.render(small.train.factors[:5]))
  # The ground truth still renders combinations the subset left out.
  truth = data.ground_truth(small)
  left_out = shapes2d.all_factors()[:3]
  np.testing.assert_array_equal(truth.images(left_out), shapes2d.render(left_out))


def test_image_size_resizes_the_images_and_the_ground_truth():
  resized = data.load(_config(image_size=32, train_subset=50))
  assert resized.image_shape == (32, 32, 1)
  want = pixels.resize(shapes2d.render(resized.train.factors[:6]), 32)
  np.testing.assert_array_equal(resized.train.images[:6], want)
  np.testing.assert_array_equal(data.ground_truth(resized).images(resized.train.factors[:6]), want)


def test_data_without_factors_has_no_ground_truth():
  digits = data.load(_config(dataset="mnist_sample"))
  assert digits.train.factors is None and digits.factor_sizes is None
  assert digits.factor_names is None
  with pytest.raises(UsageError, match="mnist_sample has no known factors of variation; use "
                     "--config.dataset=shapes2d") as error:
    data.ground_truth(digits)
  assert "\n" not in str(error.value)


