"""The latent-space API on a trained tiny model: shapes, equivalences, input forms."""
import statistics
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import vae_jax
from vae_jax import data
from vae_jax import figures
from vae_jax import latent
from vae_jax.configs import tiny
from vae_jax import objectives
from vae_jax.families import vae as vae_family

ATOL = 1e-5


@pytest.fixture(scope="module")
def model(trained_workdir):
  return vae_jax.load(trained_workdir)


@pytest.fixture(scope="module")
def digits():
  """Three test images of 0 and three of 6 from mnist_sample, uint8 (3, 28, 28) each."""
  test = data.load(tiny.get_config()).test
  return (test.images[np.flatnonzero(test.labels == 0)[:3]],
          test.images[np.flatnonzero(test.labels == 6)[:3]])


def _random_model(latents: int) -> vae_jax.TrainedModel:
  """An untrained model: enough where only shapes and algebra matter."""
  config = tiny.get_config()
  config.hidden, config.latents = 16, latents
  module = vae_family.from_config(config, (28, 28, 1))
  # numpy draws of the right shapes: compiling flax's initialisers takes seconds.
  shapes = jax.eval_shape(lambda: vae_family.init_params(module, jax.random.key(1)))
  rng = np.random.default_rng(1)
  params = jax.tree.map(lambda s: rng.normal(0, 0.3, s.shape).astype(np.float32), shapes)
  return vae_jax.TrainedModel(vae_family.GaussianVAE(module), params, tiny.get_config(), 0)


@pytest.mark.slow
def test_public_names_and_load(model, trained_workdir):
  assert vae_jax.load is vae_jax.load
  assert issubclass(vae_jax.UsageError, ValueError)
  assert isinstance(model, vae_jax.TrainedModel) and model.step == 250
  assert model.image_shape == (28, 28, 1) and model.module.latents == 4
  with pytest.raises(vae_jax.UsageError, match="no checkpoint at step 7"):
    vae_jax.load(trained_workdir, step=7)


@pytest.mark.slow
def test_import_stays_free_of_tensorflow():
  code = ("import sys, vae_jax; "
          "print(sorted(m for m in ('tensorflow', 'matplotlib') if m in sys.modules))")
  result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
  assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("method", latent.METHODS)
def test_vmapped_interpolation_equals_a_loop_over_pairs(model, digits, method):
  zeros, sixes = digits
  batched = vae_jax.interpolate(model, zeros, sixes, num_steps=5, method=method)
  assert batched.shape == (3, 5, 28, 28)
  looped = np.stack([vae_jax.interpolate(model, a, b, 5, method) for a, b in zip(zeros, sixes)])
  np.testing.assert_allclose(batched, looped, atol=ATOL)


@pytest.mark.parametrize("method", latent.METHODS)
def test_endpoints_are_posterior_mean_reconstructions(model, digits, method):
  zeros, sixes = digits
  paths = vae_jax.interpolate(model, zeros, sixes, num_steps=4, method=method)
  for step, x in ((0, zeros), (-1, sixes)):
    expected = vae_jax.decode(model, vae_jax.encode(model, x)[0])
    np.testing.assert_allclose(paths[:, step], expected, atol=ATOL)
    np.testing.assert_allclose(paths[:, step], vae_jax.reconstruct(model, x), atol=ATOL)


def test_linear_midpoints_are_convex_combinations(model, digits):
  zeros, sixes = digits
  z_a, z_b = vae_jax.encode(model, zeros)[0], vae_jax.encode(model, sixes)[0]
  paths = vae_jax.interpolate(model, zeros, sixes, num_steps=5)
  for i, t in enumerate(np.linspace(0, 1, 5)):
    np.testing.assert_allclose(latent.interpolation_path(z_a[0], z_b[0], 5)[i],
                               (1 - t) * z_a[0] + t * z_b[0], atol=ATOL)
    np.testing.assert_allclose(paths[:, i], vae_jax.decode(model, (1 - t) * z_a + t * z_b),
                               atol=ATOL)
  np.testing.assert_allclose(vae_jax.interpolate_latents(model, z_a, z_b, 5), paths, atol=ATOL)
  # The middle of a 0 -> 6 path is neither end.
  assert np.abs(paths[:, 2] - paths[:, 0]).max() > 0.05
  assert np.abs(paths[:, 2] - paths[:, -1]).max() > 0.05


def test_slerp_keeps_norms_and_sweeps_the_angle_evenly():
  z_a, z_b = jnp.array([3.0, 0.0, 0.0]), jnp.array([1.0, 1.0, 0.0])
  path = np.asarray(latent.interpolation_path(z_a, z_b, 5, "slerp"))
  t = np.linspace(0, 1, 5)
  np.testing.assert_allclose(path[[0, -1]], [z_a, z_b], atol=1e-6)
  np.testing.assert_allclose(np.linalg.norm(path, axis=1), (1 - t) * 3 + t * np.sqrt(2), rtol=1e-6)
  np.testing.assert_allclose(np.arctan2(path[:, 1], path[:, 0]), t * np.pi / 4, atol=1e-6)
  np.testing.assert_allclose(path[:, 2], 0.0, atol=1e-7)  # Stays in the plane of the ends.
  linear = np.asarray(latent.interpolation_path(z_a, z_b, 5, "linear"))
  assert np.abs(path[1:-1] - linear[1:-1]).max() > 0.1


