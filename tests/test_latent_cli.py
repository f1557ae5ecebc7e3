"""`vae-jax sample|interpolate|latent-map`, as `python -m vae_jax COMMAND`, on a trained workdir."""
import numpy as np
import pytest
from PIL import Image

from conftest import run_module
from vae_jax import data
from vae_jax import images
from vae_jax import train
from vae_jax.configs import tiny

SHAPE = (28, 28)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  """One epoch of mnist_sample with the tiny config and a 2-D latent space."""
  config = tiny.get_config()
  config.latents, config.num_epochs, config.chunks_per_epoch = 2, 1, 1
  path = tmp_path_factory.mktemp("tiny_2d")
  train.train_and_evaluate(config, path, verbose=False)
  return path


@pytest.fixture(scope="module")
def test_split():
  """mnist_sample's test split, its grey images as (N, 28, 28) pictures."""
  split = data.load(tiny.get_config()).test
  return data.Split(split.images[..., 0], split.labels)


def _png(path) -> np.ndarray:
  return np.asarray(Image.open(path))


def _cell(grid: np.ndarray, row: int, col: int) -> np.ndarray:
  """The image at (row, col) of a grid written by `images.tile`."""
  h, w = SHAPE
  y, x = images.PAD + row * (h + images.PAD), images.PAD + col * (w + images.PAD)
  return grid[y:y + h, x:x + w]


def _ok(command: str, *args: str) -> str:
  result = run_module("vae_jax", command, *args)
  assert result.returncode == 0, result.stderr
  return result.stdout


@pytest.mark.slow
def test_sample_writes_a_square_grid_into_the_workdir(workdir):
  stdout = _ok("sample", f"--workdir={workdir}", "--num=10", "--seed=3")
  path = workdir / "images" / "samples.png"
  assert f"wrote {path}: 10 samples" in stdout
  grid = _png(path)
  assert grid.shape == images.grid_size(3, 4, SHAPE)  # ceil(sqrt(10)) = 4 columns, 3 rows.
  assert _cell(grid, 2, 1).std() > 10 and not _cell(grid, 2, 2).any()  # 10 of 12 cells used.


@pytest.mark.slow
def test_sample_at_a_low_temperature_draws_near_the_prior_mean(workdir, tmp_path):
  """At T = 0.01 every code is within a few hundredths of z = 0: the 9 pictures agree to
  a few grey levels, where at T = 1 (the same seed) they differ."""
  stdout = _ok("sample", f"--workdir={workdir}", "--num=9", "--temperature=0.01",
               f"--out={tmp_path}")
  assert "9 samples from N(0, I) at temperature 0.01" in stdout
  _ok("sample", f"--workdir={workdir}", "--num=9", f"--out={tmp_path}")
  cells = lambda name: np.stack([_cell(_png(tmp_path / name), r, c).astype(int)
                                 for r in range(3) for c in range(3)])
  cold, warm = cells("samples_t0.01.png"), cells("samples.png")
  assert np.abs(cold - cold[0]).max() <= 8 and np.abs(warm - warm[0]).max() > 50


@pytest.mark.slow
def test_interpolate_draws_rows_between_labelled_test_images(workdir, test_split, tmp_path):
  stdout = _ok("interpolate", f"--workdir={workdir}", "--steps=5", "--pairs=2", "--gif",
               f"--out={tmp_path}")
  assert "2 pairs x 5 linear steps" in stdout
  grid = _png(tmp_path / "interpolation_0_to_6.png")
  assert grid.shape == images.grid_size(2, 7, SHAPE)
  zeros, sixes = (test_split.images[test_split.labels == d] for d in (0, 6))
  for row in range(2):
    # The originals, exactly; the path between them changes from end to end.
    assert (zeros == _cell(grid, row, 0)).all(axis=(1, 2)).any()
    assert (sixes == _cell(grid, row, 6)).all(axis=(1, 2)).any()
    ends = _cell(grid, row, 1).astype(int), _cell(grid, row, 5).astype(int)
    assert np.abs(ends[0] - ends[1]).max() > 10
  gif = Image.open(tmp_path / "interpolation_0_to_6.gif")
  assert gif.n_frames == 5 + 3  # There and back again.
  assert gif.size[::-1] == images.grid_size(1, 2, SHAPE)


@pytest.mark.slow
def test_interpolate_by_index_with_slerp(workdir, test_split, tmp_path):
  _ok("interpolate", f"--workdir={workdir}", "--from_index=3", "--to_index=7", "--method=slerp",
      "--steps=3", f"--out={tmp_path}")
  grid = _png(tmp_path / "interpolation_test3_to_test7_slerp.png")
  assert grid.shape == images.grid_size(1, 5, SHAPE)
  np.testing.assert_array_equal(_cell(grid, 0, 0), test_split.images[3])
  np.testing.assert_array_equal(_cell(grid, 0, 4), test_split.images[7])


@pytest.mark.slow
def test_latent_map_writes_the_scatter_and_the_manifold(workdir, tmp_path):
  stdout = _ok("latent-map", f"--workdir={workdir}", "--size=6", f"--out={tmp_path}")
  assert "1,996 test images" in stdout and "6 x 6 decoded codes" in stdout
  scatter = _png(tmp_path / "latent_map.png")
  assert scatter.shape[:2] == (600, 600) and len(np.unique(scatter.reshape(-1, 4), axis=0)) > 10
  manifold = _png(tmp_path / "manifold.png")
  assert manifold.shape == images.grid_size(6, 6, SHAPE)
  # Opposite corners of the prior decode to different digits.
  assert np.abs(_cell(manifold, 0, 0).astype(int) - _cell(manifold, 5, 5)).max() > 10


@pytest.mark.slow
@pytest.mark.parametrize("command, args, message", [
    ("sample", ["--num=4"], "no trained model in"),
    ("sample", ["--num=0"], "num must be >= 1"),
    ("sample", ["--temperature=0"], "temperature must be a number > 0"),
    ("interpolate", ["--from_digit=11"], "no test image with label 11"),
    ("interpolate", ["--steps=1"], "steps must be >= 2"),
    ("interpolate", ["--from_index=1"], "--from_index and --to_index go together"),
    ("latent-map", ["--size=0"], "size must be >= 1"),
])
def test_bad_arguments_exit_2_with_one_line(workdir, tmp_path, command, args, message):
  target = tmp_path if message.startswith("no trained model") else workdir
  result = run_module("vae_jax", command, f"--workdir={target}", *args)
  assert result.returncode == 2, result.stderr
  assert result.stderr.strip().splitlines() == [f"error: {result.stderr.strip()[7:]}"]
  assert message in result.stderr and "Traceback" not in result.stderr


def test_picking_by_label_says_what_is_there_in_words():
  from vae_jax import figures  # pylint: disable=g-import-not-at-top
  from vae_jax.errors import UsageError  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  with pytest.raises(UsageError, match="^the test set has no labels to pick images by; choose "
                     "them with --from_index and --to_index$"):
    figures.pick_by_label(np.full(5, -1), 3, 1, rng)
  with pytest.raises(UsageError, match="^only 1 test image with label 3 to pick from, 2 needed"):
    figures.pick_by_label(np.array([3, 1, -1]), 3, 2, rng)
  with pytest.raises(UsageError, match=r"^no test image with label 7 \(labels: 1, 3\)$"):
    figures.pick_by_label(np.array([3, 1, -1]), 7, 1, rng)
  with pytest.raises(UsageError, match=r"the test set has 1 image \(0 \.\. 0\)$"):
    figures.check_indices([4], 1)
