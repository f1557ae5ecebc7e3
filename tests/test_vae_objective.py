"""The Gaussian VAE's objectives (vae_jax/families/vae/objective.py): the ELBO's terms, the
KL weight, free bits, the IWAE bound, against closed forms."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import small_vae
from vae_jax import objectives
from vae_jax.families.vae import objective as vae_objective


def test_the_weighted_objective_weighs_the_kl_and_floors_each_latent_at_free_bits():
  recon = jnp.array([10.0, 20.0])
  kl_dims = jnp.array([[0.1, 2.0, 0.0], [0.3, 4.0, 1.0]])  # Batch means 0.2, 3.0, 0.5.
  terms = {"recon": recon, "kl_per_dimension": kl_dims, "kl": kl_dims.sum(-1)}
  objective = lambda weight, free_bits: float(vae_objective.weighted_objective(
      terms, jnp.float32(weight), jnp.float32(free_bits)))
  np.testing.assert_allclose(objective(1.0, 0.0), 15.0 + 3.7, rtol=1e-6)  # The mean -ELBO.
  np.testing.assert_allclose(objective(0.5, 0.0), 15.0 + 0.5 * 3.7, rtol=1e-6)
  np.testing.assert_allclose(objective(1.0, 1.0), 15.0 + 1.0 + 3.0 + 1.0, rtol=1e-6)


@pytest.mark.slow
def test_the_iwae_bound_lies_above_the_elbo_of_the_same_samples():
  """Burda et al.'s theorem 1, by a margin an untrained model makes large: a bound
  that averaged log weights instead of weights would sit at the ELBO."""
  module, params = small_vae()
  x = jax.random.uniform(jax.random.key(4), (5, 4, 4, 1))
  terms = vae_objective.importance_terms(module, params, x, jax.random.key(5), 64)
  assert float(jnp.min(terms["iwae"] + terms["recon"] + terms["kl"])) > 0.05


@pytest.mark.slow
def test_the_elbo_defaults_to_one_sample():
  module, params = small_vae()
  x = jax.random.uniform(jax.random.key(4), (3, 4, 4, 1))
  np.testing.assert_array_equal(vae_objective.elbo(module, params, x, jax.random.key(5)),
                                vae_objective.elbo(module, params, x, jax.random.key(5), 1))


@pytest.mark.slow
def test_per_example_keys_follow_the_example_not_its_batch():
  module, params = small_vae()
  x = jax.random.uniform(jax.random.key(4), (6, 4, 4, 1))
  key = jax.random.key(5)
  whole = vae_objective.iwae_bound(module, params, x, key, 4)
  keys = objectives.example_keys(key, jnp.arange(6))
  np.testing.assert_allclose(vae_objective.iwae_bound(module, params, x[3:], keys[3:], 4), whole[3:],
                             rtol=1e-5)
  with pytest.raises(ValueError, match="expected one key or 6 keys"):
    vae_objective.iwae_bound(module, params, x, keys[:2], 4)


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian", "logistic"])
@pytest.mark.slow
def test_the_negative_elbo_is_the_likelihoods_score_plus_the_analytic_kl(likelihood):
  module, params = small_vae(likelihood)
  x = jnp.round(jax.random.uniform(jax.random.key(6), (3, 4, 4, 1)) * 255) / 255

  @jax.jit
  def both(params, x, key):  # One compiled program: eager ops compile one by one.
    terms = vae_objective.negative_elbo(module, params, x, key)
    outputs, mean, logvar = module.apply({"params": params}, x, key)
    log_lik = module.apply({"params": params}, x, outputs, method=module.log_likelihood)
    images = module.apply({"params": params}, outputs, method=module.mean_image)
    return terms, log_lik, objectives.gaussian_kl(mean, logvar), images

  terms, log_lik, kl, images = both(params, x, jax.random.key(7))
  np.testing.assert_allclose(terms["recon"], -log_lik, rtol=1e-6)
  np.testing.assert_allclose(terms["kl"], kl, rtol=1e-6)
  np.testing.assert_allclose(terms["loss"], terms["recon"] + terms["kl"], rtol=1e-6)
  assert images.shape == x.shape
  if likelihood != "gaussian":  # A Gaussian's mean is any real; figures clip it.
    assert 0 <= float(images.min()) and float(images.max()) <= 1


@pytest.mark.parametrize("step, beta, warmup, expected", [
    (0, 1.0, 0, 1.0), (10, 4.0, 0, 4.0),  # No warm-up: beta from the start.
    (0, 4.0, 100, 0.0), (25, 4.0, 100, 1.0), (50, 2.0, 100, 1.0), (100, 4.0, 100, 4.0),
    (250, 4.0, 100, 4.0),
])
def test_kl_weight_rises_linearly_to_beta(step, beta, warmup, expected):
  weight = vae_objective.kl_weight(jnp.float32(step), jnp.float32(beta), jnp.int32(warmup))
  np.testing.assert_allclose(weight, expected, rtol=1e-6)


def _terms(kl_per_dimension):
  kl = jnp.asarray(kl_per_dimension, jnp.float32)
  return {"recon": jnp.array([10.0, 12.0]), "kl_per_dimension": kl, "kl": kl.sum(-1),
          "loss": jnp.array([10.0, 12.0]) + kl.sum(-1)}


def test_free_bits_floor_each_latent_and_stop_its_gradient():
  terms = _terms([[0.5, 2.0], [1.5, 0.0]])  # Batch means: 1.0 and 1.0.
  np.testing.assert_allclose(vae_objective.weighted_objective(terms, 1.0, 1.5), 11.0 + 1.5 + 1.5)
  kl = jnp.array([[0.5, 4.0], [1.5, 2.0]])  # Means 1.0 (below 1.5) and 3.0 (above).
  grad = jax.grad(lambda k: vae_objective.weighted_objective(
      {"recon": jnp.zeros(2), "kl_per_dimension": k}, 1.0, 1.5))(kl)
  np.testing.assert_allclose(grad, [[0.0, 0.5], [0.0, 0.5]])  # Only the latent above the floor.
