"""FactorVAE (`--config.family=factorvae`, Kim & Mnih 2018): the total correlation by a discriminator.

    vae-jax train --workdir=/tmp/factor --config.family=factorvae --config.tc_gamma=40 \\
        --config.dataset=shapes2d --config.train_subset=20000

A discriminator D tells codes z ~ q(z) (one per example of the batch) from codes of the
product of their marginals (each latent shuffled over the batch on its own: `permute_dims`).
Trained to the optimum of its logistic loss, its logit difference is the density ratio
log q(z) / prod_j q(z_j), so its mean over the batch estimates the total correlation:

    TC ~ mean_i (D(z_i)_0 - D(z_i)_1),    VAE:  minimise  -ELBO + tc_gamma * TC

(Kim & Mnih eq. 2-3). The discriminator is the family's second parameter group,
`discriminator`, with its own Adam: learning rate 1e-4, b1 0.5, b2 0.9 (the paper's and
disentanglement_lib's; `discriminator_learning_rate`, `discriminator_b1`,
`discriminator_b2`), and the architecture of the paper's appendix A: 6 hidden layers of 1,000
leaky-ReLU units (slope 0.2), two logits. As in disentanglement_lib, both updates use the
same batch and the same codes at each step; one scalar carries both gradients: the VAE's
objective with D held fixed, plus D's loss with the codes held fixed.

Metrics: `tc` (the discriminator's estimate on the training batches and, `test_tc`, per test
image) and `discriminator_loss` (log 2 = 0.693 when it cannot tell them apart).
"""
import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from vae_jax import fields as fields_lib
from vae_jax.families import base
from vae_jax.families import regularized

DISCRIMINATOR = "discriminator"  # Its top-level key in params, and its parameter group.
DISCRIMINATOR_STREAM = 1  # Folded into a model's init key and step key for D's draws.

_f = fields_lib.Field
FIELDS = (
    _f("tc_gamma", 40.0, "FactorVAE: the weight of the total correlation (Kim & Mnih's gamma; "
       "disentanglement_lib's study sweeps 10, 20, 30, 40, 50, 100)", "factorvae", low=0.0,
       sweepable=True),
    _f("discriminator_hidden", 1000, "FactorVAE: units of each hidden layer of the "
       "discriminator (the paper's 1000)", "factorvae", low=0, strict=True, shapes=True),
    _f("discriminator_layers", 6, "FactorVAE: hidden layers of the discriminator (the "
       "paper's 6)", "factorvae", low=0, strict=True, shapes=True),
    _f("discriminator_learning_rate", 1e-4, "FactorVAE: the discriminator's Adam learning rate "
       "(the paper's 1e-4)", "factorvae", low=0.0, strict=True),
    _f("discriminator_b1", 0.5, "FactorVAE: the discriminator's Adam b1 (the paper's 0.5)",
       "factorvae", low=0.0, high=1.0, strict=False),
    _f("discriminator_b2", 0.9, "FactorVAE: the discriminator's Adam b2 (the paper's 0.9)",
       "factorvae", low=0.0, high=1.0, strict=False),
)


class Discriminator(nn.Module):
  """Codes (..., L) -> logits (..., 2): [real (from q(z)), permuted (from prod_j q(z_j))]."""

  hidden: int = 1000
  layers: int = 6

  @nn.compact
  def __call__(self, z: jax.Array) -> jax.Array:
    for i in range(self.layers):
      z = nn.leaky_relu(nn.Dense(self.hidden, name=f"hidden_{i}")(z), negative_slope=0.2)
    return nn.Dense(2, name="logits")(z)


def permute_dims(key: jax.Array, z: jax.Array) -> jax.Array:
  """Each latent of codes (M, L) shuffled over the batch on its own (Kim & Mnih's algorithm 1):
  draws from the product of the batch's marginals. Column j is a permutation of z[:, j]."""
  order = jnp.argsort(jax.random.uniform(key, z.shape), axis=0)
  return jnp.take_along_axis(z, order, axis=0)


