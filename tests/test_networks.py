"""Networks and likelihoods: the MLP as recorded, conv shapes, user-defined networks,
the discretised logistic."""
import json
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import vae_jax
from conftest import REPO, latest_params, run_module
from vae_jax import evaluation
from vae_jax import likelihoods
from vae_jax import objectives
from vae_jax import reporting
from vae_jax.configs import default
from vae_jax.errors import UsageError
from vae_jax.families import base
from vae_jax import networks
from vae_jax.families import vae as vae_family

REFERENCE = json.loads((REPO / "tests" / "data" / "mlp_reference.json").read_text())


def test_the_mlp_trains_as_recorded_before_images_had_a_shape(trained_workdir):
  """The tiny config's 2 epochs against values recorded at commit a6ebec1 (flat images).

  On the recording machine the parameters are bit-identical. Another CPU sums
  in another order: losses then differ in the 6th or 7th digit, so we allow
  1e-4 relative, and parameter arrays' sums of squares 1e-3 relative (a few
  weights may drift by up to 2.4e-4, see test_parallel). A changed
  initialisation, objective or update moves these by percents.
  """
  for ours, recorded in zip(reporting.read_metrics(trained_workdir), REFERENCE["metrics"]):
    for name in ("train_loss", "test_loss"):
      np.testing.assert_allclose(ours[name], recorded[name], rtol=1e-4)
  params = latest_params(trained_workdir)
  for path, leaf in jax.tree_util.tree_leaves_with_path(params):
    squares = float(np.sum(np.square(np.asarray(leaf, np.float64))))
    np.testing.assert_allclose(squares, REFERENCE["sum_of_squares"][jax.tree_util.keystr(path)],
                               rtol=1e-3)


def _conv_config(features=(32, 64), latents=20):
  config = default.get_config()
  config.model, config.conv_features, config.latents = "conv", features, latents
  return config


