"""The Gaussian VAE with a penalty on its codes: what betatc, factorvae, dipvae and annealed share.

Each of those families trains the Gaussian VAE's module (`families.vae.build_module`: the
config's networks and likelihood with the N(0, I) prior, the diagonal Gaussian posterior and
one stochastic layer) on the single-sample ELBO with its analytic KL, changed by a term of
its own on the batch's codes (`RegularizedVAE.regularized`). The rest is the Gaussian VAE's:
the per-epoch test terms, the IWAE bound, `vae-jax evaluate`'s record, the figures and the
latent API (capability LATENT), so a trained model of these families is a Gaussian VAE that
was trained otherwise.

Every one reports, beside its own metrics, `loss` (the mean negative ELBO, whatever it
minimises), `recon`, `kl` and `objective` (what it minimises).
"""
import dataclasses

import jax
import jax.numpy as jnp

from vae_jax import fields as fields_lib
from vae_jax.errors import UsageError
from vae_jax.families import vae
from vae_jax.families.vae import hierarchy
from vae_jax.families.vae import posteriors
from vae_jax.families.vae import priors

# The vae family's KL weighting, at the values that leave its ELBO as it is. These families
# weigh their own terms, each with its own field: one of these set otherwise is a mistake.
NEUTRAL = {"beta": 1.0, "kl_warmup_steps": 0, "free_bits": 0.0}
# The Gaussian VAE's choices these families are defined for.
BUILT_FOR = (("prior", "normal"), ("posterior", "gaussian"), ("stochastic_layers", 1),
             ("conditional", False), ("objective", "elbo"), ("train_samples", 1),
             ("gradient_estimator", "reparam"))


def settings_class(name: str, own: tuple) -> type:
  """The settings a family of this kind builds from: the networks, the Gaussian VAE's own
  fields (to refuse those it is not built for), the training set's size and its own."""
  return fields_lib.settings_class(
      name, (*fields_lib.group("model"), *vae.FIELDS, fields_lib.FIELDS["train_size"], *own))


def check(settings, models: list[dict], family: str, weight: str) -> None:
  """Raises UsageError for a Gaussian VAE setting the family is not built for.

  Args:
    settings: the family's settings (`settings_class`).
    models: each model's sweepable settings.
    family: the family's name, for the message.
    weight: the field that weighs the family's own term, named where a user set the vae
      family's `beta` instead.
  """
  vae.check(settings, [dict(NEUTRAL)])
  for name, fits in BUILT_FOR:
    value = getattr(settings, name)
    if value != fits:
      raise UsageError(f"family {family} is built on the Gaussian VAE with {name}={fits} (an "
                       "N(0, I) prior, a diagonal posterior, one stochastic layer, no labels, "
                       f"the single-sample ELBO), not {name}={value}")
  for name, neutral in NEUTRAL.items():
    if any(m.get(name, neutral) != neutral for m in models):
      raise UsageError(f"{name} weighs the KL of family vae; family {family} weighs its own "
                       f"term with {weight} (leave {name} at {neutral})")


def check_module(module, family: str) -> None:
  """Raises UsageError for a user's VAE with another prior, posterior, layers or labels."""
  if (not isinstance(module.prior, priors.StandardNormal)
      or not isinstance(module.posterior, posteriors.DiagonalGaussian)
      or isinstance(module, hierarchy.HierarchicalVAE) or module.num_classes):
    raise UsageError(f"family {family} is built for a VAE with the N(0, I) prior, the diagonal "
                     "Gaussian posterior, one stochastic layer and no labels")


def posterior_terms(module, x: jax.Array, key: jax.Array) -> dict[str, jax.Array]:
  """One draw z ~ q(z|x) per example and the single-sample ELBO's terms, computed as the
  Gaussian VAE's `elbo_terms` computes them (the same draw from the same key).

  Args:
    module: a bound `VAE` (called through `apply(..., method=posterior_terms)`).
    x: images (B, H, W, C) in [0, 1].
    key: the key of the draw.

  Returns:
    `mean`, `logvar`, `z` (B, L); `recon` = -log p(x|z) (B,); `kl_per_dimension` (B, L).
  """
  mean, logvar = module.encode(x)
  z, _ = module.sample_posterior(key, mean, logvar)
  recon = -module.log_likelihood(x, module.decode(z))
  return {"mean": mean, "logvar": logvar, "z": z, "recon": recon,
          "kl_per_dimension": module.kl_per_dimension(mean, logvar)}


