"""The objectives and gradient estimators: values against numpy, expected gradients against
each other by Monte Carlo (tolerances from standard errors), and DReG's signal-to-noise ratio."""
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special

import families
from vae_jax.families.vae import estimators
from vae_jax.families.vae import posteriors
from vae_jax.errors import UsageError

DRAWS = 2000  # Gradient draws per Monte Carlo comparison.


def _random_terms(key, k=6, batch=3):
  keys = jax.random.split(key, 3)
  return tuple(3 * jax.random.normal(k_, (k, batch)) - 2 for k_ in keys)


def test_losses_match_numpy(key):
  log_px_z, log_pz, log_qz = _random_terms(key)
  log_w = np.asarray(log_px_z + log_pz - log_qz, np.float64)
  elbo = estimators.elbo_loss(log_px_z, log_pz, log_qz)
  iwae = estimators.iwae_loss(log_px_z, log_pz, log_qz)
  assert elbo.shape == iwae.shape == (3,)
  np.testing.assert_allclose(elbo, -log_w.mean(0), rtol=1e-6)
  np.testing.assert_allclose(iwae, -(special.logsumexp(log_w, axis=0) - math.log(6)), rtol=1e-6)
  assert np.all(iwae <= elbo)  # Jensen: the IWAE bound is the tighter one.
  one = tuple(t[:1] for t in (log_px_z, log_pz, log_qz))
  np.testing.assert_allclose(estimators.iwae_loss(*one), estimators.elbo_loss(*one), rtol=1e-6)


def _model(prior, posterior="gaussian"):
  model, params = families.build(prior, posterior)
  return model, *families.split_params(params, prior)


@pytest.mark.slow
@pytest.mark.parametrize("estimator, loss", [("elbo", estimators.elbo_loss),
                                             ("stl", estimators.elbo_loss),
                                             ("iwae", estimators.iwae_loss),
                                             ("dreg", estimators.iwae_loss)])
def test_surrogates_have_the_losses_values(estimator, loss, key):
  model, q, p = _model("normal")
  terms = families.estimator_terms(model, key, 5)
  value = jax.jit(lambda q, p: estimators.surrogate(estimator, terms, q, p))(q, p)
  assert value.shape == (families.X.shape[0],)
  np.testing.assert_allclose(value, loss(*terms(q, p, False)), rtol=1e-6)


@functools.lru_cache(maxsize=None)
def _gradients(estimator: str, prior: str, k: int, prior_encoder_in_p: bool = True,
               posterior: str = "gaussian"):
  """DRAWS gradients of the batch's summed surrogate, each with its own key (the same keys
  for every estimator, so differences are paired): (inference, generative) arrays of shape
  (DRAWS, parameters), float64. The inference network's are the encoder's (its two
  copies' added, for the VampPrior) and the posterior's (the IAF's); the generative
  model's the decoder's."""
  model, q, p = _model(prior, posterior)
  if not prior_encoder_in_p:
    del p["encoder"]

  @jax.jit
  def draw(key):
    terms = families.estimator_terms(model, key, k, prior_encoder_in_p)
    loss = lambda q, p: jnp.sum(estimators.surrogate(estimator, terms, q, p))
    return jax.grad(loss, argnums=(0, 1))(q, p)

  g_q, g_p = jax.lax.map(draw, jax.random.split(jax.random.key(5), DRAWS))
  if "encoder" in g_p:
    g_q = {**g_q, "encoder": jax.tree.map(jnp.add, g_q["encoder"], g_p["encoder"])}
  flat = lambda tree: np.concatenate([np.asarray(a, np.float64).reshape(DRAWS, -1)
                                      for a in jax.tree.leaves(tree)], axis=1)
  return flat(g_q), flat(g_p["decoder"])


def _live(g):
  """The parameters whose gradient is not identically zero (not a masked MADE weight)."""
  return np.any(g != 0, axis=0)


def _standard_scores(a, b):
  """mean(a - b) in standard errors of the paired difference, per live parameter."""
  live = _live(a) | _live(b)
  d = (a - b)[:, live]
  return d.mean(0) / (d.std(0) / math.sqrt(len(d)))


# A correct estimator's score is N(0, 1) per parameter (means of 2,000 paired draws); 5 is
# exceeded by chance with probability 6e-7 each, 1e-4 over the IAF's ~200 parameters.
# The biased variants below score 28 and 74.
SCORE = 5.0


@pytest.mark.slow
@pytest.mark.parametrize("prior, posterior", [("normal", "gaussian"), ("vamp", "gaussian"),
                                              ("normal", "iaf")])
