"""The top-down hierarchy (`vae_jax.hierarchy`) against first principles.

A two-layer model with one latent per layer and four Bernoulli pixels, whose
log p(x) = log of the integral of p(z_2) p(z_1 | z_2) p(x | z_1) over (z_1, z_2)
is computed by quadrature: the IWAE bound over both layers (the joint weight)
approaches it, and the analytic per-layer KLs the ELBO trains on sum to the
Monte Carlo KL E_q[log q(z_1, z_2 | x) - log p(z_1, z_2)]. The end-to-end runs
are in tests/test_hierarchy_train.py.
"""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vae_jax.families.vae import hierarchy
from vae_jax import objectives
from vae_jax import networks
from vae_jax.families import vae as vae_family
import vae_jax
from vae_jax.families.vae import objective as vae_objective

IMAGE = (2, 2, 1)
X = np.array([[1, 0, 1, 1], [0, 0, 1, 0], [1, 1, 0, 0]], np.float32).reshape(-1, *IMAGE)
SIZES = (1, 1)


def _tiny():
  """The two-layer model and parameters moved off their initialisation: the decoder's
  weights x3 (so p(x | z_1) varies by a few nats over z_1), q's log-variances +0.5
  (a q wider than the posterior keeps the importance weights' variance finite)."""
  vae = hierarchy.HierarchicalVAE(
      hierarchy.LadderEncoder(8, 2), networks.MLPDecoder(8, IMAGE), 1, IMAGE,
      topdown=hierarchy.TopDown(8, SIZES), layer_latents=SIZES)
  params = jax.jit(lambda key: vae_family.init_params(vae, key))(jax.random.key(0))
  params["decoder"] = jax.tree.map(lambda a: 3.0 * a, params["decoder"])
  for name in ("q1", "q2"):
    bias = params["topdown"][name]["bias"]
    params["topdown"][name]["bias"] = bias.at[1].add(0.5)  # (mean, logvar) of one latent.
  return vae, params


def _apply(vae, method, static_argnums=()):
  run = lambda params, *args: vae.apply({"params": params}, *args, method=method)
  return jax.jit(run, static_argnums=static_argnums)


def quadrature_log_px(vae, params, radius: float = 10.0, n: int = 201) -> np.ndarray:
  """log p(x) per example of X by a Riemann sum on an n x n grid of (z_1, z_2), float64."""
  axis = np.linspace(-radius, radius, n)
  grid = jnp.asarray(np.stack(np.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2),
                     jnp.float32)
  log_prior = np.asarray(_apply(vae, vae.log_prior)(params, grid), np.float64)  # (G,)
  log_lik = _apply(vae, vae.log_px_at)(params, jnp.asarray(X), grid[:, None].repeat(len(X), 1))
  log_joint = np.asarray(log_lik, np.float64).T + log_prior  # (B, G)
  peak = log_joint.max(axis=1, keepdims=True)
  cell = (axis[1] - axis[0]) ** 2
  return np.log(np.sum(np.exp(log_joint - peak), axis=1) * cell) + peak[:, 0]


def test_a_one_layer_config_is_the_one_layer_vae():
  config = {"stochastic_layers": 1, "image_shape": (28, 28, 1)}
  assert type(vae_family.from_config(config, (28, 28, 1))) is vae_jax.VAE
  deep = vae_family.from_config({"stochastic_layers": 3, "latents": 20}, (28, 28, 1))
  assert deep.layer_latents == (20, 10, 5)
  assert vae_family.from_config({"stochastic_layers": 2, "latents": 6, "layer_latents": (6, 6)},
                               (28, 28, 1)).layer_latents == (6, 6)


@pytest.mark.slow
def test_iwae_over_both_layers_approaches_the_quadrature_log_likelihood():
  """The joint weight log p(x, z_1, z_2) - log q(z_1, z_2 | x) at k = 20,000: within
  4 standard errors of the quadrature (see tests/families.py for why 4 and why the
  largest weight's share is checked); the ELBO below it by more than 10 of its own."""
  vae, params = _tiny()
  exact = quadrature_log_px(vae, params)
  k = 20_000
  keys = objectives.example_keys(jax.random.key(1), jnp.arange(len(X)))
  x = jnp.asarray(X)
  mean, logvar = _apply(vae, vae.encode)(params, x)
  log_w = np.asarray(_apply(vae, vae.log_weights)(params, x, mean, logvar, keys,
                                                  jnp.arange(k))[0], np.float64)  # (B, k)
  w = np.exp(log_w - log_w.max(axis=1, keepdims=True))
  iwae = np.log(w.mean(axis=1)) + log_w.max(axis=1)
  se = w.std(axis=1) / w.mean(axis=1) / math.sqrt(k)
  assert np.all(w.max(axis=1) / w.sum(axis=1) < 0.05) and np.all(se < 0.05), se
  np.testing.assert_array_less(np.abs(iwae - exact), 4 * se)
  elbo, elbo_se = log_w.mean(axis=1), log_w.std(axis=1) / math.sqrt(k)
  np.testing.assert_array_less(elbo + 10 * elbo_se, exact)
  # The evaluation engine's chunked bound draws the same samples.
  bound = vae_objective.importance_terms(vae, params, x, keys, k, 2_000)["iwae"]
  np.testing.assert_allclose(bound, iwae, atol=1e-3)