@dataclasses.dataclass(frozen=True)
class RegularizedVAE(vae.GaussianVAE):
  """A Gaussian VAE trained on its ELBO changed by a term on the batch's codes.

  A subclass declares `name`, `fields`, `settings_type` (`settings_class`), `weight` (the
  field of its main weight) and implements `regularized`; `options` gives its dataclass
  fields from the settings.
  """

  train_size: int = 0  # N of an estimate over the training set; 0: unknown.

  weight = ""
  labels = {"kl": "KL", "iwae_nll": "IWAE NLL", "nll": "NLL (IWAE)"}

  @classmethod
  def check(cls, settings, models: list[dict]) -> None:
    check(settings, models, cls.name, cls.weight)
    cls.check_own(settings, models)

  @classmethod
  def check_own(cls, settings, models: list[dict]) -> None:
    """Raises UsageError where the family's own settings do not go together."""
    del settings, models

  @classmethod
  def options(cls, settings) -> dict:
    """The family's own dataclass fields, from its settings."""
    del settings
    return {}

  @classmethod
  def build(cls, settings, models: list[dict], module=None, parent=None) -> "RegularizedVAE":
    del parent  # One stage.
    cls.check(settings, models)
    if module is None:
      module = vae.build_module(settings)
    check_module(module, cls.name)
    return cls(module=module, train_size=settings.train_size, **cls.options(settings))

  def vae_params(self, params: dict) -> dict:
    """The VAE's parameters (without a family's own networks)."""
    return params

  def terms(self, params: dict, x: jax.Array, key: jax.Array) -> dict[str, jax.Array]:
    """`posterior_terms` of images x (B, H, W, C) under the VAE's parameters in `params`."""
    return self.module.apply({"params": self.vae_params(params)}, x, key, method=posterior_terms)

  def loss(self, variables, batch, key, step, hyper):
    terms = self.terms(variables["params"], batch["x"], key)
    recon = jnp.mean(terms["recon"])
    kl = jnp.mean(jnp.sum(terms["kl_per_dimension"], axis=-1))
    loss = jnp.mean(terms["recon"] + jnp.sum(terms["kl_per_dimension"], axis=-1))
    minimised, objective, metrics, state = self.regularized(
        variables, {**terms, "loss": loss, "mean_recon": recon, "mean_kl": kl}, key, step, hyper)
    return minimised, {"loss": loss, "recon": recon, "kl": kl, "objective": objective,
                       **metrics}, state

  def regularized(self, variables, terms: dict, key: jax.Array, step: jax.Array, hyper: dict
                  ) -> tuple[jax.Array, jax.Array, dict, dict]:
    """The family's objective from the batch's terms.

    Args:
      variables: the model's variables.
      terms: `posterior_terms` of the batch, and its scalars `loss` (the mean negative
        ELBO), `mean_recon`, `mean_kl`.
      key: the step's key (the draw of z used it; fold it for another draw).
      step: the 0-based step.
      hyper: the model's sweepable settings.

    Returns:
      (the scalar to minimise, the VAE's objective (the same scalar unless the family trains
      a second network with it), the family's metrics, its non-gradient state).
    """
    raise NotImplementedError

  def schedules(self, step, hyper):
    del step, hyper
    return {}

  def test_terms(self, variables, x, y, key):
    """The single-sample negative ELBO's `loss`, `recon`, `kl` (E,), as the Gaussian VAE's."""
    del y
    terms = self.terms(variables["params"], x, key)
    kl = jnp.sum(terms["kl_per_dimension"], axis=-1)
    return {"loss": terms["recon"] + kl, "recon": terms["recon"], "kl": kl}

  def describe(self, params) -> str:
    return super().describe(self.vae_params(params))

  def settings_text(self) -> str:
    return f"family {self.name}"

