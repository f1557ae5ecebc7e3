"""The convolutional hierarchy (`model=conv`, stochastic_layers > 1) against its own maths,
and a user's own cells; the end-to-end run is in tests/test_hierarchy_train.py.

A small model (8x8 images, one stride-2 convolution to a 4x4 map, one residual
block per cell, three layers of 3/2/1 latents) keeps each check to a few seconds,
most of them compiling.
"""
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vae_jax.families.vae import hierarchy
from vae_jax import objectives
from vae_jax import networks
from vae_jax.families import vae as vae_family

IMAGE = (8, 8, 1)
CONFIG = {"model": "conv", "stochastic_layers": 3, "latents": 3, "layer_latents": (3, 2, 1),
          "conv_features": (4,), "residual_blocks": 1}


@pytest.fixture(scope="module")
def tiny():
  """The model, its parameters and 3 images of random pixels in {0, 1}."""
  vae = vae_family.from_config(CONFIG, IMAGE)
  params = jax.jit(lambda key: vae_family.init_params(vae, key))(jax.random.key(0))
  x = jnp.asarray(jax.random.bernoulli(jax.random.key(1), 0.3, (3, *IMAGE)), jnp.float32)
  return vae, params, x


def _apply(vae, method, static_argnums=()):
  run = lambda params, *args: vae.apply({"params": params}, *args, method=method)
  return jax.jit(run, static_argnums=static_argnums)


def test_a_conv_config_builds_residual_cells():
  vae = vae_family.from_config({**CONFIG, "residual_blocks": 2}, IMAGE)
  assert isinstance(vae.topdown, hierarchy.ConvTopDown) and vae.topdown.map_size == (4, 4)
  assert isinstance(vae.encoder, hierarchy.ConvLadderEncoder)
  assert isinstance(vae.decoder, networks.ConvDecoder)
  params = jax.eval_shape(lambda key: vae_family.init_params(vae, key), jax.random.key(0))
  # Two blocks per cell in the bottom-up (layers 2, 3) and the top-down path (layers 1, 2).
  assert {"conv0", "up2_0", "up2_1", "up3_0", "up3_1"} == set(params["encoder"])
  assert {"cell1_0", "cell1_1", "cell2_0", "cell2_1", "t1", "t2", "p1", "p2", "q1", "q2",
          "q3"} == set(params["topdown"])  # No p3: p(z_3) = N(0, I).
  assert params["topdown"]["cell1_0"]["conv0"]["kernel"].shape == (3, 3, 4, 4)
  assert params["topdown"]["q1"]["kernel"].shape == (4 * 4 * 8, 2 * 3)  # [d_1, t_1] -> z_1.


def _monte_carlo(vae, params, x, n):
  """One program: the analytic terms of n single-sample ELBOs per example, and n draws
  of all layers from q with log q, log p(z), log q at the drawn z and log p(x | z_1)."""
  def run(params):
    apply = lambda method, *args: vae.apply({"params": params}, *args, method=method)
    terms = apply(vae.elbo_terms, jnp.tile(x, (n, 1, 1, 1)), jax.random.key(2))
    z, log_q = apply(lambda m, *a: m.draw(*a, n), x, jax.random.key(3))
    return terms, log_q, apply(vae.log_prior, z), apply(vae.log_q_at, x, z), apply(
        vae.log_px_at, x, z)
  return jax.jit(run)(params)


@pytest.mark.slow
def test_the_analytic_per_layer_kls_sum_to_the_monte_carlo_kl(tiny):
  """E_q[sum_i KL_i] (what the ELBO trains on) equals E_q[log q(z | x) - log p(z)] over
  all three layers, each from 5,000 draws per example, within 4 standard errors of
  their difference; and the single-sample ELBO's mean is the mean joint log weight."""
  vae, params, x = tiny
  n = 5_000
  terms, log_q, log_p, log_q_again, log_px = _monte_carlo(vae, params, x, n)
  analytic = np.asarray(terms["kl"], np.float64).reshape(n, len(x))
  np.testing.assert_allclose(terms["kl_per_layer"].sum(-1), terms["kl"], rtol=1e-5)
  assert terms["kl_per_layer"].shape == (n * len(x), 3) and np.all(terms["kl_per_layer"] >= 0)
  monte_carlo = np.asarray(log_q - log_p, np.float64)
  se = np.sqrt(analytic.var(axis=0) / n + monte_carlo.var(axis=0) / n)
  np.testing.assert_array_less(np.abs(analytic.mean(axis=0) - monte_carlo.mean(axis=0)), 4 * se)
  np.testing.assert_allclose(log_q_again, log_q, rtol=1e-5, atol=1e-3)  # At given z.
  log_w = np.asarray(log_px, np.float64) - monte_carlo
  loss = np.asarray(terms["loss"], np.float64).reshape(n, len(x))
  se = np.sqrt(loss.var(axis=0) / n + log_w.var(axis=0) / n)
  np.testing.assert_array_less(np.abs(loss.mean(axis=0) + log_w.mean(axis=0)), 4 * se)