def test_dreg_has_the_iwae_gradients_expectation(prior, posterior):
  iwae_encoder, iwae_decoder = _gradients("iwae", prior, 8, posterior=posterior)
  dreg_encoder, dreg_decoder = _gradients("dreg", prior, 8, posterior=posterior)
  # The generative model's gradient is IWAE's draw by draw (float32 rounding of a
  # differently stopped graph: values of order 1).
  np.testing.assert_allclose(dreg_decoder, iwae_decoder, rtol=1e-4, atol=1e-5)
  assert np.abs(_standard_scores(dreg_encoder, iwae_encoder)).max() < SCORE
  # Not the same estimator draw by draw: the comparison is of expectations.
  live = _live(iwae_encoder)
  spread = np.std(dreg_encoder - iwae_encoder, axis=0)[live]
  assert np.all(spread > 0.01 * np.std(iwae_encoder, axis=0)[live])


@pytest.mark.slow
def test_dreg_with_the_vamp_prior_needs_the_encoder_in_both_trees():
  """Without the prior's own copy, the prior's direct dependence on the encoder gets
  w~^2 instead of w~: the expectation moves by tens of standard errors."""
  iwae_encoder, _ = _gradients("iwae", "vamp", 8)
  wrong_encoder, _ = _gradients("dreg", "vamp", 8, prior_encoder_in_p=False)
  assert np.abs(_standard_scores(wrong_encoder, iwae_encoder)).max() > 4 * SCORE


def test_the_path_derivative_of_iwae_alone_is_biased_so_the_test_can_fail():
  """IWAE with log q at stopped parameters (STL applied to IWAE, weights w~ not w~^2) is
  biased (Tucker et al. 2018, section 4): the comparison above detects it."""
  model, q, p = _model("normal")

  @jax.jit
  def draw(key):
    terms = families.estimator_terms(model, key, 8)
    return jax.grad(lambda q: jnp.sum(estimators.iwae_loss(*terms(q, p, True))))(q)

  g = jax.lax.map(draw, jax.random.split(jax.random.key(5), DRAWS))["encoder"]
  biased = np.concatenate([np.asarray(a, np.float64).reshape(DRAWS, -1)
                           for a in jax.tree.leaves(g)], axis=1)
  iwae_encoder, _ = _gradients("iwae", "normal", 8)
  assert np.abs(_standard_scores(biased, iwae_encoder)).max() > 4 * SCORE


def _snr(g):
  """Per-parameter |E g| / std(g) over the draws."""
  return np.abs(g.mean(0)) / g.std(0)


@pytest.mark.slow
def test_dreg_has_a_higher_encoder_signal_to_noise_ratio_at_large_k():
  """Rainforth et al. (2018): IWAE's encoder SNR falls like 1/sqrt(K); DReG's does not.

  An SNR estimated from 2,000 draws has a standard error of about
  sqrt((1 + snr^2 / 2) / 2000) <= 0.04 here; medians over the 20 encoder
  parameters are steadier still. Measured medians: IWAE 0.13 at K = 8 and 0.06 at
  K = 64 (the sqrt(8) = 2.8 fall, roughly); DReG 0.8 at K = 64, 15 times IWAE's.
  """
  iwae_8, iwae_64 = (np.median(_snr(_gradients("iwae", "normal", k)[0])) for k in (8, 64))
  dreg_64 = np.median(_snr(_gradients("dreg", "normal", 64)[0]))
  assert iwae_8 > 1.5 * iwae_64
  assert dreg_64 > 4 * iwae_64
  assert dreg_64 > iwae_8


@pytest.mark.slow
@pytest.mark.parametrize("posterior", ["gaussian", "iaf"])
def test_stl_has_the_elbo_gradients_expectation(posterior):
  elbo_encoder, elbo_decoder = _gradients("elbo", "normal", 8, posterior=posterior)
  stl_encoder, stl_decoder = _gradients("stl", "normal", 8, posterior=posterior)
  np.testing.assert_allclose(stl_decoder, elbo_decoder, rtol=1e-4, atol=1e-5)
  assert np.abs(_standard_scores(stl_encoder, elbo_encoder)).max() < SCORE
  # The dropped score term is not zero draw by draw, only in expectation.
  live = _live(elbo_encoder)
  spread = np.std(stl_encoder - elbo_encoder, axis=0)[live]
  assert np.all(spread > 0.01 * np.std(elbo_encoder, axis=0)[live])


class _SampleOnly:
  """A posterior that can draw but not score a given z (a flow without an inverse)."""

  def sample(self, key, mean, logvar):
    raise NotImplementedError


def test_stl_and_dreg_are_refused_for_a_posterior_without_log_prob():
  for estimator in ("stl", "dreg"):
    with pytest.raises(UsageError, match=f"estimator={estimator}.*_SampleOnly"):
      estimators.check(estimator, _SampleOnly())
    estimators.check(estimator, posteriors.DiagonalGaussian())
    estimators.check(estimator, posteriors.IAF(latents=2, steps=2, hidden=4))
  for estimator in ("elbo", "iwae"):
    estimators.check(estimator, _SampleOnly())


def test_unknown_estimators_are_refused():
  with pytest.raises(UsageError, match="unknown estimator 'reinforce'"):
    estimators.check("reinforce", posteriors.DiagonalGaussian())
  with pytest.raises(UsageError, match="choose one of elbo, iwae, stl, dreg"):
    estimators.surrogate("reinforce", None, None, None)
