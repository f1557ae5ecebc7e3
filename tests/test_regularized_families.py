"""beta-TCVAE, FactorVAE, DIP-VAE and AnnealedVAE: their terms against numpy, no training.

Each family's objective is the Gaussian VAE's single-sample ELBO changed by a term on the
batch's codes; these tests check each term against a direct numpy computation on a tiny
batch, each objective against its formula, FactorVAE's discriminator as the second
parameter group with its own Adam, and the hyperparameters as sweepable.
"""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import logsumexp

from vae_jax import epoch
from vae_jax import experiment
from vae_jax import data
from vae_jax import sweep
from vae_jax.configs import tiny
from vae_jax.errors import UsageError
from vae_jax.families import annealed
from vae_jax.families import betatc
from vae_jax.families import dipvae
from vae_jax.families import factorvae

IMAGE = (8, 8, 1)


def _batch(m=5, l=3, seed=0):
  rng = np.random.default_rng(seed)
  mean = rng.normal(size=(m, l))
  logvar = rng.normal(scale=0.5, size=(m, l))
  z = mean + np.exp(logvar / 2) * rng.normal(size=(m, l))
  return z, mean, logvar


def _log_normal(x, mean, logvar):
  return -0.5 * ((x - mean) ** 2 / np.exp(logvar) + logvar + math.log(2 * math.pi))


def _experiment(num_models=1, **changes):
  """A run's Experiment for `changes` on 32 random 8 x 8 images (batch 32: one step/epoch)."""
  config = tiny.get_config()
  config.update(hidden=16, latents=3, batch_size=32, chunks_per_epoch=1, **changes)
  config.num_models = num_models
  images = np.random.default_rng(0).integers(0, 256, (32, *IMAGE), np.uint8)
  split = data.Split(images, np.full(32, -1, np.int32))
  resolved, family = experiment.resolve(config, data.Dataset("tiny8", split, split))
  return experiment.Experiment.build(resolved, family, data.Dataset("tiny8", split, split),
                                     with_evaluation=False)


def _loss(family, variables, batch, key, step, hyper):
  """family.loss, compiled (one program, not one per operation)."""
  return jax.jit(family.loss)(variables, batch, key, step, hyper)


# ----------------------------------------------------------------------------
# beta-TCVAE


def test_minibatch_weighted_sampling_is_chen_et_al_estimator():
  z, mean, logvar = _batch()
  n = 1000
  log_q = _log_normal(z[:, None, :], mean[None], logvar[None])  # [i, j, l]
  want_joint = logsumexp(log_q.sum(-1), axis=1) - math.log(n * len(z))
  want_marginals = logsumexp(log_q, axis=1) - math.log(n * len(z))
  joint, marginals = betatc.minibatch_weighted(jnp.asarray(z, jnp.float32),
                                               jnp.asarray(mean, jnp.float32),
                                               jnp.asarray(logvar, jnp.float32), n)
  np.testing.assert_allclose(joint, want_joint, rtol=1e-5, atol=1e-4)
  np.testing.assert_allclose(marginals, want_marginals, rtol=1e-5, atol=1e-4)


