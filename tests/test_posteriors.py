"""Posteriors: the Gaussian bit for bit as before, the IAF's density by autodiff Jacobians, and
IWAE with each against log p(x) by quadrature."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import families
from vae_jax import objectives
from vae_jax.families.vae import posteriors


def test_gaussian_reproduces_reparameterize_bit_for_bit(key):
  mean = jax.random.normal(jax.random.fold_in(key, 1), (4, 5, 3))
  logvar = jax.random.normal(jax.random.fold_in(key, 2), (4, 5, 3))
  posterior = posteriors.DiagonalGaussian()
  z, log_q = posterior.apply({}, key, mean, logvar, method=posterior.sample)
  assert z.shape == (4, 5, 3) and log_q.shape == (4, 5)
  assert z.dtype == log_q.dtype == jnp.float32
  np.testing.assert_array_equal(z, objectives.reparameterize(key, mean, logvar))
  np.testing.assert_array_equal(log_q, objectives.gaussian_log_density(z, mean, logvar))
  np.testing.assert_array_equal(posterior.apply({}, z, mean, logvar, method=posterior.log_prob),
                                log_q)


def _iaf(key, latents=3, steps=3, scale=0.3):
  """An IAF with gates about 1/2 and every weight perturbed by N(0, scale^2), in float64.

  Far from the identity (log|det| -5 to -11 nats at the test's inputs) but not so
  far that the determinant, a product of the steps' diagonals, falls to e^-30 or
  less: slogdet of the composed matrix no longer resolves it (seen at scale 1).
  """
  iaf = posteriors.IAF(latents, steps=steps, hidden=8, gate_bias=0.0)
  zeros = jnp.zeros((latents,))
  params = jax.jit(lambda key: iaf.init(key, key, zeros, zeros, method=iaf.sample))(key)["params"]
  params = families.perturb(params, jax.random.fold_in(key, 1), scale)
  return iaf, jax.tree.map(lambda a: a.astype(jnp.float64), params)


@pytest.mark.slow
def test_iaf_log_q_is_the_change_of_variables_with_an_autodiff_jacobian(key):
  with jax.enable_x64():
    iaf, params = _iaf(key)

    @jax.jit
    @jax.vmap
    def change_of_variables(key):
      """The flow's (z, log q) and, independently, z_0, flow(z_0) and slogdet(d flow / d z_0)."""
      k_mean, k_logvar, k_draw = jax.random.split(key, 3)
      mean = jax.random.normal(k_mean, (3,), jnp.float64)
      logvar = jax.random.normal(k_logvar, (3,), jnp.float64)
      z, log_q = iaf.apply({"params": params}, k_draw, mean, logvar, method=iaf.sample)
      z0 = objectives.reparameterize(k_draw, mean, logvar)
      context = jnp.concatenate([mean, logvar])
      flow = lambda z0: iaf.apply({"params": params}, z0, context, method=iaf.flow)[0]
      sign, log_abs_det = jnp.linalg.slogdet(jax.jacfwd(flow)(z0))
      log_q0 = objectives.gaussian_log_density(z0, mean, logvar)
      return z, log_q, flow(z0), log_q0, sign, log_abs_det

    # Random encoder outputs and draws.
    z, log_q, z_again, log_q0, sign, log_abs_det = change_of_variables(jax.random.split(key, 4))
    np.testing.assert_allclose(z_again, z, atol=1e-12)
    np.testing.assert_array_equal(sign, 1)  # Every step's diagonal is sigmoid(s) > 0.
    assert np.all(log_abs_det < -1)  # Far enough from the identity to notice a dropped step.
    # float64 throughout: measured agreement 5e-15 nats. 1e-9 leaves room for LU's
    # conditioning (determinants down to e^-12) on any CPU, and is 1e8 times smaller
    # than the log-determinant of one step.
    np.testing.assert_allclose(log_q, log_q0 - log_abs_det, atol=1e-9)


@pytest.mark.slow
def test_iaf_steps_are_autoregressive_and_alternate_the_order(key):
  with jax.enable_x64():
    context = jax.random.normal(key, (6,), jnp.float64)
    z0 = jax.random.normal(jax.random.fold_in(key, 1), (3,), jnp.float64)
    one, params = _iaf(key, steps=1)
    jacobian = jax.jacfwd(lambda z: one.apply({"params": params}, z, context,
                                              method=one.flow)[0])(z0)
    # z_i' depends on z_1..z_i only: exactly zero above the diagonal, and something below.
    np.testing.assert_array_equal(np.triu(jacobian, 1), 0.0)
    assert np.all(np.tril(jacobian, -1)[np.tril_indices(3, -1)] != 0)
    two, params = _iaf(key, steps=2)
    jacobian = jax.jacfwd(lambda z: two.apply({"params": params}, z, context,
                                              method=two.flow)[0])(z0)
    assert np.all(jacobian != 0)  # The second step runs in the reversed order.


@pytest.mark.slow
def test_iaf_starts_near_the_identity(key):
  iaf = posteriors.IAF(latents=3, steps=2, hidden=8)
  mean = jax.random.normal(key, (5, 3))
  logvar = jnp.zeros((5, 3))
  params = iaf.init(key, key, mean, logvar, method=iaf.sample)["params"]
  z0 = objectives.reparameterize(key, mean, logvar)
  z, log_q = iaf.apply({"params": params}, key, mean, logvar, method=iaf.sample)
  assert z.shape == (5, 3) and log_q.shape == (5,) and z.dtype == jnp.float32
  # Zero output weights: m = 0 and s = gate_bias = 4 whatever z, so each step scales by
  # sigmoid(4) = 0.982.
  gate = jax.nn.sigmoid(4.0)
  np.testing.assert_allclose(z, gate**2 * z0, rtol=1e-6)
  np.testing.assert_allclose(log_q, objectives.gaussian_log_density(z0, mean, logvar)
                             - 2 * 3 * np.log(gate), rtol=1e-6)


@pytest.mark.slow
def test_iaf_log_prob_inverts_the_flow(key):
  with jax.enable_x64():
    iaf, params = _iaf(key)
    k_mean, k_logvar, k_draw = jax.random.split(key, 3)
    mean = jax.random.normal(k_mean, (5, 3), jnp.float64)
    logvar = jax.random.normal(k_logvar, (5, 3), jnp.float64)
    z, log_q = iaf.apply({"params": params}, k_draw, mean, logvar, method=iaf.sample)
    context = jnp.concatenate([mean, logvar], axis=-1)
    z0, log_det = iaf.apply({"params": params}, z, context, method=iaf.inverse)
    np.testing.assert_allclose(z0, objectives.reparameterize(k_draw, mean, logvar), atol=1e-12)
    np.testing.assert_allclose(iaf.apply({"params": params}, z, mean, logvar,
                                         method=iaf.log_prob), log_q, atol=1e-12)
    assert np.all(log_det < -1)


@pytest.mark.slow
def test_iaf_log_prob_in_float32_agrees_with_the_draws():
  model, params = families.build("normal", "iaf")
  z, log_q = families.apply(model, families.Tiny.draw, 3)(params, jax.random.key(3), families.X,
                                                           1000)
  log_prob = families.apply(model, families.Tiny.log_posterior)(params, families.X, z)
  # Measured 3e-6 of values up to 11 nats: float32 rounding (1.2e-7 relative) grown by the
  # inverse's divisions by the gates (about 0.9 here). 1e-4 is 30 times that.
  np.testing.assert_allclose(log_prob, log_q, atol=1e-4)


@pytest.mark.slow
def test_iaf_log_prob_broadcasts_samples_against_the_encoder(key):
  iaf = posteriors.IAF(latents=3, steps=2, hidden=8)
  mean, logvar = jnp.zeros((4, 3)), jnp.zeros((4, 3))
  params = iaf.init(key, key, mean, logvar, method=iaf.sample)["params"]
  log_q = iaf.apply({"params": params}, jnp.ones((7, 4, 3)), mean, logvar, method=iaf.log_prob)
  assert log_q.shape == (7, 4) and log_q.dtype == jnp.float32


@pytest.mark.slow
def test_iaf_for_one_latent_depends_on_the_context_only(key):
  iaf = posteriors.IAF(latents=1, steps=2, hidden=4)
  params = iaf.init(key, key, jnp.zeros((1,)), jnp.zeros((1,)), method=iaf.sample)["params"]
  params = families.perturb(params, jax.random.fold_in(key, 1), 1.0)
  context = jnp.array([0.3, -0.2])
  slope = jax.grad(lambda z: iaf.apply({"params": params}, z, context, method=iaf.flow)[0][0])
  # With no earlier latent, each step is affine in z: sigma(context) z + (1 - sigma) m(context).
  np.testing.assert_allclose(slope(jnp.array([-1.0])), slope(jnp.array([2.0])), rtol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("prior", ["normal", "mog", "vamp"])
def test_iwae_with_iaf_approaches_the_quadrature_log_likelihood(prior):
  model, params = families.build(prior, "iaf")
  families.check_bounds_against_quadrature(model, params, jax.random.key(1))
