"""The FSQ family (`--config.family=fsq`; finite scalar quantisation, Mentzer et al. 2023).

    vae-jax train --workdir=/tmp/fsq --config.family=fsq --config.fsq_levels=8,5,5,5
    vae-jax train-prior --workdir=/tmp/fsq

The encoder (`autoencoder`: the conv VAE's convolutions, or the MLP's layers to
M positions) gives d = len(fsq_levels) numbers at each grid position; channel
i is bounded by a tanh and rounded to L_i levels with the straight-through
gradient (`quantizers.fsq_quantize`), so the code at a position is one of
prod(L_i) (an implicit codebook: 1,000 for the default 8,5,5,5), its index
the mixed-radix number of its levels. No codebook, no codebook or commitment
loss and no state: the objective is -log p(x | z_q) alone.
"""
import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from vae_jax import fields as fields_lib
from vae_jax.errors import UsageError
from vae_jax.families.discrete import autoencoder
from vae_jax.families.discrete import prior
from vae_jax.families.discrete import quantizers

FIELDS = (
    fields_lib.Field(
        "fsq_levels", (8, 5, 5, 5), "fsq: L_i, the levels of each channel of a code "
        "(--config.fsq_levels=8,5,5,5: 4 channels, 1,000 codes; the paper's choices for "
        "2^8, 2^10, 2^12 codes: 8,6,5 | 8,5,5,5 | 7,5,5,5,5)", "fsq", shapes=True),
)

Settings = fields_lib.settings_class(
    "FSQSettings", (*fields_lib.group("model"), *autoencoder.FIELDS, *FIELDS),
    "The config fields of an FSQ model: the networks, p(x|z) and the family's own.")


class FSQQuantizer(nn.Module):
  """`quantizers.fsq_quantize` behind the quantiser interface of `DiscreteAutoencoder`: no
  losses, no restarts, no state."""

  levels: tuple[int, ...]

  @property
  def num_codes(self) -> int:
    return math.prod(self.levels)

  def __call__(self, z: jax.Array, train: bool = False,
               restart_key: jax.Array | None = None) -> quantizers.Quantized:
    del train, restart_key  # Nothing to update.
    codes = quantizers.fsq_quantize(z, self.levels)
    indices = quantizers.fsq_codes_to_indices(codes, self.levels)
    zeros = jnp.zeros(indices.shape, jnp.float32)
    return quantizers.Quantized(codes, indices, zeros, zeros, jnp.zeros((), jnp.int32))

  def embed(self, indices: jax.Array) -> jax.Array:
    return quantizers.fsq_indices_to_codes(indices, self.levels)


def check_levels(levels) -> None:
  if not levels or min(levels) < 2:
    raise UsageError(f"fsq_levels must be one integer >= 2 per channel, e.g. 8,5,5,5; got "
                     f"{','.join(map(str, levels)) or 'none'}")
  if math.prod(levels) > 2 ** 20:
    raise UsageError(f"fsq_levels {','.join(map(str, levels))} give {math.prod(levels):,} codes; "
                     "at most 2^20 are built (each epoch counts every code's use)")


@dataclasses.dataclass(frozen=True)
class FSQVAE(autoencoder.DiscreteFamily):
  """An FSQ autoencoder (`autoencoder.DiscreteFamily` with an `FSQQuantizer`)."""

  name = "fsq"
  fields = (*autoencoder.FIELDS, *FIELDS)
  settings_type = Settings
  stages = {"prior": prior.CodePriorStage}
  title = "FSQ"

  @classmethod
  def check(cls, settings, models) -> None:
    super().check(settings, models)
    check_levels(tuple(settings.fsq_levels))

  @classmethod
  def build(cls, settings, models, module=None, parent=None) -> "FSQVAE":
    del parent  # The first stage.
    autoencoder.refuse_module(cls.name, module)
    cls.check(settings, models)
    levels = tuple(settings.fsq_levels)
    return cls(autoencoder.build_module(settings, FSQQuantizer(levels), len(levels)))

  @property
  def num_codes(self) -> int:
    return self.module.quantizer.num_codes

  def quantizer_text(self) -> str:
    return f"levels {','.join(map(str, self.module.quantizer.levels))}"

  def settings_text(self) -> str:
    return f"family fsq, levels {','.join(map(str, self.module.quantizer.levels))}"