@pytest.mark.slow
def test_the_decomposition_sums_to_the_batch_kl_and_each_term_matches_numpy():
  z, mean, logvar = _batch(m=6, l=4, seed=1)
  n = 50
  f32 = lambda a: jnp.asarray(a, jnp.float32)
  parts = betatc.decomposition(f32(z), f32(mean), f32(logvar), n)
  log_q = _log_normal(z[:, None, :], mean[None], logvar[None])
  log_qz = logsumexp(log_q.sum(-1), axis=1) - math.log(n * len(z))
  log_prod = (logsumexp(log_q, axis=1) - math.log(n * len(z))).sum(-1)
  log_q_given_x = _log_normal(z, mean, logvar).sum(-1)
  log_pz = _log_normal(z, 0.0, 0.0).sum(-1)
  want = {"mi": np.mean(log_q_given_x - log_qz), "tc": np.mean(log_qz - log_prod),
          "dim_kl": np.mean(log_prod - log_pz)}
  for name, value in want.items():
    np.testing.assert_allclose(parts[name], value, rtol=1e-5, atol=1e-4, err_msg=name)
  # MI + TC + dim-wise KL = the aggregate KL term, E[log q(z|x) - log p(z)], whatever N.
  total = parts["mi"] + parts["tc"] + parts["dim_kl"]
  np.testing.assert_allclose(total, np.mean(log_q_given_x - log_pz), rtol=1e-5, atol=1e-4)
  # The TC is that of the batch's mixture: N only shifts MI and dim KL, by the same log N.
  other = betatc.decomposition(f32(z), f32(mean), f32(logvar), 10 * n)
  np.testing.assert_allclose(other["tc"], parts["tc"] - (z.shape[1] - 1) * -math.log(10),
                             rtol=1e-5, atol=1e-4)


@pytest.mark.slow
def test_betatc_objective_is_the_negative_elbo_plus_beta_minus_one_tc():
  exp = _experiment(family="betatc", tc_beta=6.0)
  family, state = exp.family, exp.create_state()
  assert family.train_size == 32  # From the data.
  variables = jax.tree.map(lambda a: a[0], {"params": state.params})
  batch = {"x": jnp.asarray(np.random.default_rng(1).random((8, *IMAGE)), jnp.float32)}
  minimised, metrics, _ = _loss(family, variables, batch, jax.random.key(3), jnp.int32(0),
                                      {"tc_beta": jnp.float32(6.0)})
  np.testing.assert_allclose(minimised, metrics["loss"] + 5.0 * metrics["tc"], rtol=1e-6)
  np.testing.assert_allclose(metrics["objective"], minimised, rtol=1e-6)
  np.testing.assert_allclose(metrics["loss"], metrics["recon"] + metrics["kl"], rtol=1e-6)
  # tc_beta = 1 is the VAE: the objective is the negative ELBO.
  one, metrics, _ = _loss(family, variables, batch, jax.random.key(3), jnp.int32(0),
                                {"tc_beta": jnp.float32(1.0)})
  np.testing.assert_allclose(one, metrics["loss"], rtol=1e-6)


# ----------------------------------------------------------------------------
# DIP-VAE


@pytest.mark.parametrize("dip_type", ["i", "ii"])
def test_dip_covariance_and_penalties_against_numpy(dip_type):
  _, mean, logvar = _batch(m=7, l=4, seed=2)
  cov = np.cov(mean, rowvar=False, bias=True)  # disentanglement_lib divides by M.
  if dip_type == "ii":
    cov = cov + np.diag(np.exp(logvar).mean(0))
  got = dipvae.covariance(jnp.asarray(mean, jnp.float32), jnp.asarray(logvar, jnp.float32),
                          dip_type)
  np.testing.assert_allclose(got, cov, rtol=1e-5, atol=1e-6)
  off, diagonal = dipvae.penalties(jnp.asarray(cov))
  mask = ~np.eye(4, dtype=bool)
  np.testing.assert_allclose(off, np.sum(cov[mask] ** 2), rtol=1e-6)
  np.testing.assert_allclose(diagonal, np.sum((np.diag(cov) - 1) ** 2), rtol=1e-6)
  # lambda_d = 0 means disentanglement_lib's: 10 lambda_od for I, lambda_od for II.
  assert float(dipvae.diagonal_weight(3.0, 0.0, dip_type)) == (30.0 if dip_type == "i" else 3.0)
  assert float(dipvae.diagonal_weight(3.0, 2.0, dip_type)) == 2.0


