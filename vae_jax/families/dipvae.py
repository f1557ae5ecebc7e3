"""DIP-VAE I and II (`--config.family=dipvae`, Kumar et al. 2018): the ELBO and a covariance penalty.

    vae-jax train --workdir=/tmp/dip --config.family=dipvae --config.dip_type=i \\
        --config.lambda_od=10 --config.dataset=shapes2d --config.train_subset=20000

DIP-VAE asks the aggregate posterior's covariance to be the identity: the negative ELBO plus

    lambda_od * sum_{i != j} C_ij^2  +  lambda_d * sum_i (C_ii - 1)^2

with C, on the batch, the covariance of the encoder's means (DIP-VAE I, Kumar et al. eq. 6),
or that plus the mean of the posteriors' covariances, diag(mean_x exp(logvar)) (DIP-VAE II,
eq. 7: the covariance of z under q(z)). As disentanglement_lib computes it: the batch
covariance divides by M, and lambda_d defaults to 10 lambda_od for I and lambda_od for II.
The two sums are reported as `train_covariance_off_diagonal` and `train_covariance_diagonal`.
"""
import dataclasses

import jax
import jax.numpy as jnp

from vae_jax import fields as fields_lib
from vae_jax.families import regularized

DIAGONAL_FACTOR = {"i": 10.0, "ii": 1.0}  # lambda_d / lambda_od by default: disentanglement_lib's.

_f = fields_lib.Field
FIELDS = (
    _f("dip_type", "i", "DIP-VAE: i (the covariance of the encoder's means) | ii (of z under "
       "q(z): the means' covariance plus the mean posterior variance)", "dipvae",
       choices=("i", "ii")),
    _f("lambda_od", 10.0, "DIP-VAE: the weight of the squared off-diagonal covariances "
       "(disentanglement_lib's study sweeps 1, 2, 5, 10, 20, 50)", "dipvae", low=0.0,
       sweepable=True),
    _f("lambda_d", 0.0, "DIP-VAE: the weight of the squared deviations of the variances from 1; "
       "0: disentanglement_lib's, 10 lambda_od for dip_type=i and lambda_od for ii", "dipvae",
       low=0.0, sweepable=True),
)


def covariance(mean: jax.Array, logvar: jax.Array, dip_type: str) -> jax.Array:
  """The batch's covariance DIP-VAE penalises: (L, L) from means and log-variances (M, L).

  I: Cov[mean] = E[mean mean^T] - E[mean] E[mean]^T over the batch (dividing by M);
  II: that plus diag(E[exp(logvar)]).
  """
  centred = mean - jnp.mean(mean, axis=0)
  cov = jnp.einsum("mi,mj->ij", centred, centred,
                   precision=jax.lax.Precision.HIGHEST) / mean.shape[0]
  if dip_type == "ii":
    cov = cov + jnp.diag(jnp.mean(jnp.exp(logvar), axis=0))
  return cov


def penalties(cov: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(sum_{i != j} C_ij^2, sum_i (C_ii - 1)^2) of a covariance (L, L)."""
  diagonal = jnp.diag(cov)
  return jnp.sum(cov * cov) - jnp.sum(diagonal * diagonal), jnp.sum((diagonal - 1.0) ** 2)


def diagonal_weight(lambda_od, lambda_d, dip_type: str):
  """lambda_d, or where it is 0 disentanglement_lib's multiple of lambda_od."""
  return jnp.where(lambda_d > 0, lambda_d, DIAGONAL_FACTOR[dip_type] * lambda_od)


@dataclasses.dataclass(frozen=True)
class DIPVAE(regularized.RegularizedVAE):
  """The negative ELBO + lambda_od * off-diagonal + lambda_d * diagonal covariance penalty."""

  dip_type: str = "i"

  name = "dipvae"
  fields = FIELDS
  settings_type = regularized.settings_class("DIPVAESettings", FIELDS)
  weight = "lambda_od"

  @classmethod
  def options(cls, settings) -> dict:
    return {"dip_type": settings.dip_type}

  def regularized(self, variables, terms, key, step, hyper):
    off, diagonal = penalties(covariance(terms["mean"], terms["logvar"], self.dip_type))
    lambda_d = diagonal_weight(hyper["lambda_od"], hyper["lambda_d"], self.dip_type)
    objective = terms["loss"] + hyper["lambda_od"] * off + lambda_d * diagonal
    return objective, objective, {"covariance_off_diagonal": off,
                                  "covariance_diagonal": diagonal}, {}

  def settings_text(self) -> str:
    return f"DIP-VAE-{self.dip_type.upper()}: -ELBO + covariance penalties"
