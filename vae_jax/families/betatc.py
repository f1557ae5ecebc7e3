"""beta-TCVAE (`--config.family=betatc`, Chen et al. 2018): the ELBO with its total correlation weighed.

    vae-jax train --workdir=/tmp/betatc --config.family=betatc --config.tc_beta=6 \\
        --config.dataset=shapes2d --config.train_subset=20000

Chen et al. split the ELBO's KL, averaged over the data, into three terms of the aggregate
posterior q(z) = (1/N) sum_n q(z|x_n):

    E_x KL(q(z|x) || p(z)) = I_q(x; z)                       index-code mutual information
                           + KL(q(z) || prod_j q(z_j))       total correlation (TC)
                           + sum_j KL(q(z_j) || p(z_j))      dimension-wise KL

and weigh the TC by beta. With their other two weights at 1 (as disentanglement_lib trains
it) the objective is the negative ELBO plus (beta - 1) TC, with the analytic KL.

q(z) has no closed form; on a batch of M codes z_i ~ q(z|x_i) it is estimated by
minibatch-weighted sampling (MWS, Chen et al. section 4.1):

    log q(z_i)   ~ logsumexp_j log q(z_i | x_j)   - log(N M)
    log q(z_ij)  ~ logsumexp_k log q(z_ij | x_k)  - log(N M)     (latent j alone)

with N the training set's size (`train_size`, from the data). The constants do not change the
gradient; they do change the three terms, which are reported every epoch as `train_mi`,
`train_tc` and `train_dim_kl` (their sum is the batch's Monte Carlo KL, log q(z|x) -
log p(z)). MWS is biased: where the batch's posteriors do not overlap, log q(z_i) is about
log q(z_i|x_i) - log(N M), so the mutual information reads about log N + log M, above its
bound log N. Read them as Chen et al.'s estimator, for trends.
"""
import dataclasses
import math

import jax
import jax.numpy as jnp

from vae_jax import fields as fields_lib
from vae_jax import objectives
from vae_jax.families import regularized

FIELDS = (
    fields_lib.Field("tc_beta", 6.0, "beta-TCVAE: the weight of the total correlation (Chen "
                     "et al.'s beta; 1: the VAE; disentanglement_lib's study sweeps 1, 2, 4, 6, "
                     "8, 10)", "betatc", low=0.0, sweepable=True),
)


def pairwise_log_density(z: jax.Array, mean: jax.Array, logvar: jax.Array) -> jax.Array:
  """log q(z_il | x_j) for every code i and posterior j of a batch, per latent l.

  Args:
    z: codes (M, L); mean, logvar: the batch's posteriors (M, L).

  Returns:
    (M, M, L): [i, j, l] = log N(z_il; mean_jl, exp(logvar_jl)).
  """
  diff = z[:, None, :] - mean[None]
  return -0.5 * (diff * diff * jnp.exp(-logvar[None]) + logvar[None] + math.log(2 * math.pi))


def minibatch_weighted(z: jax.Array, mean: jax.Array, logvar: jax.Array,
                       dataset_size: int) -> tuple[jax.Array, jax.Array]:
  """The minibatch-weighted estimates of log q(z_i) and of each log q(z_il).

  Args:
    z, mean, logvar: (M, L) each: codes z_i ~ q(z|x_i) and the batch's posteriors.
    dataset_size: N, the number of training examples q(z) averages over.

  Returns:
    (log q(z_i) (M,), log q(z_il) (M, L)).
  """
  log_q = pairwise_log_density(z, mean, logvar)
  constant = math.log(dataset_size * z.shape[0])
  joint = jax.nn.logsumexp(jnp.sum(log_q, axis=-1), axis=1) - constant
  marginals = jax.nn.logsumexp(log_q, axis=1) - constant
  return joint, marginals


def decomposition(z: jax.Array, mean: jax.Array, logvar: jax.Array,
                  dataset_size: int) -> dict[str, jax.Array]:
  """The batch's estimates of the KL's three terms (nats; means over the batch).

  Returns:
    `mi` = E[log q(z|x) - log q(z)], `tc` = E[log q(z) - sum_l log q(z_l)], `dim_kl` =
    E[sum_l log q(z_l) - log p(z)]; they sum to E[log q(z|x) - log p(z)].
  """
  log_qz, log_marginals = minibatch_weighted(z, mean, logvar, dataset_size)
  log_q_given_x = objectives.gaussian_log_density(z, mean, logvar)
  log_pz = objectives.gaussian_log_density(z, jnp.zeros_like(z), jnp.zeros_like(z))
  product = jnp.sum(log_marginals, axis=-1)
  return {"mi": jnp.mean(log_q_given_x - log_qz), "tc": jnp.mean(log_qz - product),
          "dim_kl": jnp.mean(product - log_pz)}


@dataclasses.dataclass(frozen=True)
class BetaTCVAE(regularized.RegularizedVAE):
  """The negative ELBO + (tc_beta - 1) TC, the TC by minibatch-weighted sampling."""

  name = "betatc"
  fields = FIELDS
  settings_type = regularized.settings_class("BetaTCVAESettings", FIELDS)
  weight = "tc_beta"
  labels = {**regularized.RegularizedVAE.labels, "mi": "MI", "tc": "TC", "dim_kl": "dim KL"}

  def regularized(self, variables, terms, key, step, hyper):
    size = self.train_size if self.train_size > 0 else terms["z"].shape[0]
    parts = decomposition(terms["z"], terms["mean"], terms["logvar"], size)
    objective = terms["loss"] + (hyper["tc_beta"] - 1.0) * parts["tc"]
    return objective, objective, parts, {}

  def settings_text(self) -> str:
    return (f"beta-TCVAE: -ELBO + (tc_beta - 1) TC, minibatch-weighted over "
            f"N = {self.train_size:,}")