@pytest.mark.parametrize("z_b", [[2.0, 4.0, 0.0], [-1.0, -2.0, 0.0], [0.0, 0.0, 0.0]],
                         ids=["parallel", "antiparallel", "zero"])
def test_slerp_falls_back_to_linear_without_a_great_circle(z_b):
  z_a = jnp.array([1.0, 2.0, 0.0])
  slerp = latent.interpolation_path(z_a, jnp.array(z_b), 5, "slerp")
  assert np.isfinite(slerp).all()
  np.testing.assert_allclose(slerp, latent.interpolation_path(z_a, jnp.array(z_b), 5), atol=1e-6)


def test_slerp_images_differ_from_linear(model, digits):
  zeros, sixes = digits
  z_a, z_b = vae_jax.encode(model, zeros)[0], vae_jax.encode(model, sixes)[0]
  slerp = vae_jax.interpolate(model, zeros, sixes, 5, "slerp")
  codes = jax.vmap(lambda a, b: latent.interpolation_path(a, b, 5, "slerp"))(z_a, z_b)
  t = jnp.linspace(0, 1, 5)[:, None]
  np.testing.assert_allclose(jnp.linalg.norm(codes, axis=-1),
                             (1 - t.T) * jnp.linalg.norm(z_a, axis=-1)[:, None]
                             + t.T * jnp.linalg.norm(z_b, axis=-1)[:, None], rtol=1e-5)
  np.testing.assert_allclose(slerp, vae_jax.decode(model, codes), atol=ATOL)
  assert np.abs(slerp[:, 1:-1] - vae_jax.interpolate(model, zeros, sixes, 5)[:, 1:-1]).max() > 1e-3


def test_sample_is_deterministic_per_key(model):
  first = vae_jax.sample(model, jax.random.key(0), 6)
  assert first.shape == (6, 28, 28) and 0 <= first.min() and first.max() <= 1
  np.testing.assert_array_equal(first, vae_jax.sample(model, jax.random.key(0), 6))
  assert np.abs(first - vae_jax.sample(model, jax.random.key(1), 6)).max() > 0.05
  z = jax.random.normal(jax.random.key(0), (6, 4))
  np.testing.assert_allclose(first, vae_jax.decode(model, z), atol=ATOL)


def test_reconstruct_with_a_key_draws_from_the_posterior(model, digits):
  x = digits[0]
  key = jax.random.key(5)
  drawn = vae_jax.reconstruct(model, x, key)
  mean, logvar = vae_jax.encode(model, x)
  z = objectives.reparameterize(key, mean, logvar)
  np.testing.assert_allclose(drawn, vae_jax.decode(model, z), atol=ATOL)
  assert np.abs(drawn - vae_jax.reconstruct(model, x)).max() > 1e-3


def test_traverse_sweeps_one_dimension(model, digits):
  x, values = digits[0][:2], np.array([-2.0, 0.0, 2.0], np.float32)
  swept = vae_jax.traverse(model, x, 1, values)
  assert swept.shape == (2, 3, 28, 28)
  mean = np.asarray(vae_jax.encode(model, x)[0])
  codes = np.repeat(mean[:, None], 3, axis=1)
  codes[:, :, 1] = values
  np.testing.assert_allclose(swept, vae_jax.decode(model, codes), atol=ATOL)
  assert vae_jax.traverse(model, x[0], 3, values).shape == (3, 28, 28)


def test_every_accepted_input_form_gives_the_same_result(model, digits):
  u8 = digits[0][..., 0]  # (3, 28, 28): grey planes.
  expected = np.asarray(vae_jax.encode(model, u8)[0])
  as_float = u8.astype(np.float64) / 255
  batched = [u8[..., None], u8.reshape(3, -1), as_float, as_float[..., None].astype(np.float32),
             as_float.reshape(3, -1), jnp.asarray(u8), jnp.asarray(as_float, jnp.float16)]
  for x in batched:
    np.testing.assert_allclose(vae_jax.encode(model, x)[0], expected, atol=2e-3 if
                               getattr(x, "dtype", None) == jnp.float16 else ATOL)
  for x in [u8[0], u8[0, ..., None], u8[0].reshape(-1), as_float[0], list(as_float[0])]:
    np.testing.assert_allclose(vae_jax.encode(model, x)[0], expected[0], atol=ATOL)
  assert vae_jax.reconstruct(model, u8[0].reshape(-1)).shape == (28, 28)
  assert vae_jax.reconstruct(model, u8.reshape(3, -1)).shape == (3, 28, 28)


