"""The likelihoods (vae_jax/likelihoods.py): each a distribution, finite where it must be."""
import jax.numpy as jnp
import numpy as np
import pytest

from vae_jax import objectives


@pytest.mark.parametrize("loc, log_scale", [(0.5, -3.0), (0.02, -5.0), (0.9, 0.5), (-2.0, -1.0)])
def test_the_discretized_logistic_is_a_distribution_over_the_256_values(loc, log_scale):
  """Its 256 probabilities sum to 1 and each is the logistic's mass over its bin (the
  edge bins open), computed here in float64 from the CDF."""
  x = jnp.arange(256, dtype=jnp.float32) / 255
  log_p = np.asarray(objectives.discretized_logistic_log_prob(x, loc, log_scale), np.float64)
  np.testing.assert_allclose(np.exp(log_p).sum(), 1.0, rtol=1e-5)
  cdf = lambda t: 1 / (1 + np.exp(-(t - loc) / np.exp(log_scale)))
  edges = np.concatenate([[-np.inf], (np.arange(255) + 0.5) / 255, [np.inf]])
  mass = cdf(edges[1:]) - cdf(edges[:-1])
  big = mass > 1e-6  # Where float64 differences of CDFs are accurate.
  np.testing.assert_allclose(np.exp(log_p[big]), mass[big], rtol=1e-4)


def test_the_discretized_logistic_stays_finite_far_from_its_mass():
  x = jnp.array([0.0, 0.5, 1.0])
  for loc, log_scale in ((40.0, -6.0), (-40.0, -6.0), (0.5, -12.0)):
    assert np.isfinite(objectives.discretized_logistic_log_prob(x, loc, log_scale)).all()
