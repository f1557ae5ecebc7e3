"""The second stage of the discrete families: a prior over the codes, and the two-stage model.

    vae-jax train-prior --workdir=DIR [--config.prior_layers=3 --config.num_epochs=20 ...]

fits `code_prior.CodePrior` (a causal transformer over the raster order of the
code grid) by maximum likelihood on the codes the frozen autoencoder of DIR
gives the training images, in `DIR/prior` (`vae_jax.train.train_stage`). Its
checkpoints hold the autoencoder's variables too (the non-gradient collection
"frozen"), so that a trained prior is the whole two-stage generative model

    c ~ p_prior(c),   x ~ p(x | decoder(embed(c))),

whose samples are `vae-jax sample`'s and whose likelihood `vae-jax evaluate`
bounds.

The bound. The encoder is deterministic: q(c | x) puts all its mass on the
codes z_q(x) it gives x. The ELBO of that q is

    log p(x) >= log p(x | z_q(x)) + log p_prior(z_q(x))

(its entropy term is 0): p(x) = sum_c p_prior(c) p(x | c) is a sum of
non-negative terms, one of which is the right side's. `nll_bound` = -(that)
is an upper bound on -log p(x) of the two-stage model, in nats per image, and
`bits_per_dim` divides it by D ln 2: with the discretised-logistic likelihood
a bound on the bits per dimension of the 8-bit images, in the same units as a
continuous VAE's IWAE bound; with a Bernoulli likelihood on grey levels, as
for the continuous VAE, a cross-entropy rather than a likelihood.

It is not an IWAE estimate, and more samples would not tighten it: importance
sampling with q(c | x) = a point mass draws the same c every time, so the
k-sample bound equals this one for every k (`evaluate`'s --k changes nothing
and is recorded as k = 1). The gap, bound minus -log p(x), is what the other
code grids contribute, log(1 + sum_{c != c*} p_prior(c) p(x | c) / (p_prior(c*)
p(x | c*))) with c* = z_q(x): a sum over K^(h w) grids that no estimator here
attempts. The bound is tight where p(x | c) is negligible for every other grid.
"""
import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from vae_jax import fields as fields_lib
from vae_jax.errors import UsageError
from vae_jax.families import base
from vae_jax.families.discrete import code_prior
from vae_jax.families.discrete import quantizers

_f = fields_lib.Field

FIELDS = (
    _f("prior_width", 64, "train-prior: the width of the code prior's transformer", "code prior",
       low=0, strict=True, shapes=True),
    _f("prior_layers", 3, "train-prior: its blocks (attention and MLP)", "code prior", low=0,
       strict=True, shapes=True),
    _f("prior_heads", 4, "train-prior: its attention heads (dividing prior_width)", "code prior",
       low=0, strict=True, shapes=True),
)

Settings = fields_lib.settings_class(
    "CodePriorSettings", (*fields_lib.group("model"), *FIELDS),
    "The config fields of the prior over a discrete model's codes.")

FROZEN = "frozen"  # The collection that keeps the first stage's variables.
NUM_SAMPLES = 64  # Prior samples in each epoch's figure (a square number).


