"""The train state and one optimizer step (vae_jax/train_state.py), on the Gaussian VAE."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import vae_training

from vae_jax import fields
from vae_jax import schema
from vae_jax import stacked
from vae_jax import train_state
from vae_jax.configs import tiny
from vae_jax.families import vae as vae_family
from vae_jax.families.vae import objective as vae_objective


def _state(config, model, num_models=1, **family):
  return vae_training(config, model, num_models, **family)


@pytest.mark.slow
def test_the_weighted_step_with_beta_1_and_no_free_bits_is_the_plain_step():
  config = tiny.get_config()
  config.hidden, config.latents = 16, 3
  model = vae_family.from_config(config, (4, 4, 1))
  state, plain, settings = _state(config, model)
  weighted = dataclasses.replace(plain, family=dataclasses.replace(plain.family, weighted=True))
  batch = jnp.asarray(np.random.default_rng(0).integers(0, 256, (8, 4, 4, 1)), jnp.uint8)
  step = jax.jit(train_state.step_one, static_argnums=(0,))
  one, s = stacked.index(state, 0), stacked.index(settings, 0)
  a, metrics_a = step(plain, one, batch, jax.random.key(1), s)
  b, metrics_b = step(weighted, one, batch, jax.random.key(1), s)
  np.testing.assert_allclose(metrics_b["objective"], metrics_a["loss"], rtol=1e-6)
  # The two objectives round differently, and Adam's first step is lr * sign(gradient),
  # so compare each array as a whole (as test_parallel does): a wrongly weighted KL moves
  # whole arrays by far more than 1e-4.
  for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
    assert np.linalg.norm(x - y) <= 1e-4 * np.linalg.norm(x)
  assert int(a.step) == 1 and bool(a.alive)


@pytest.mark.parametrize("field, value, weighted", [
    (None, None, False), ("beta", 4.0, True), ("beta", 0.0, True), ("kl_warmup_steps", 10, True),
    ("free_bits", 0.5, True), ("learning_rate", 0.01, False)])
def test_the_step_weighs_the_kl_exactly_when_a_setting_asks_for_it(field, value, weighted):
  """Otherwise it minimises the plain negative ELBO (and logs no train_objective)."""
  config = tiny.get_config()
  if field:
    config[field] = value
  models = [{n: config[n] for n in schema.sweepable()}]
  settings = fields.settings_of(vae_family.Settings, config)
  assert vae_family.GaussianVAE.build(settings, models).weighted is weighted


@pytest.mark.slow
def test_the_kl_warm_up_starts_from_the_reconstruction_alone():
  config = tiny.get_config()
  config.hidden, config.latents, config.kl_warmup_steps = 16, 3, 10
  model = vae_family.from_config(config, (4, 4, 1))
  state, step, settings = _state(config, model)
  assert step.family.weighted
  batch = jnp.asarray(np.random.default_rng(0).integers(0, 256, (8, 4, 4, 1)), jnp.uint8)
  _, metrics = jax.jit(train_state.step_one, static_argnums=(0,))(
      step, stacked.index(state, 0), batch, jax.random.key(1), stacked.index(settings, 0))
  # At step 0 the KL weighs nothing: the objective is the mean reconstruction term.
  x = batch.astype(jnp.float32) / 255
  z_key, _ = jax.random.split(jax.random.key(1))
  terms = vae_objective.negative_elbo(model, stacked.index(state, 0).params, x, z_key)
  np.testing.assert_allclose(metrics["objective"], jnp.mean(terms["recon"]), rtol=1e-5)
  np.testing.assert_allclose(metrics["loss"], jnp.mean(terms["loss"]), rtol=1e-5)