@pytest.mark.slow
def test_the_iwae_bound_rises_above_the_elbo(tiny):
  """The IWAE bound over all layers (the log-mean-exp of the joint weights, as the
  evaluation engine sums them) at k = 1,000 lies above the mean of the same weights
  (the ELBO) by more than 10 of the ELBO's standard errors: an untrained q is far
  from the posterior, and the weights of all layers vary together."""
  vae, params, x = tiny
  keys = objectives.example_keys(jax.random.key(4), jnp.arange(len(x)))
  k = 1_000

  def run(params):
    mean, logvar = vae.apply({"params": params}, x, method=vae.encode)
    return vae.apply({"params": params}, x, mean, logvar, keys, jnp.arange(k),
                     method=vae.log_weights)[0]

  log_w = np.asarray(jax.jit(run)(params), np.float64)
  elbo, elbo_se = log_w.mean(axis=1), log_w.std(axis=1) / math.sqrt(k)
  peak = log_w.max(axis=1)
  bound = np.log(np.exp(log_w - peak[:, None]).mean(axis=1)) + peak
  np.testing.assert_array_less(elbo + 10 * elbo_se, bound)


@pytest.mark.slow
def test_conv_samples_follow_the_temperature(tiny):
  """At temperature 0 every draw is the path of the prior's means; keeping all layers
  of q is the posterior-mean code."""
  vae, params, x = tiny

  def run(params):
    apply = lambda method, *args: vae.apply({"params": params}, *args, method=method)
    cold, warm = (apply(vae.sample_prior, jax.random.key(7), 50, t) for t in (0.0, 1.0))
    return cold, warm, apply(vae.reconstruct_keeping, x, jax.random.key(8), 3), apply(
        vae.encode, x)[0]

  cold, warm, kept, mean = jax.jit(run)(params)
  assert cold.shape == (50, 3) and float(jnp.std(cold, 0).max()) < 1e-6
  assert float(jnp.std(warm)) > 0.3
  np.testing.assert_allclose(kept, mean, atol=1e-5)


@pytest.mark.slow
def test_every_parameter_gets_a_gradient(tiny):
  """The ELBO reaches every weight of the stem, the residual cells of both paths and
  the decoder, finitely (the IWAE surrogate shares the walk: tests/test_hierarchy.py)."""
  vae, params, x = tiny
  loss = lambda params: jnp.mean(vae.apply({"params": params}, x, jax.random.key(6),
                                           method=vae.elbo_terms)["loss"])
  grads = jax.jit(jax.grad(loss))(params)
  for path, g in jax.tree_util.tree_leaves_with_path(grads):
    assert np.all(np.isfinite(g)) and np.any(g != 0), jax.tree_util.keystr(path)


class GatedCells(hierarchy.TopDown):
  """A user's cells: the docs' example (docs/families.md), a gated top-down layer."""

  def cell(self, i, feature, z_above):
    n = self.layer_latents[i]
    if z_above is None:
      return None, (None if feature is None else nn.Dense(2 * n, name=f"q{i + 1}")(feature))
    value, gate = jnp.split(nn.Dense(2 * self.hidden, name=f"t{i + 1}")(z_above), 2, axis=-1)
    t = value * nn.sigmoid(gate)
    p = nn.Dense(2 * n, name=f"p{i + 1}")(t)
    if feature is None:
      return p, None
    feature = jnp.broadcast_to(feature, (*t.shape[:-1], feature.shape[-1]))
    return p, nn.Dense(2 * n, name=f"q{i + 1}")(jnp.concatenate([feature, t], axis=-1))


@pytest.mark.slow
def test_your_own_cells_get_the_shared_terms():
  sizes = (4, 2)
  vae = hierarchy.HierarchicalVAE(hierarchy.LadderEncoder(16, 2),
                                  networks.MLPDecoder(16, IMAGE), 4, IMAGE,
                                  topdown=GatedCells(8, sizes), layer_latents=sizes)
  params = jax.jit(lambda key: vae_family.init_params(vae, key))(jax.random.key(0))
  assert params["topdown"]["t1"]["kernel"].shape == (2, 16)
  x = jax.random.uniform(jax.random.key(1), (5, *IMAGE))
  terms = _apply(vae, vae.elbo_terms)(params, x, jax.random.key(2))
  assert terms["kl_per_layer"].shape == (5, 2) and np.all(np.isfinite(terms["loss"]))