@dataclasses.dataclass(frozen=True)
class CodePriorStage(base.Family):
  """The `prior` stage of a discrete family: `CodePrior` over the frozen `parent`'s codes.

  Variables: `params` (the prior's) and `frozen` (the first stage's variables, as
  trained). Metrics each epoch: `loss` -log p_prior(z_q(x)) in nats per image
  (what training minimises); test `recon` and `nll_bound`, the two-stage bound
  on -log p(x) (module docstring).

  Attributes:
    parent: the trained family of the first stage (`autoencoder.DiscreteFamily`).
    prior: the prior over its codes.
  """

  parent: base.Family
  prior: code_prior.CodePrior

  fields = FIELDS
  settings_type = Settings
  headline = "nll_bound"
  labels = {"loss": "code NLL", "nll_bound": "NLL bound", "prior_nll": "code NLL"}

  @property
  def name(self) -> str:  # The family it is a stage of, as config.json's `family`.
    return self.parent.name

  @classmethod
  def check(cls, settings, models) -> None:
    del models
    if settings.prior_width % settings.prior_heads:
      raise UsageError(f"prior_width={settings.prior_width} is not divisible by "
                       f"prior_heads={settings.prior_heads}")

  @classmethod
  def build(cls, settings, models, module=None, parent=None) -> "CodePriorStage":
    if parent is None or not parent.can(base.Capability.CODES):
      raise UsageError("the code prior is a later stage of a family with discrete codes")
    cls.check(settings, models)
    del module  # Built from the config.
    return cls(parent, code_prior.CodePrior(parent.num_codes, tuple(parent.code_grid),
                                            settings.prior_width, settings.prior_layers,
                                            settings.prior_heads))

  @property
  def capabilities(self) -> frozenset[str]:
    return frozenset({base.Capability.BOUND, base.Capability.SAMPLE, base.Capability.CODES})

  @property
  def image_shape(self) -> tuple[int, int, int]:
    return self.parent.image_shape

  @property
  def code_grid(self) -> tuple[int, int]:
    return self.parent.code_grid

  @property
  def num_codes(self) -> int:
    return self.parent.num_codes

  # Training.

  def init(self, key, frozen=None):
    if frozen is None:
      raise ValueError("the code prior starts from the first stage's variables (frozen=)")
    codes = jnp.zeros((1, *self.code_grid), jnp.int32)
    return {"params": self.prior.init(key, codes)["params"], FROZEN: frozen}

  def code_log_prob(self, variables, codes: jax.Array) -> jax.Array:
    """log p_prior(codes) in nats: int codes (..., h, w) -> (...)."""
    return self.prior.apply({"params": variables["params"]}, codes,
                            method=code_prior.CodePrior.log_prob)

  def loss(self, variables, batch, key, step, hyper):
    codes = self.parent.encode_codes(variables[FROZEN], batch["x"])
    loss = -jnp.mean(self.code_log_prob(variables, codes))
    return loss, {"loss": loss}, {FROZEN: variables[FROZEN]}

  # Evaluation.

  def two_stage_terms(self, variables, x: jax.Array) -> dict[str, jax.Array]:
    """Per image of x (E, H, W, C): `recon` -log p(x | z_q(x)), `prior_nll`
    -log p_prior(z_q(x)) and `log_px` = -(recon + prior_nll), the bound on log p(x), each
    (E,) in nats; `codes` int32 (E, h, w)."""
    terms = self.parent.reconstruction_terms(variables[FROZEN], x)
    prior_nll = -self.code_log_prob(variables, terms["codes"])
    return {"log_px": -(terms["recon"] + prior_nll), "recon": terms["recon"],
            "prior_nll": prior_nll, "codes": terms["codes"]}

  def test_terms(self, variables, x, y, key):
    """`loss` (the code NLL), `recon` and `nll_bound` = recon + loss, each (E,)."""
    terms = self.two_stage_terms(variables, x)
    return {"loss": terms["prior_nll"], "recon": terms["recon"], "nll_bound": -terms["log_px"]}

  def bound_terms(self, variables, x, y, keys, k, sample_chunk):
    """`two_stage_terms`: no samples, so neither `keys` nor k nor the chunk matter."""
    del keys, k, sample_chunk
    return self.two_stage_terms(variables, x)

  def summarize(self, stats, *, k, features):
    """The evaluate record of the two-stage bound (module docstring).

    Returns:
      dict: `num_examples`; `k` 1 (the bound takes no samples); `nll`,
      `nll_stderr` (nats per image, an upper bound on -log p(x)); `bits_per_dim`
      = nll / (D ln 2); `recon` -log p(x | z_q(x)) and `prior_nll`
      -log p_prior(z_q(x)) (nats per image; nll = recon + prior_nll);
      `prior_bits_per_code`; `uniform_prior_nll`, the bound with a uniform prior
      over the codes instead (recon + h w ln K: what fitting the prior gained);
      `codes_in_use`, `perplexity` of the codes of the evaluated images;
      `num_codes` K, `code_positions` h w.
    """
    del k
    stats = {name: np.asarray(v) for name, v in stats.items()}
    nll = -stats["log_px"].astype(np.float64)
    positions = math.prod(self.code_grid)
    counts = np.bincount(stats["codes"].reshape(-1), minlength=self.num_codes)
    recon, prior_nll = (stats[n].astype(np.float64).mean() for n in ("recon", "prior_nll"))
    return {
        "num_examples": len(nll), "k": 1,
        "nll": float(nll.mean()), "nll_stderr": base.standard_error(nll),
        "bits_per_dim": float(nll.mean() / (features * math.log(2))),
        "recon": float(recon), "prior_nll": float(prior_nll),
        "prior_bits_per_code": float(prior_nll / (positions * math.log(2))),
        "uniform_prior_nll": float(recon + positions * math.log(self.num_codes)),
        "codes_in_use": int(np.sum(counts > 0)),
        "perplexity": float(quantizers.perplexity(counts.astype(np.float64))),
        "num_codes": self.num_codes, "code_positions": positions,
    }

  def figures(self, variables, x, y, key):
    """The first stage's `reconstruction`, and `sample`: 64 draws of the two-stage model
    (8, 8), the prior at temperature 1."""
    first = self.parent.figures(variables[FROZEN], x, y, key)
    samples = self.decode_codes(variables, self.sample_codes(variables, key, NUM_SAMPLES))
    side = math.isqrt(NUM_SAMPLES)
    return {**first, "sample": samples.reshape(side, side, *samples.shape[1:])}

  # Codes: the first stage's, and draws of the prior.

  def encode_codes(self, variables, x):
    return self.parent.encode_codes(variables[FROZEN], x)

  def decode_codes(self, variables, codes):
    return self.parent.decode_codes(variables[FROZEN], codes)

  def encoder_outputs(self, variables, x):
    return self.parent.encoder_outputs(variables[FROZEN], x)

  def decode_outputs(self, variables, z):
    return self.parent.decode_outputs(variables[FROZEN], z)

  def sample_codes(self, variables, key, num, temperature=1.0):
    return self.prior.apply({"params": variables["params"]}, key, num, temperature,
                            method=code_prior.CodePrior.sample)

  # Describing a run.

  def describe(self, params) -> str:
    p = self.prior
    h, w = self.code_grid
    return (f"code prior of the {self.parent.name} model: a causal transformer of {p.layers} "
            f"blocks of width {p.features} ({p.heads} heads) over its {h}x{w} grid of "
            f"{self.num_codes:,} codes, raster order ({base.parameter_count(params):,} "
            "parameters; the autoencoder frozen)")

  def settings_text(self) -> str:
    return f"prior over the codes of family {self.parent.name}"