@pytest.mark.slow
@pytest.mark.parametrize("shape", [(28, 28, 1), (32, 32, 3)])
def test_conv_shapes_follow_the_keras_tutorial(shape):
  model = vae_family.from_config(_conv_config(), shape)
  params = vae_family.init_params(model, jax.random.key(0))
  h, w, c = shape
  shapes = jax.tree.map(jnp.shape, params)
  assert shapes["encoder"]["conv0"]["kernel"] == (3, 3, c, 32)
  assert shapes["encoder"]["conv1"]["kernel"] == (3, 3, 32, 64)
  assert shapes["encoder"]["stats"]["kernel"] == (h // 4 * w // 4 * 64, 40)
  assert shapes["decoder"]["project"]["kernel"] == (20, h // 4 * w // 4 * 64)
  assert shapes["decoder"]["deconv0"]["kernel"] == (3, 3, 64, 32)
  assert shapes["decoder"]["deconv1"]["kernel"] == (3, 3, 32, c)
  outputs, mean, logvar = model.apply({"params": params}, jnp.zeros((2, *shape)), jax.random.key(1))
  assert outputs.shape == (2, *shape) and mean.shape == logvar.shape == (2, 20)
  convs = 9 * (c * 32 + 32 * 64) + 9 * (64 * 32 + 32 * c) + 32 + 64 + 32 + c
  dense = (h * w // 16 * 64) * 40 + 40 + 20 * (h * w // 16 * 64) + h * w // 16 * 64
  assert base.parameter_count(params) == convs + dense


@pytest.mark.parametrize("shape, message", [
    ((30, 28, 1), "divisible by 4; the images are 30x28"),
    ((28, 28, 1), None),
])
def test_conv_needs_sizes_divisible_by_its_strides(shape, message):
  if message is None:
    vae_family.from_config(_conv_config(), shape)
    return
  with pytest.raises(UsageError, match=message):
    vae_family.from_config(_conv_config(), shape)


@pytest.mark.slow
def test_conv_trains_on_digits(tmp_path, tiny_config):
  tiny_config.model, tiny_config.conv_features, tiny_config.num_epochs = "conv", (8, 16), 2
  vae_jax.train_and_evaluate(tiny_config, tmp_path, verbose=False)
  losses = [r["test_loss"] for r in reporting.read_metrics(tmp_path)]
  assert losses[1] < losses[0] < 400  # 784 * log 2 = 543 nats is a coin per pixel.
  model = vae_jax.load(tmp_path)
  assert isinstance(model.module.encoder, networks.ConvEncoder)
  assert vae_jax.sample(model, jax.random.key(0), 3).shape == (3, 28, 28)


class _DeepEncoder(nn.Module):
  """A user's encoder: two hidden layers, images (..., H, W, C) -> mean, logvar."""

  latents: int

  @nn.compact
  def __call__(self, x):
    h = x.reshape(*x.shape[:-3], -1)
    for width in (128, 64):
      h = nn.gelu(nn.Dense(width)(h))
    stats = nn.Dense(2 * self.latents)(h)
    return stats[..., :self.latents], stats[..., self.latents:]


class _DeepDecoder(nn.Module):
  """A user's decoder: z -> Bernoulli logits (..., 28, 28, 1)."""

  @nn.compact
  def __call__(self, z):
    h = nn.gelu(nn.Dense(128)(z))
    return nn.Dense(784)(h).reshape(*z.shape[:-1], 28, 28, 1)


@pytest.mark.slow
def test_a_user_defined_network_trains_loads_and_evaluates(tmp_path, tiny_config):
  vae = vae_jax.VAE(encoder=_DeepEncoder(6), decoder=_DeepDecoder(), latents=6)
  vae_jax.train_and_evaluate(tiny_config, tmp_path, module=vae, verbose=False)
  records = reporting.read_metrics(tmp_path)
  assert records[1]["test_loss"] < records[0]["test_loss"]
  saved = json.loads((tmp_path / "config.json").read_text())
  assert saved["model"] == "custom" and saved["network"] == "_DeepEncoder/_DeepDecoder"

  model = vae_jax.load(tmp_path, module=vae)
  assert model.image_shape == (28, 28, 1) and model.module.latents == 6
  assert vae_jax.sample(model, jax.random.key(0), 4).shape == (4, 28, 28)
  images = np.zeros((5, 28, 28, 1), np.uint8)
  result = evaluation.evaluate(model, images, k=4, key=jax.random.key(0), progress=False)
  assert result["num_examples"] == 5 and result["latents"] == 6
  with pytest.raises(UsageError, match="user-defined network .*module=vae"):
    vae_jax.load(tmp_path)
  cli = run_module("vae_jax", "sample", f"--workdir={tmp_path}")
  assert cli.returncode == 2 and "module=vae" in cli.stderr
  assert len(cli.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("loc, log_scale", [
    (0.5, -3.0), (0.0, -6.0), (1.0, -6.0), (-3.0, 0.5), (4.0, -1.0), (0.37, 2.0), (0.5, -9.0),
])
@pytest.mark.slow
def test_discretised_logistic_sums_to_one_over_the_256_values(loc, log_scale):
  with jax.enable_x64():
    x = jnp.arange(256, dtype=jnp.float64) / 255
    log_p = objectives.discretized_logistic_log_prob(x, jnp.float64(loc), jnp.float64(log_scale))
    assert np.isfinite(log_p).all()
    np.testing.assert_allclose(jax.nn.logsumexp(log_p), 0.0, atol=1e-9)
    # Each bin is the difference of the logistic CDF at its edges (edges open).
    cdf = lambda t: jax.nn.sigmoid((t - loc) * jnp.exp(-log_scale))
    upper = jnp.where(x > 1 - 0.5 / 255, 1.0, cdf(x + 0.5 / 255))
    lower = jnp.where(x < 0.5 / 255, 0.0, cdf(x - 0.5 / 255))
    mass = upper - lower
    reliable = mass > 1e-6  # Where the naive difference loses < 1e-9 to cancellation.
    np.testing.assert_allclose(np.exp(log_p)[reliable], mass[reliable], rtol=1e-7)


@pytest.mark.slow
def test_discretised_logistic_gradients_are_finite_at_the_edges():
  grad = jax.grad(lambda loc, s: jnp.sum(objectives.discretized_logistic_log_prob(
      jnp.array([0.0, 0.5, 1.0]), loc, s)), argnums=(0, 1))(jnp.float32(0.5), jnp.float32(-8.0))
  assert all(np.isfinite(g) for g in grad)


@pytest.mark.parametrize("share, shape", [("channel", (3,)), ("pixel", (4, 4, 3))])
def test_logistic_likelihood_learns_one_scale_per_channel_or_pixel(share, shape):
  likelihood = likelihoods.DiscretizedLogistic((4, 4, 3), share, 0.1)
  x = jnp.full((2, 4, 4, 3), 128 / 255)
  params = likelihood.init(jax.random.key(0), x, x, method="log_prob")["params"]
  assert params["log_scale"].shape == shape
  np.testing.assert_allclose(params["log_scale"], math.log(0.1), rtol=1e-6)
  log_p = likelihood.apply({"params": params}, x, x, method="log_prob")
  assert log_p.shape == (2,) and np.all(log_p < 0)


@pytest.mark.slow
def test_logistic_bits_per_dim_is_a_discrete_likelihood(tmp_path, tiny_config):
  tiny_config.likelihood, tiny_config.num_epochs = "logistic", 1
  vae_jax.train_and_evaluate(tiny_config, tmp_path, verbose=False)
  model = vae_jax.load(tmp_path)
  images = vae_jax.sample(model, jax.random.key(0), 1)  # Anything of the right shape.
  images = np.asarray(np.round(np.asarray(images) * 255), np.uint8)[..., None]
  result = evaluation.evaluate(model, images, k=8, key=jax.random.key(0), progress=False)
  # A probability of 8-bit values: between 0 and 8 bits per sub-pixel.
  assert 0 < result["bits_per_dim"] < 8
