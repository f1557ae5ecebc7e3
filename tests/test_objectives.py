"""The maths: KL, the stable cross-entropy, the reparameterisation gradient."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vae_jax import objectives


@pytest.mark.slow
def test_analytic_kl_matches_monte_carlo(key):
  k_mean, k_logvar, k_z = jax.random.split(key, 3)
  mean = jax.random.normal(k_mean, (3, 5))
  logvar = jax.random.normal(k_logvar, (3, 5))
  n = 400_000
  z = mean + jnp.exp(0.5 * logvar) * jax.random.normal(k_z, (n, 3, 5))
  log_q = objectives.gaussian_log_density(z, mean, logvar)
  log_p = objectives.gaussian_log_density(z, jnp.zeros(5), jnp.zeros(5))
  estimate = jnp.mean(log_q - log_p, axis=0)
  stderr = jnp.std(log_q - log_p, axis=0) / np.sqrt(n)
  exact = objectives.gaussian_kl(mean, logvar)
  assert exact.shape == (3,)
  np.testing.assert_array_less(jnp.abs(estimate - exact), 5 * stderr)


def test_kl_is_zero_at_the_prior_and_positive_elsewhere():
  assert objectives.gaussian_kl(jnp.zeros(4), jnp.zeros(4)) == 0.0
  assert objectives.gaussian_kl(jnp.full(4, 0.1), jnp.zeros(4)) > 0
  assert objectives.gaussian_kl(jnp.zeros(4), jnp.full(4, -0.1)) > 0


def test_stable_cross_entropy_matches_naive_formula(key):
  logits = 6 * jax.random.normal(key, (1000,))
  targets = jax.random.uniform(jax.random.fold_in(key, 1), (1000,))
  # The naive formula in float64, where it is accurate and finite for these logits.
  p = 1 / (1 + np.exp(-np.asarray(logits, np.float64)))
  t = np.asarray(targets, np.float64)
  naive = -(t * np.log(p) + (1 - t) * np.log(1 - p))
  assert np.isfinite(naive).all()
  stable = objectives.binary_cross_entropy_with_logits(logits, targets)
  np.testing.assert_allclose(stable, naive, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("logit", [1e4, -1e4])
@pytest.mark.parametrize("target", [0.0, 0.3, 1.0])
def test_stable_cross_entropy_is_finite_and_exact_at_huge_logits(logit, target):
  value = objectives.binary_cross_entropy_with_logits(jnp.float32(logit), jnp.float32(target))
  # -log sigmoid(l) ~ max(-l, 0) for |l| >> 1: t * max(-l, 0) + (1 - t) * max(l, 0).
  expected = target * max(-logit, 0) + (1 - target) * max(logit, 0)
  assert np.isfinite(value)
  np.testing.assert_allclose(value, expected, rtol=1e-6)
  grad = jax.grad(objectives.binary_cross_entropy_with_logits)(jnp.float32(logit), target)
  assert np.isfinite(grad)


def test_naive_cross_entropy_overflows_where_the_stable_one_does_not():
  logit = jnp.float32(1e4)
  naive = -jnp.log(1 - jax.nn.sigmoid(logit))  # target 0
  assert not np.isfinite(naive)
  assert np.isfinite(objectives.binary_cross_entropy_with_logits(logit, 0.0))


def test_reparameterization_gradients_match_finite_differences(key):
  """Pathwise gradients of f(z(key, mean, logvar)) against central differences."""
  with jax.enable_x64():
    mean = jnp.array([0.3, -1.2, 0.5], jnp.float64)
    logvar = jnp.array([-0.4, 0.2, 1.1], jnp.float64)

    def f(mean, logvar):
      z = objectives.reparameterize(key, mean, logvar)
      return jnp.sum(jnp.sin(z) * z**2)

    g_mean, g_logvar = jax.grad(f, argnums=(0, 1))(mean, logvar)
    h = 1e-6
    for i in range(3):
      e = jnp.zeros(3, jnp.float64).at[i].set(h)
      fd_mean = (f(mean + e, logvar) - f(mean - e, logvar)) / (2 * h)
      fd_logvar = (f(mean, logvar + e) - f(mean, logvar - e)) / (2 * h)
      np.testing.assert_allclose(g_mean[i], fd_mean, rtol=1e-6)
      np.testing.assert_allclose(g_logvar[i], fd_logvar, rtol=1e-6)


def test_reparameterize_has_the_right_moments(key):
  mean, logvar = jnp.array([1.0, -2.0]), jnp.array([0.5, -1.0])
  z = jax.vmap(lambda k: objectives.reparameterize(k, mean, logvar))(jax.random.split(key, 100_000))
  np.testing.assert_allclose(z.mean(0), mean, atol=0.02)
  np.testing.assert_allclose(z.var(0), jnp.exp(logvar), rtol=0.02)


def test_gaussian_log_likelihood_matches_scipy_formula(key):
  x = jax.random.uniform(key, (2, 6))
  mean = jax.random.uniform(jax.random.fold_in(key, 1), (2, 6))
  log_scale = jnp.float32(-0.7)
  s = np.exp(-0.7)
  expected = np.sum(-0.5 * ((np.asarray(x) - np.asarray(mean)) / s) ** 2 - np.log(s)
                    - 0.5 * np.log(2 * np.pi), axis=-1)
  np.testing.assert_allclose(objectives.gaussian_log_likelihood(x, mean, log_scale), expected,
                             rtol=1e-5)


def test_gaussian_densities_and_the_kl_match_their_formulas():
  z, mean, logvar = jnp.array([0.3, -1.0]), jnp.array([0.1, 0.5]), jnp.array([0.2, -0.7])
  var = np.exp(np.asarray(logvar, np.float64))
  expected = np.sum(-0.5 * (np.asarray(z - mean, np.float64) ** 2 / var + np.log(2 * np.pi * var)))
  np.testing.assert_allclose(objectives.gaussian_log_density(z, mean, logvar), expected, rtol=1e-6)
  kl = 0.5 * (var + np.asarray(mean, np.float64) ** 2 - 1 - np.asarray(logvar, np.float64))
  np.testing.assert_allclose(objectives.kl_per_dimension(mean, logvar), kl, rtol=1e-6)
  np.testing.assert_allclose(objectives.gaussian_kl(mean, logvar), kl.sum(), rtol=1e-6)


def test_log_mean_exp_reduces_the_last_axis_by_default():
  a = jax.random.normal(jax.random.key(0), (2, 3, 4))
  np.testing.assert_allclose(objectives.log_mean_exp(a), objectives.log_mean_exp(a, axis=2))
  assert objectives.log_mean_exp(a).shape == (2, 3)


@pytest.mark.parametrize("k, sample_chunk", [(1, None), (7, None), (7, 3), (7, 7), (10, 4),
                                             (10, 100)])
def test_sample_chunks_cover_k_in_equal_chunks_no_larger_than_asked(k, sample_chunk):
  num_chunks, chunk = objectives.sample_chunking(k, sample_chunk)
  assert type(num_chunks) is int and type(chunk) is int  # Static shapes of the scan.
  assert num_chunks * chunk >= k > (num_chunks - 1) * chunk  # No chunk only of padding.
  assert chunk <= min(sample_chunk or k, k)
  assert num_chunks * chunk - k < num_chunks  # At most one padded sample per chunk.
  with pytest.raises(ValueError, match="k must be >= 1"):
    objectives.sample_chunking(0, sample_chunk)