@pytest.mark.slow
def test_the_analytic_per_layer_kls_sum_to_the_monte_carlo_kl():
  """E_q[KL_1(z_2) + KL_2] (what the ELBO trains on, one draw of z_2 each) equals
  E_q[log q(z_1, z_2 | x) - log p(z_1, z_2)], each from 20,000 draws per example,
  within 4 standard errors of their difference; and the single-sample ELBO's
  mean equals the mean log weight the same way."""
  vae, params = _tiny()
  n, x = 20_000, jnp.asarray(X)
  terms = _apply(vae, vae.elbo_terms)(params, jnp.tile(x, (n, 1, 1, 1)), jax.random.key(2))
  analytic = np.asarray(terms["kl"], np.float64).reshape(n, len(X))
  np.testing.assert_allclose(terms["kl_per_layer"].sum(-1), terms["kl"], rtol=1e-6)
  assert np.all(np.asarray(terms["kl_per_layer"]) >= 0)
  z, log_q = _apply(vae, vae.draw, static_argnums=3)(params, x, jax.random.key(3), n)
  log_p = _apply(vae, vae.log_prior)(params, z)
  monte_carlo = np.asarray(log_q - log_p, np.float64)
  se = np.sqrt(analytic.var(axis=0) / n + monte_carlo.var(axis=0) / n)
  np.testing.assert_array_less(np.abs(analytic.mean(axis=0) - monte_carlo.mean(axis=0)), 4 * se)
  # log q at given z (what STL and DReG would re-evaluate) is the drawn one.
  np.testing.assert_allclose(_apply(vae, vae.log_q_at)(params, x, z), log_q, atol=1e-4)
  log_w = np.asarray(_apply(vae, vae.log_px_at)(params, x, z), np.float64) - monte_carlo
  loss = np.asarray(terms["loss"], np.float64).reshape(n, len(X))
  se = np.sqrt(loss.var(axis=0) / n + log_w.var(axis=0) / n)
  np.testing.assert_array_less(np.abs(loss.mean(axis=0) + log_w.mean(axis=0)), 4 * se)


@pytest.mark.slow
def test_prior_samples_follow_the_temperature():
  """At temperature 0 every draw is the top-down path of the means; at 1 they spread."""
  vae, params = _tiny()
  sample = _apply(vae, vae.sample_prior, static_argnums=(2, 3))
  cold, warm = sample(params, jax.random.key(4), 500, 0.0), sample(params, jax.random.key(4), 500, 1.0)
  assert float(jnp.std(cold)) == pytest.approx(0.0, abs=1e-6) and float(jnp.std(warm)) > 0.3
  # Keeping both layers of q is the posterior-mean code; keeping none draws from p.
  keep = _apply(vae, vae.reconstruct_keeping, static_argnums=(3, 4))
  x = jnp.asarray(X)
  np.testing.assert_allclose(keep(params, x, jax.random.key(5), 2, 1.0),
                             _apply(vae, vae.encode)(params, x)[0], atol=1e-6)
  np.testing.assert_allclose(keep(params, x, jax.random.key(5), 0, 0.0), cold[:3], atol=1e-6)
  # Down from a given top layer: from z_2 = 0 at the prior's means, the coldest sample.
  down = _apply(vae, vae.from_top)(params, jnp.zeros((1, 1)), jnp.zeros((1, 2)))
  np.testing.assert_allclose(down, cold[:1], atol=1e-6)


@pytest.mark.parametrize("objective", ["elbo", "iwae"])
@pytest.mark.slow
def test_every_parameter_gets_a_gradient(objective):
  """The single-sample ELBO and the 5-sample IWAE bound (through `estimators`, as
  `objective=iwae` trains) reach every weight of both layers, finitely."""
  from vae_jax import estimators  # pylint: disable=g-import-not-at-top
  vae, params = _tiny()
  x = jnp.asarray(X)

  def loss(params):
    if objective == "elbo":
      return jnp.mean(vae.apply({"params": params}, x, jax.random.key(6),
                                method=vae.elbo_terms)["loss"])
    terms = estimators.vae_terms(vae, x, jax.random.key(6), 5)
    q, p = estimators.split_params(params, False)
    return jnp.mean(estimators.surrogate("iwae", terms, q, p))

  grads = jax.jit(jax.grad(loss))(params)
  for path, g in jax.tree_util.tree_leaves_with_path(grads):
    assert np.all(np.isfinite(g)) and np.any(g != 0), jax.tree_util.keystr(path)
