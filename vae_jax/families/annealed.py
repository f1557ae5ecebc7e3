"""AnnealedVAE (`--config.family=annealed`, Burgess et al. 2018): a KL held near a rising capacity.

    vae-jax train --workdir=/tmp/annealed --config.family=annealed --config.capacity_max=25 \\
        --config.capacity_steps=100000 --config.dataset=shapes2d --config.train_subset=20000

Burgess et al. ("Understanding disentangling in beta-VAE", eq. 8) minimise

    recon + capacity_gamma * | KL - C |,   C = capacity_max * min(1, step / capacity_steps)

with KL the batch's mean KL(q(z|x) || N(0, I)): the encoder may carry C nats, C rising
linearly from 0, so that the factors enter the code one after another, the one that explains
the most pixels first. As disentanglement_lib computes it (its study: gamma 1000,
capacity_steps 100,000, capacity_max swept over 5, 10, 25, 50, 75, 100). C at the end of
each epoch is recorded as `capacity` in metrics.jsonl.
"""
import dataclasses

import jax.numpy as jnp

from vae_jax import fields as fields_lib
from vae_jax.families import regularized

_f = fields_lib.Field
FIELDS = (
    _f("capacity_max", 25.0, "AnnealedVAE: the capacity C reached at capacity_steps, nats "
       "(disentanglement_lib's study sweeps 5, 10, 25, 50, 75, 100)", "annealed", low=0.0,
       sweepable=True),
    _f("capacity_gamma", 1000.0, "AnnealedVAE: the weight of |KL - C| (Burgess et al. and "
       "disentanglement_lib: 1000)", "annealed", low=0.0, sweepable=True),
    _f("capacity_steps", 100_000, "AnnealedVAE: steps over which C rises linearly from 0 to "
       "capacity_max (disentanglement_lib: 100,000); 0: capacity_max from the start",
       "annealed", low=0, sweepable=True),
)


def capacity(step, capacity_max, capacity_steps):
  """C at the 0-based `step`: capacity_max * min(1, step / capacity_steps) (capacity_max when
  capacity_steps is 0)."""
  ramp = jnp.minimum(1.0, step / jnp.maximum(capacity_steps, 1))
  return capacity_max * jnp.where(capacity_steps > 0, ramp, 1.0)


@dataclasses.dataclass(frozen=True)
class AnnealedVAE(regularized.RegularizedVAE):
  """recon + capacity_gamma * |KL - C(step)|, on the batch's means."""

  name = "annealed"
  fields = FIELDS
  settings_type = regularized.settings_class("AnnealedVAESettings", FIELDS)
  weight = "capacity_gamma"

  def regularized(self, variables, terms, key, step, hyper):
    target = capacity(step, hyper["capacity_max"], hyper["capacity_steps"])
    objective = terms["mean_recon"] + hyper["capacity_gamma"] * jnp.abs(terms["mean_kl"] - target)
    return objective, objective, {}, {}

  def schedules(self, step, hyper):
    """`capacity`: C after `step` steps, for the epoch's record."""
    return {"capacity": float(capacity(jnp.float32(step), hyper["capacity_max"],
                                       hyper["capacity_steps"]))}

  def settings_text(self) -> str:
    return "AnnealedVAE: recon + capacity_gamma |KL - C|, C rising"