def test_dip_objective_adds_the_weighted_penalties():
  exp = _experiment(family="dipvae", dip_type="ii")
  state = exp.create_state()
  variables = jax.tree.map(lambda a: a[0], {"params": state.params})
  batch = {"x": jnp.asarray(np.random.default_rng(1).random((8, *IMAGE)), jnp.float32)}
  hyper = {"lambda_od": jnp.float32(4.0), "lambda_d": jnp.float32(0.5)}
  minimised, m, _ = _loss(exp.family, variables, batch, jax.random.key(0), jnp.int32(0), hyper)
  want = m["loss"] + 4.0 * m["covariance_off_diagonal"] + 0.5 * m["covariance_diagonal"]
  np.testing.assert_allclose(minimised, want, rtol=1e-6)


# ----------------------------------------------------------------------------
# AnnealedVAE


def test_capacity_rises_linearly_then_holds():
  steps = jnp.array([0, 25, 50, 100, 400], jnp.float32)
  np.testing.assert_allclose(annealed.capacity(steps, 20.0, 100), [0, 5, 10, 20, 20])
  np.testing.assert_allclose(annealed.capacity(steps, 20.0, 0), [20] * 5)  # No ramp.


def test_annealed_objective_is_recon_plus_gamma_times_the_kl_distance_to_capacity():
  exp = _experiment(family="annealed")
  state = exp.create_state()
  variables = jax.tree.map(lambda a: a[0], {"params": state.params})
  batch = {"x": jnp.asarray(np.random.default_rng(1).random((8, *IMAGE)), jnp.float32)}
  hyper = {"capacity_max": jnp.float32(30.0), "capacity_gamma": jnp.float32(100.0),
           "capacity_steps": jnp.int32(200)}
  minimised, m, _ = _loss(exp.family, variables, batch, jax.random.key(0), jnp.int32(50), hyper)
  np.testing.assert_allclose(minimised, m["recon"] + 100.0 * abs(m["kl"] - 7.5), rtol=1e-6)
  assert exp.family.schedules(50, hyper) == {"capacity": 7.5}


# ----------------------------------------------------------------------------
# FactorVAE


def test_permute_dims_shuffles_each_latent_on_its_own():
  z = jnp.arange(64 * 6, dtype=jnp.float32).reshape(64, 6)
  permuted = np.asarray(factorvae.permute_dims(jax.random.key(0), z))
  for j in range(6):  # Each column holds the same values ...
    np.testing.assert_array_equal(np.sort(permuted[:, j]), np.asarray(z[:, j]))
  orders = [tuple(np.argsort(permuted[:, j])) for j in range(6)]
  assert len(set(orders)) == 6  # ... each in an order of its own.
  assert not np.array_equal(permuted, z)


def test_discriminator_loss_and_tc_estimate_against_numpy():
  rng = np.random.default_rng(0)
  real, permuted = rng.normal(size=(5, 2)), rng.normal(size=(5, 2))
  log_softmax = lambda a: a - logsumexp(a, axis=1, keepdims=True)
  want = -0.5 * (log_softmax(real)[:, 0].mean() + log_softmax(permuted)[:, 1].mean())
  np.testing.assert_allclose(factorvae.discriminator_loss(jnp.asarray(real),
                                                          jnp.asarray(permuted)), want, rtol=1e-6)
  np.testing.assert_allclose(factorvae.log_ratio(jnp.asarray(real)), real[:, 0] - real[:, 1])
  # Equal logits: the discriminator cannot tell them apart, loss log 2, TC estimate 0.
  assert float(factorvae.discriminator_loss(jnp.zeros((3, 2)), jnp.zeros((3, 2)))) == \
      pytest.approx(math.log(2))


