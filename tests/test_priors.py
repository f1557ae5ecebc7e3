"""Priors against direct computations: densities by scipy, the KL by Monte Carlo, and
log p(x) by quadrature."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special
from scipy import stats

import families
from vae_jax import objectives
from vae_jax.families.vae import priors


def _diagonal_mixture_log_prob(z, log_weights, means, variances):
  """scipy: log sum_k pi_k prod_l N(z_l; mean_kl, var_kl), z (N, L) -> (N,), float64."""
  z = np.asarray(z, np.float64)
  per_component = np.stack([stats.multivariate_normal(m, np.diag(v)).logpdf(z)
                            for m, v in zip(np.asarray(means, np.float64),
                                            np.asarray(variances, np.float64))], axis=-1)
  return special.logsumexp(per_component + np.asarray(log_weights, np.float64), axis=-1)


def test_standard_normal_log_prob_sample_and_shapes(key):
  prior = priors.StandardNormal(3)
  z = jax.random.normal(key, (4, 5, 3))
  log_p = prior.apply({}, z, method=prior.log_prob)
  assert log_p.shape == (4, 5) and log_p.dtype == jnp.float32
  np.testing.assert_allclose(log_p, stats.norm.logpdf(np.asarray(z)).sum(-1), rtol=1e-6)
  draws = prior.apply({}, key, 7, method=prior.sample)
  assert draws.shape == (7, 3) and draws.dtype == jnp.float32


@pytest.mark.slow
def test_standard_normal_analytic_kl_matches_monte_carlo(key):
  prior = priors.StandardNormal(4)
  k_mean, k_logvar, k_z = jax.random.split(key, 3)
  mean, logvar = jax.random.normal(k_mean, (3, 4)), jax.random.normal(k_logvar, (3, 4))
  n = 200_000
  z = mean + jnp.exp(0.5 * logvar) * jax.random.normal(k_z, (n, 3, 4))
  log_ratio = (objectives.gaussian_log_density(z, mean, logvar)
               - prior.apply({}, z, method=prior.log_prob))
  estimate = np.asarray(log_ratio.mean(0))
  stderr = np.asarray(log_ratio.std(0)) / math.sqrt(n)
  exact = prior.apply({}, mean, logvar, method=prior.kl_per_dimension).sum(-1)
  assert exact.shape == (3,)
  np.testing.assert_array_equal(exact, objectives.gaussian_kl(mean, logvar))
  # 5 standard errors of a mean of 200,000 draws: a false failure once in ~2 million.
  np.testing.assert_array_less(np.abs(estimate - exact), 5 * stderr)


def test_only_the_standard_normal_has_an_analytic_kl():
  assert hasattr(priors.StandardNormal, "kl_per_dimension")
  assert not hasattr(priors.MixtureOfGaussians, "kl_per_dimension")
  assert not hasattr(priors.VampPrior, "kl_per_dimension")


def test_mixture_starts_near_the_standard_normal_with_distinct_means(key):
  prior = priors.MixtureOfGaussians(latents=3, components=5)
  params = prior.init(key, jnp.zeros((1, 3)), method=prior.log_prob)["params"]
  np.testing.assert_array_equal(params["logvars"], 0.0)
  np.testing.assert_array_equal(params["logits"], 0.0)
  means = np.asarray(params["means"])
  assert np.abs(means).max() < 0.6  # N(0, 0.1^2): 6 standard deviations.
  distances = np.linalg.norm(means[:, None] - means[None], axis=-1)
  assert np.all(distances[~np.eye(5, dtype=bool)] > 0)


@pytest.mark.slow
def test_mixture_log_prob_matches_scipy(key):
  prior = priors.MixtureOfGaussians(latents=3, components=4)
  params = prior.init(key, jnp.zeros((1, 3)), method=prior.log_prob)["params"]
  params = families.perturb(params, jax.random.fold_in(key, 1), 1.0)
  z = 2 * jax.random.normal(jax.random.fold_in(key, 2), (6, 5, 3))
  log_p = prior.apply({"params": params}, z, method=prior.log_prob)
  assert log_p.shape == (6, 5)
  expected = _diagonal_mixture_log_prob(
      z.reshape(-1, 3), jax.nn.log_softmax(params["logits"]), params["means"],
      np.exp(params["logvars"]))
  # float32 against float64: a few ulps of values of order 10.
  np.testing.assert_allclose(log_p.reshape(-1), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_mixture_samples_have_the_mixture_moments(key):
  prior = priors.MixtureOfGaussians(latents=2, components=3)
  params = prior.init(key, jnp.zeros((1, 2)), method=prior.log_prob)["params"]
  params = families.perturb(params, jax.random.fold_in(key, 1), 1.0)
  n = 100_000
  draws = np.asarray(prior.apply({"params": params}, key, n, method=prior.sample), np.float64)
  assert draws.shape == (n, 2)
  pi = np.asarray(jax.nn.softmax(params["logits"]), np.float64)
  means, variances = np.asarray(params["means"]), np.exp(np.asarray(params["logvars"]))
  mean = pi @ means
  variance = pi @ (variances + means**2) - mean**2
  # The sample mean's standard error is sqrt(variance / n); 5 of them.
  np.testing.assert_array_less(np.abs(draws.mean(0) - mean), 5 * np.sqrt(variance / n))


def test_vamp_log_prob_is_the_mean_of_the_encoder_posteriors(key):
  model, params = families.build("vamp", "gaussian")
  z = 2 * jax.random.normal(key, (4, 7, families.L))
  log_p = families.apply(model, families.Tiny.log_prior)(params, z)
  assert log_p.shape == (4, 7)
  # Directly: the encoder alone on sigmoid(pseudo_logits), then scipy.
  pseudo = jax.nn.sigmoid(params["prior"]["pseudo_logits"])
  encoder = families.TinyEncoder(model.encoder_log_var)
  mean, logvar = encoder.apply({"params": params["encoder"]}, pseudo)
  k = pseudo.shape[0]
  expected = _diagonal_mixture_log_prob(z.reshape(-1, families.L), np.full(k, -math.log(k)),
                                        mean, np.exp(logvar))
  np.testing.assert_allclose(log_p.reshape(-1), expected, rtol=1e-5, atol=1e-5)


def test_vamp_pseudo_inputs_stay_in_the_unit_interval(key):
  prior = priors.VampPrior(latents=2, components=4, image_shape=(3, 3, 1))
  encode = lambda u: (u.reshape(*u.shape[:-3], -1)[..., :2], jnp.zeros((*u.shape[:-3], 2)))
  params = prior.init(key, jnp.zeros((1, 2)), encode, method=prior.log_prob)["params"]
  assert params["pseudo_logits"].shape == (4, 3, 3, 1)
  huge = {"pseudo_logits": 100 * jnp.sign(params["pseudo_logits"])}
  for p in (params, huge):
    u = prior.apply({"params": p}, method=prior.pseudo_inputs)
    assert jnp.all((u >= 0) & (u <= 1))
  start = prior.apply({"params": params}, method=prior.pseudo_inputs)
  assert jnp.all((start > 0.01) & (start < 0.99))  # N(0, 1) logits: 4.6 standard deviations.
  assert len(np.unique(np.asarray(start))) == start.size  # Distinct images.


def test_vamp_needs_the_encoder(key):
  prior = priors.VampPrior(latents=2, components=4, image_shape=(3, 3, 1))
  with pytest.raises(ValueError, match="encode"):
    prior.init(key, jnp.zeros((1, 2)), method=prior.log_prob)


def test_vamp_samples_have_the_mixture_moments(key):
  model, params = families.build("vamp", "gaussian")
  n = 100_000
  sample = lambda m, key, n: m.prior.sample(key, n, m.encode)
  draws = np.asarray(families.apply(model, sample, static_argnums=2)(params, key, n), np.float64)
  assert draws.shape == (n, families.L)
  pseudo = jax.nn.sigmoid(params["prior"]["pseudo_logits"])
  means, logvars = families.TinyEncoder(model.encoder_log_var).apply(
      {"params": params["encoder"]}, pseudo)
  means, variances = np.asarray(means, np.float64), np.exp(np.asarray(logvars, np.float64))
  mean = means.mean(0)
  variance = (variances + means**2).mean(0) - mean**2
  np.testing.assert_array_less(np.abs(draws.mean(0) - mean), 5 * np.sqrt(variance / n))


@pytest.mark.parametrize("prior", ["normal", "mog", "vamp"])
@pytest.mark.slow
def test_iwae_approaches_the_quadrature_log_likelihood(prior):
  model, params = families.build(prior, "gaussian")
  families.check_bounds_against_quadrature(model, params, jax.random.key(1))