def log_ratio(logits: jax.Array) -> jax.Array:
  """The discriminator's estimate of log q(z) / prod_j q(z_j): logit 0 - logit 1, (...)."""
  return logits[..., 0] - logits[..., 1]


def discriminator_loss(real_logits: jax.Array, permuted_logits: jax.Array) -> jax.Array:
  """The discriminator's mean cross-entropy: class 0 for codes of q(z), 1 for permuted ones."""
  real = jax.nn.log_softmax(real_logits)[:, 0]
  permuted = jax.nn.log_softmax(permuted_logits)[:, 1]
  return -0.5 * (jnp.mean(real) + jnp.mean(permuted))


@dataclasses.dataclass(frozen=True)
class FactorVAE(regularized.RegularizedVAE):
  """The negative ELBO + tc_gamma * the discriminator's TC; the discriminator trained beside."""

  discriminator: Discriminator = Discriminator()
  adam: tuple[tuple[str, float], ...] = ()

  name = "factorvae"
  fields = FIELDS
  settings_type = regularized.settings_class("FactorVAESettings", FIELDS)
  weight = "tc_gamma"
  labels = {**regularized.RegularizedVAE.labels, "tc": "TC", "discriminator_loss": "D loss"}

  @classmethod
  def options(cls, settings) -> dict:
    return {"discriminator": Discriminator(settings.discriminator_hidden,
                                           settings.discriminator_layers),
            "adam": (("learning_rate", settings.discriminator_learning_rate),
                     ("b1", settings.discriminator_b1), ("b2", settings.discriminator_b2))}

  def parameter_groups(self):
    return (base.ParameterGroup(DISCRIMINATOR, (DISCRIMINATOR,), self.adam),)

  def init(self, key, frozen=None):
    variables = super().init(key)
    codes = jnp.zeros((1, self.latents), jnp.float32)
    d_key = jax.random.fold_in(key, DISCRIMINATOR_STREAM)
    d_params = self.discriminator.init(d_key, codes)["params"]
    return {"params": {**variables["params"], DISCRIMINATOR: d_params}}

  def vae_params(self, params):
    return {k: v for k, v in params.items() if k != DISCRIMINATOR}

  def _logits(self, d_params, z):
    return self.discriminator.apply({"params": d_params}, z)

  def regularized(self, variables, terms, key, step, hyper):
    stop = jax.lax.stop_gradient
    d_params, z = variables["params"][DISCRIMINATOR], terms["z"]
    tc = jnp.mean(log_ratio(self._logits(stop(d_params), z)))
    objective = terms["loss"] + hyper["tc_gamma"] * tc
    permuted = permute_dims(jax.random.fold_in(key, DISCRIMINATOR_STREAM), stop(z))
    d_loss = discriminator_loss(self._logits(d_params, stop(z)), self._logits(d_params, permuted))
    return objective + d_loss, objective, {"tc": tc, "discriminator_loss": d_loss}, {}

  def test_terms(self, variables, x, y, key):
    """The Gaussian VAE's `loss`, `recon`, `kl` and the discriminator's `tc` (E,): its log
    ratio at the same draw z ~ q(z|x) per test image."""
    params = variables["params"]
    terms = self.terms(params, x, key)
    kl = jnp.sum(terms["kl_per_dimension"], axis=-1)
    return {"loss": terms["recon"] + kl, "recon": terms["recon"], "kl": kl,
            "tc": log_ratio(self._logits(params[DISCRIMINATOR], terms["z"]))}

  def describe(self, params) -> str:
    d = self.discriminator
    return (f"{super().describe(params)}; a discriminator of {d.layers} x {d.hidden} units "
            f"({base.parameter_count(params[DISCRIMINATOR]):,} parameters)")

  def settings_text(self) -> str:
    return "FactorVAE: -ELBO + tc_gamma TC by the discriminator"
