"""The Gaussian VAE's module and its builders (vae_jax/families/vae/model.py, __init__.py):
shapes, refusals, initialisation."""
import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import small_vae
from vae_jax import fields
from vae_jax import likelihoods
from vae_jax import schema
from vae_jax.configs import tiny
from vae_jax.errors import UsageError
from vae_jax.families import vae as vae_family


@pytest.mark.parametrize("features", [(4, 8), (2, 4, 8)])
def test_the_conv_vae_maps_images_to_their_own_shape(features):
  config = tiny.get_config()
  config.model, config.latents, config.conv_features = "conv", 3, features
  module = vae_family.from_config(config, (8, 16, 1))
  # Shapes only: jax.eval_shape traces without compiling.
  params = jax.eval_shape(lambda: vae_family.init_params(module, jax.random.key(0)))
  outputs, mean, logvar = jax.eval_shape(lambda p: module.apply(
      {"params": p}, jnp.zeros((2, 8, 16, 1)), jax.random.key(1)), params)
  assert outputs.shape == (2, 8, 16, 1) and mean.shape == logvar.shape == (2, 3)
  n, last = len(features), features[-1]
  smallest = (8 >> n) * (16 >> n) * last  # The feature map after n halvings.
  encoder = {name: p["kernel"].shape for name, p in params["encoder"].items()}
  channels = (1, *features)
  assert encoder == {**{f"conv{i}": (3, 3, channels[i], channels[i + 1]) for i in range(n)},
                     "stats": (smallest, 6)}
  decoder = {name: p["kernel"].shape for name, p in params["decoder"].items()}
  widths = (*reversed(features), 1)  # Back up to one channel, 3x3 each.
  assert decoder == {"project": (3, smallest),
                     **{f"deconv{i}": (3, 3, widths[i], widths[i + 1]) for i in range(n)}}


@pytest.mark.parametrize("field, value, message", [
    ("image_shape", (6, 8, 1), "divisible by 4; the images are 6x8"),
    ("decoder", "linear", "decoder=linear is an option of model=mlp only"),
    ("conv_features", (), "conv_features must be positive"),
    ("conv_features", (4, 0), "conv_features must be positive"),
])
def test_impossible_conv_models_are_refused(field, value, message):
  settings = vae_family.Settings(model="conv", conv_features=(4, 8), image_shape=(8, 8, 1))
  settings = dataclasses.replace(settings, **{field: value})
  with pytest.raises(UsageError, match=message):
    vae_family.check(settings, [])


@pytest.mark.parametrize("field, value", [("model", "resnet"), ("decoder", "deep"),
                                          ("likelihood", "poisson"), ("logistic_scale", "image"),
                                          ("compute_dtype", "float16")])
def test_unknown_model_choices_are_refused_naming_the_choices(field, value):
  config = tiny.get_config()
  config[field] = value
  with pytest.raises(UsageError, match=f"unknown {field} '{value}'; choose one of "):
    schema.check(config)


@pytest.mark.slow
def test_the_conv_decoder_ends_without_a_relu():
  """Its last transposed convolution gives logits, which must be free to be negative."""
  config = tiny.get_config()
  config.model, config.latents, config.conv_features = "conv", 3, (2, 4)
  module = vae_family.from_config(config, (8, 8, 1))
  params = jax.jit(vae_family.init_params, static_argnums=0)(module, jax.random.key(0))
  z = jax.random.normal(jax.random.key(1), (16, 3))
  logits = jax.jit(lambda p, z: module.apply({"params": p}, z, method=module.decode))(params, z)
  assert float(logits.min()) < 0 < float(logits.max())


def test_the_config_builds_what_it_names():
  config = tiny.get_config()
  config.likelihood, config.decoder = "gaussian", "linear"
  module = vae_family.from_config(config, (4, 4, 1))
  assert isinstance(module.likelihood, likelihoods.Gaussian)
  assert module.decoder.hidden == 0 and module.encoder.dtype is None  # float32: flax's default.
  config.likelihood, config.compute_dtype = "logistic", "bfloat16"
  module = vae_family.from_config(config, (4, 4, 1))
  assert isinstance(module.likelihood, likelihoods.DiscretizedLogistic)
  assert module.encoder.dtype == jnp.bfloat16 and module.decoder.dtype == jnp.bfloat16
  config.likelihood = "bernoulli"
  assert isinstance(vae_family.from_config(config, (4, 4, 1)).likelihood, likelihoods.Bernoulli)


def test_the_family_settings_defaults_are_the_default_configs():
  """What a config.json without a field (an older run's) is read with."""
  from vae_jax.configs import default  # pylint: disable=g-import-not-at-top
  assert fields.settings_of(vae_family.Settings, default.get_config()) == vae_family.Settings()


@pytest.mark.slow
def test_layers_start_like_pytorchs_linear():
  """U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for kernels and biases: the tutorial's init."""
  module, params = small_vae()  # 16 pixels, 16 hidden units, 3 latents.
  kernel = np.asarray(params["encoder"]["hidden"]["kernel"])
  assert kernel.shape == (16, 16)
  bound = 1 / math.sqrt(16)
  assert -bound <= kernel.min() < -0.8 * bound and 0.8 * bound < kernel.max() <= bound
  bias = np.asarray(params["decoder"]["out"]["bias"])  # Fan-in: 16 hidden units.
  assert 0.5 / math.sqrt(16) < np.abs(bias).max() <= 1 / math.sqrt(16)
  stats = np.asarray(params["encoder"]["stats"]["kernel"])  # Fan-in 16, 2 x 3 outputs.
  assert np.abs(stats).max() <= 1 / math.sqrt(16)