@pytest.mark.parametrize("x, message", [
    (np.zeros((27, 28), np.uint8), r"expected images of shape \(28, 28, 1\), \(28, 28\) or "
     r"\(784,\), with an optional batch axis; got \(27, 28\)"),
    (np.zeros((2, 28, 28, 3), np.uint8), r"got \(2, 28, 28, 3\)"),
    (np.zeros((783,), np.uint8), r"got \(783,\)"),
    (np.zeros((2, 2, 784), np.uint8), r"got \(2, 2, 784\)"),
    (np.zeros((0, 784), np.uint8), "at least one image"),
    (np.full((28, 28), 255.0), r"must lie in \[0, 1\]; got values in \[255, 255\]"),
    (np.full((28, 28), np.nan), r"must lie in \[0, 1\]"),
    (np.zeros((28, 28), np.int32), "expected uint8 images .* or float images .*; got int32"),
])
def test_wrong_images_raise_value_errors(model, x, message):
  with pytest.raises(ValueError, match=message):
    vae_jax.encode(model, x)


def test_wrong_arguments_raise_value_errors(model, digits):
  zeros, sixes = digits
  cases = [
      (lambda: vae_jax.interpolate(model, zeros, sixes, num_steps=1), "num_steps must be"),
      (lambda: vae_jax.interpolate(model, zeros, sixes, method="cubic"), "unknown interpolation"),
      (lambda: vae_jax.interpolate(model, zeros, sixes[:2]), "got 3 and 2"),
      (lambda: vae_jax.interpolate_latents(model, np.zeros(3), np.zeros(4)),
       r"latent codes of shape \(4,\)"),
      (lambda: vae_jax.decode(model, np.zeros((2, 5))), r"shape \(4,\) with any leading axes"),
      (lambda: vae_jax.traverse(model, zeros, 4, [0.0]), r"dim must be an integer in \[0, 4\)"),
      (lambda: vae_jax.traverse(model, zeros, 0, [[0.0]]), r"values of shape \(V,\)"),
      (lambda: vae_jax.sample(model, jax.random.key(0), 0), "n must be an integer >= 1"),
      (lambda: vae_jax.manifold(model), "needs a 2-D latent space; this model has 4"),
  ]
  for call, message in cases:
    with pytest.raises(ValueError, match=message):
      call()


def test_manifold_decodes_prior_quantiles_top_down():
  two_d = _random_model(latents=2)
  grid = vae_jax.manifold(two_d, n=3)
  assert grid.shape == (3, 3, 28, 28)
  low, high = statistics.NormalDist().inv_cdf(0.05), statistics.NormalDist().inv_cdf(0.95)
  np.testing.assert_allclose(grid[0, 0], vae_jax.decode(two_d, [low, high]), atol=ATOL)
  np.testing.assert_allclose(grid[2, 1], vae_jax.decode(two_d, [0.0, low]), atol=ATOL)


def test_pca_projection_keeps_the_widest_axes():
  rng = np.random.default_rng(0)
  codes = rng.normal(size=(500, 4)) * [5.0, 0.1, 3.0, 0.1] + 7.0
  points, explained = figures.project_2d(codes)
  assert points.shape == (500, 2) and 0.99 < explained <= 1.0
  np.testing.assert_allclose(np.sort(points.std(axis=0)), [3.0, 5.0], rtol=0.1)
  flat, none = figures.project_2d(codes[:, :2])
  assert none is None and np.array_equal(flat, codes[:, :2])


def test_pick_by_label_and_indices_refuse_what_is_missing():
  labels = np.array([0, 6, 0, 6, 0, 1])
  rng = np.random.default_rng(0)
  start = figures.pick_by_label(labels, 0, 2, rng)
  end = figures.pick_by_label(labels, 0, 1, rng, exclude=start)
  assert set(start) | set(end) == {0, 2, 4} and not set(start) & set(end)
  with pytest.raises(vae_jax.UsageError, match="no test image with label 11"):
    figures.pick_by_label(labels, 11, 1, rng)
  with pytest.raises(vae_jax.UsageError, match="only 1 test image with label 1 "):
    figures.pick_by_label(labels, 1, 2, rng)
  with pytest.raises(vae_jax.UsageError, match="index 6 out of range"):
    figures.check_indices([0, 6], len(labels))


def test_labels_out_of_range_name_the_one_value_given():
  import types  # pylint: disable=g-import-not-at-top
  conditional = types.SimpleNamespace(family=types.SimpleNamespace(num_classes=10))
  with pytest.raises(ValueError, match=r"^labels must lie in 0 \.\. 9; got 11$"):
    vae_jax.latent.as_labels(conditional, 11, 3)
  with pytest.raises(ValueError, match=r"^labels must lie in 0 \.\. 9; got -1 \.\. 11$"):
    vae_jax.latent.as_labels(conditional, np.array([-1, 11]), 2)
  with pytest.raises(ValueError, match=r"^expected one label; got 2$"):
    vae_jax.latent.as_labels(conditional, np.array([1, 2]), 1)
