"""The VQ-VAE family (`--config.family=vqvae`; van den Oord, Vinyals & Kavukcuoglu 2017).

    vae-jax train --workdir=/tmp/vq --config.family=vqvae --config.model=conv
    vae-jax train-prior --workdir=/tmp/vq                # the prior over its codes
    vae-jax sample --workdir=/tmp/vq                     # decoded draws of the prior

An encoder to a grid of vectors z_e (`autoencoder`: the conv VAE's
convolutions to an H/4 x W/4 grid, or the MLP's layers to M positions), each
replaced by its nearest of `codebook_size` code vectors with the
straight-through gradient, and a decoder of the grid
(`quantizers.VectorQuantizer`). The objective per image: -log p(x | z_q)
plus, summed over the grid, `commitment_weight` times the commitment loss
||z_e - sg(e_k)||^2 and, for the loss-trained codebook, the codebook loss
||sg(z_e) - e_k||^2.

The default codebook (`codebook_update=ema`) follows the paper's appendix: an
exponential moving average (decay 0.99) of the encoder outputs each code is
given, with Laplace-smoothed counts, kept in the flax collection "codebook":
the family's non-gradient state, checkpointed and resumed with the
parameters, one per model of a `num_models` run. Dead codes are restarted at
every step (`quantizers.restart_dead_codes`): a code whose count has fallen
below 3% of the average count is replaced by an encoder output of the batch,
drawn in proportion to its squared distance to its code; the first step thus
initialises the codebook from the data, and a code used at the average rate
and then not at all is restarted after about 350 steps.
"""
import dataclasses

import jax.numpy as jnp

from vae_jax import fields as fields_lib
from vae_jax.families.discrete import autoencoder
from vae_jax.families.discrete import prior
from vae_jax.families.discrete import quantizers

_f = fields_lib.Field

FIELDS = (
    _f("codebook_size", 512, "vqvae: K, the code vectors of the codebook", "vqvae", low=0,
       strict=True, shapes=True),
    _f("code_width", 64, "vqvae: D, the numbers of each code vector (the encoder's last layer "
       "gives them at each grid position)", "vqvae", low=0, strict=True, shapes=True),
    _f("commitment_weight", 0.25, "vqvae: beta, the weight of the commitment loss "
       "||z_e - sg(e)||^2 (the paper's 0.25)", "vqvae", low=0.0),
    _f("codebook_update", "ema", "vqvae: ema (an exponential moving average of the encoder "
       "outputs given each code, decay 0.99, with dead codes restarted from encoder outputs; "
       "the paper's appendix) | loss (code vectors as parameters trained by the codebook "
       "loss ||sg(z_e) - e||^2, no restarts)", "vqvae", choices=("ema", "loss"), shapes=True),
)

Settings = fields_lib.settings_class(
    "VQVAESettings", (*fields_lib.group("model"), *autoencoder.FIELDS, *FIELDS),
    "The config fields of a VQ-VAE: the networks, p(x|z) and the family's own.")


@dataclasses.dataclass(frozen=True)
class VQVAE(autoencoder.DiscreteFamily):
  """A VQ-VAE (`autoencoder.DiscreteFamily` with a `quantizers.VectorQuantizer`)."""

  name = "vqvae"
  fields = (*autoencoder.FIELDS, *FIELDS)
  settings_type = Settings
  stages = {"prior": prior.CodePriorStage}
  title = "VQ-VAE"

  @classmethod
  def build(cls, settings, models, module=None, parent=None) -> "VQVAE":
    del parent  # The first stage.
    autoencoder.refuse_module(cls.name, module)
    autoencoder.check(settings)
    quantizer = quantizers.VectorQuantizer(settings.codebook_size, settings.commitment_weight,
                                           ema=settings.codebook_update == "ema")
    return cls(autoencoder.build_module(settings, quantizer, settings.code_width))

  @property
  def num_codes(self) -> int:
    return self.module.quantizer.num_codes

  @property
  def stateful(self) -> bool:
    return self.module.quantizer.ema

  def _quantizer_metrics(self, quantized):
    """`commitment` summed over the grid (the batch's mean), and with the EMA codebook the
    codes `restarts` restarted by this step."""
    metrics = {"commitment": jnp.mean(jnp.sum(quantized.commitment, axis=(-2, -1)))}
    if self.stateful:
      metrics["restarts"] = quantized.restarted.astype(jnp.float32)
    return metrics

  def _test_extras(self):
    return ("commitment",)

  def quantizer_text(self) -> str:
    q = self.module.quantizer
    book = "EMA codebook, dead codes restarted" if q.ema else "loss-trained codebook"
    return f"width {self.module.encoder.width}, {book}, commitment weight {q.commitment_weight:g}"

  def settings_text(self) -> str:
    return f"family vqvae, {self.num_codes} codes"