@pytest.mark.slow
def test_factorvae_gradients_each_group_its_own_objective():
  exp = _experiment(family="factorvae", discriminator_hidden=8, discriminator_layers=2)
  family = exp.family
  params = jax.tree.map(lambda a: a[0], exp.create_state().params)
  batch = {"x": jnp.asarray(np.random.default_rng(1).random((8, *IMAGE)), jnp.float32)}
  key, hyper = jax.random.key(0), {"tc_gamma": jnp.float32(40.0)}

  def grads(p):
    loss = lambda p, name: family.loss({"params": p}, batch, key, jnp.int32(0), hyper)[1][name]
    return (jax.grad(lambda p: family.loss({"params": p}, batch, key, jnp.int32(0), hyper)[0])(p),
            jax.grad(loss)(p, "objective"), jax.grad(loss)(p, "discriminator_loss"))

  total, objective, d_loss = jax.jit(grads)(params)
  d = factorvae.DISCRIMINATOR
  # The VAE's gradient is its objective's (-ELBO + gamma TC, D fixed) ...
  vae_keys = [k for k in params if k != d]
  for k in vae_keys:
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                 total[k], objective[k])
  # ... the discriminator's its cross-entropy (with the codes fixed).
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
               total[d], d_loss[d])


@pytest.mark.slow
def test_the_discriminator_is_a_parameter_group_with_its_own_adam():
  exp = _experiment(family="factorvae", discriminator_hidden=8, discriminator_layers=2,
                    learning_rate=1e-2, discriminator_learning_rate=1e-4)
  (group,) = exp.family.parameter_groups()
  assert group.name == group.keys[0] == factorvae.DISCRIMINATOR
  assert dict(group.adam) == {"learning_rate": 1e-4, "b1": 0.5, "b2": 0.9}
  state = exp.create_state()
  before = jax.tree.map(np.array, state.params)  # The epoch donates the state's buffers.
  after = epoch.run_epoch(exp.runner, state, *exp.keys.epoch(0), exp.hyper).params
  # Adam's first step moves each parameter by about its rate (|m / sqrt(v)| = 1).
  step = jax.tree.map(lambda a, b: np.abs(np.asarray(a) - np.asarray(b)), after, before)
  d = np.concatenate([x.ravel() for x in jax.tree.leaves(step[factorvae.DISCRIMINATOR])])
  vae = np.concatenate([x.ravel() for k, v in step.items() if k != factorvae.DISCRIMINATOR
                        for x in jax.tree.leaves(v)])
  assert np.median(d[d > 0]) == pytest.approx(1e-4, rel=0.01)
  assert np.median(vae[vae > 0]) == pytest.approx(1e-2, rel=0.01)


# ----------------------------------------------------------------------------
# Sweeps and refusals


@pytest.mark.parametrize("family, field, values", [
    ("betatc", "tc_beta", (1.0, 6.0)), ("factorvae", "tc_gamma", (10.0, 40.0)),
    ("dipvae", "lambda_od", (1.0, 10.0)), ("annealed", "capacity_max", (5.0, 25.0))])
def test_main_weights_are_sweepable(family, field, values):
  config = tiny.get_config()
  config.family = family
  config.sweep = {field: ",".join(str(v) for v in values), "seed": "0,1"}
  models = sweep.model_settings(config)
  # Every combination once: 2 weights x 2 seeds in one program.
  assert sorted((m[field], m["seed"]) for m in models) == [(v, s) for v in values for s in (0, 1)]


def test_stacked_models_train_with_their_own_weights():
  exp = _experiment(num_models=2, family="betatc", sweep={"tc_beta": "1,6"})
  np.testing.assert_array_equal(exp.hyper["tc_beta"], [1.0, 6.0])


@pytest.mark.parametrize("changes, says", [
    ({"family": "betatc", "beta": 4.0}, "beta weighs the KL of family vae; family betatc weighs"),
    ({"family": "dipvae", "prior": "vamp"}, "family dipvae is built on the Gaussian VAE with "
                                            "prior=normal"),
    ({"family": "annealed", "objective": "iwae", "train_samples": 2}, "objective=elbo"),
])
def test_settings_the_families_are_not_built_for_are_refused(changes, says):
  with pytest.raises(UsageError, match=says):
    _experiment(**changes)
