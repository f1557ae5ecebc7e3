"""Extending the model from outside the package: a prior of one's own, a subclass with
more parameters; what config.json records of them and what `load` refuses."""
import json

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import vae_jax
from vae_jax import objectives
from vae_jax import reporting
from vae_jax.errors import UsageError
from vae_jax.families import vae as vae_family
from vae_jax.families.vae import model as vae_model
from vae_jax.families.vae import objective as vae_objective


class MixturePrior(nn.Module):
  """A user's learned mixture of K unit-variance Gaussians: no closed-form KL."""

  latents: int
  components: int = 3

  def setup(self):
    self.means = self.param("means", nn.initializers.normal(1.0), (self.components, self.latents))
    self.logits = self.param("logits", nn.initializers.zeros, (self.components,))

  def log_prob(self, z, encode=None):
    log_pi = jax.nn.log_softmax(self.logits)
    per = objectives.gaussian_log_density(z[..., None, :], self.means, 0.0)
    return jax.nn.logsumexp(log_pi + per, axis=-1)

  def sample(self, key, num, encode=None):
    pick, noise = jax.random.split(key)
    k = jax.random.categorical(pick, self.logits, shape=(num,))
    return self.means[k] + jax.random.normal(noise, (num, self.latents))


class StandardNormal(nn.Module):
  """N(0, I) written by a user, without its closed-form KL."""

  latents: int

  def log_prob(self, z, encode=None):
    return objectives.gaussian_log_density(z, 0.0, 0.0)

  def sample(self, key, num, encode=None):
    return jax.random.normal(key, (num, self.latents))


class WithTemperature(vae_jax.VAE):
  """A subclass with a parameter of its own, created by its own `initialize`."""

  @nn.compact
  def initialize(self, x, key):
    self.param("log_temperature", nn.initializers.zeros, ())
    return super().initialize(x, key)


def _vae(cls=vae_jax.VAE, **parts):
  return cls(vae_jax.MLPEncoder(32, 2), vae_jax.MLPDecoder(32, (28, 28, 1)), latents=2,
             image_shape=(28, 28, 1), **parts)


@pytest.mark.slow
def test_a_users_prior_is_trained_evaluated_and_recorded(tiny_config, tmp_path):
  tiny_config.num_epochs, tiny_config.eval_iwae_every = 1, 1
  vae = _vae(prior=MixturePrior(2))
  vae_jax.train_and_evaluate(tiny_config, tmp_path, module=vae, verbose=False)
  model = vae_jax.load(tmp_path, module=vae)
  assert set(model.params["prior"]) == {"means", "logits"}
  row = reporting.read_metrics(tmp_path)[-1]
  # Without a closed form the KL is log q - log p at the sample: recon + kl is the ELBO still.
  assert row["test_loss"] == pytest.approx(row["test_recon"] + row["test_kl"], rel=1e-6)
  assert row["test_iwae_nll"] <= row["test_loss"] + 1e-3  # The IWAE bound is the tighter one.
  saved = json.loads((tmp_path / "config.json").read_text())
  assert saved["prior"] == f"{__name__}.MixturePrior" and saved["posterior"] == "gaussian"
  assert saved["vae_class"] == "vae_jax.families.vae.model.VAE" and saved["likelihood"] == "bernoulli"
  digits = vae_jax.sample(model, jax.random.key(0), 4)  # From the mixture.
  assert digits.shape == (4, 28, 28)


@pytest.mark.slow
def test_load_refuses_another_model_than_the_one_trained(tiny_config, tmp_path):
  tiny_config.num_epochs = 1
  vae_jax.train_and_evaluate(tiny_config, tmp_path, module=_vae(prior=MixturePrior(2)),
                             verbose=False)
  with pytest.raises(UsageError, match=r"prior .*MixturePrior vs normal"):
    vae_jax.load(tmp_path, module=_vae())
  with pytest.raises(UsageError, match=r"vae_class vae_jax.families.vae.model.VAE vs "
                                       r".*WithTemperature"):
    vae_jax.load(tmp_path, module=_vae(WithTemperature, prior=MixturePrior(2)))


def test_a_subclass_gets_the_parameters_its_own_initialize_creates(key):
  params = vae_family.init_params(_vae(WithTemperature), key)
  assert "log_temperature" in params and float(params["log_temperature"]) == 0.0


@pytest.mark.slow
def test_the_monte_carlo_kl_of_a_users_standard_normal_agrees_with_the_closed_form(key):
  """The same model twice: the default prior (analytic KL) and the user's (its estimate)."""
  default, users = _vae(), _vae(prior=StandardNormal(2))
  params = vae_family.init_params(default, key)
  x = jax.random.uniform(jax.random.key(1), (8, 28, 28, 1))
  draws = 4000
  keys = jax.random.split(jax.random.key(2), draws)
  mc = jax.vmap(lambda k: vae_objective.negative_elbo(users, params, x, k)["kl"])(keys)
  exact = vae_objective.negative_elbo(default, params, x, key)["kl"]
  stderr = np.asarray(mc.std(axis=0)) / np.sqrt(draws)
  np.testing.assert_array_less(np.abs(np.asarray(mc.mean(axis=0) - exact)), 5 * stderr + 1e-5)
  # The importance weights use the prior's own log-density: the same bound either way.
  a = vae_objective.iwae_bound(default, params, x, jax.random.key(3), 16)
  b = vae_objective.iwae_bound(users, params, x, jax.random.key(3), 16)
  np.testing.assert_allclose(a, b, rtol=1e-6)


@pytest.mark.slow
def test_the_log_variance_is_held_in_a_safe_range(key):
  """An encoder that asks for exp(+-1000) gets a finite, bounded variance and KL."""
  class Extreme(flax.linen.Module):
    @flax.linen.compact
    def __call__(self, x):
      flat = x.reshape(*x.shape[:-3], -1)
      return flat[..., :2] * 0, jnp.stack([flat[..., 0] * 0 + 1e3, flat[..., 0] * 0 - 1e3], -1)

  vae = vae_jax.VAE(Extreme(), vae_jax.MLPDecoder(8, (28, 28, 1)), latents=2,
                    image_shape=(28, 28, 1))
  params = vae_family.init_params(vae, key)
  mean, logvar = vae.apply({"params": params}, jnp.zeros((1, 28, 28, 1)), method=vae.encode)
  assert logvar.tolist() == [[vae_model.LOGVAR_MAX, vae_model.LOGVAR_MIN]]
  assert np.isfinite(float(vae_objective.negative_elbo(vae, params, jnp.zeros((1, 28, 28, 1)),
                                                    key)["loss"][0]))


@pytest.mark.slow
def test_a_run_recorded_before_the_families_moved_loads_with_its_own_module(tiny_config,
                                                                           tmp_path):
  """config.json of an older version names vae_jax.model.VAE: the same class, moved."""
  tiny_config.num_epochs = 1
  vae_jax.train_and_evaluate(tiny_config, tmp_path, module=_vae(), verbose=False)
  path = tmp_path / "config.json"
  path.write_text(path.read_text().replace("vae_jax.families.vae.model.VAE", "vae_jax.model.VAE"))
  assert vae_jax.load(tmp_path, module=_vae()).step == 125
  with pytest.raises(UsageError, match=r"vae_class vae_jax\S*VAE vs .*WithTemperature"):
    vae_jax.load(tmp_path, module=_vae(WithTemperature))
