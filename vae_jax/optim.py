"""The optimizer a config describes, built with optax in this one place.

    optimizer      adam | adamw (decoupled weight decay, Loshchilov & Hutter 2019)
    weight_decay   adamw's decay rate (0: none)
    lr_schedule    constant | cosine (decays to 0 at the last step) | burda (Burda
                   et al. 2015's stages: 3^i epochs at 10^(-i/7), i = 0..7, as
                   shares of the run)
    adam_eps       Adam's epsilon
    warmup_steps   linear warm-up from 0 to the learning rate
    grad_clip_norm clip gradients to this global norm (0: off)

The learning rate is an argument rather than a config read, so that a sweep
can give each of several stacked models its own (a traced scalar under
`jax.vmap`). With the defaults the result is `optax.adam(learning_rate)`,
the PyTorch tutorial's optimizer, step for step.
"""
import dataclasses

import ml_collections
import optax

from vae_jax import fields
from vae_jax.errors import UsageError

# The config's optimizer fields (schema group "optimizer") as a hashable value,
# so that the jitted step can take it as a static argument.
OptimizerConfig = dataclasses.make_dataclass(
    "OptimizerConfig", [(f.name, f.kind) for f in fields.group("optimizer")], frozen=True)
OptimizerConfig.__doc__ = "The optimizer fields of a config: " + ", ".join(
    f.name for f in fields.group("optimizer")) + "."


def optimizer_config(config: ml_collections.ConfigDict) -> OptimizerConfig:
  """The optimizer fields of `config`, checked."""
  check(config)
  return OptimizerConfig(**{f.name: config[f.name] for f in fields.group("optimizer")})


def check(config) -> None:
  """Raises UsageError for an invalid optimizer setting (its values, and how they combine)."""
  for f in fields.group("optimizer"):
    f.check(config[f.name])
  if config.weight_decay and config.optimizer != "adamw":
    raise UsageError("weight_decay needs --config.optimizer=adamw (Adam's L2 penalty "
                     "is not offered)")


def schedule_factor(config, total_steps: int):
  """The learning rate's multiplier as a function of the step count, or None when it is 1.

  Linear warm-up over `warmup_steps`, then constant or a cosine decay to 0 at
  `total_steps` (the run's last step; raising num_epochs stretches it).
  """
  warmup = int(config.warmup_steps)
  if config.lr_schedule == "constant" and not warmup:
    return None
  decay_steps = max(total_steps - warmup, 1)
  if config.lr_schedule == "cosine":
    after = optax.cosine_decay_schedule(1.0, decay_steps)
  elif config.lr_schedule == "burda":
    after = burda_schedule(decay_steps)
  else:
    after = optax.constant_schedule(1.0)
  if not warmup:
    return after
  return optax.join_schedules([optax.linear_schedule(0.0, 1.0, warmup), after], [warmup])


def burda_schedule(total_steps: int, stages: int = 8) -> optax.Schedule:
  """The IWAE paper's multiplier (Burda et al. 2015, section 5): stage i = 0 .. 7 runs
  3^i epochs at 10^(-i/7), 3,280 epochs in all; here each stage takes its share
  3^i / 3280 of `total_steps`, so a run of 3,280 epochs gets the paper's stages."""
  lengths = [3**i for i in range(stages)]
  ends = [round(total_steps * sum(lengths[:i + 1]) / sum(lengths)) for i in range(stages - 1)]
  # A stage shorter than half a step ends where the next does: its factors multiply.
  return optax.piecewise_constant_schedule(
      1.0, {end: 10 ** (-ends.count(end) / (stages - 1)) for end in ends})


def make(config, learning_rate, total_steps: int, groups=()) -> optax.GradientTransformation:
  """The config's optimizer with base rate `learning_rate` (a float or a traced scalar).

  Args:
    config: an `OptimizerConfig` (or a config with its fields).
    learning_rate: the peak learning rate.
    total_steps: steps in the whole run, for the cosine schedule.
    groups: a family's `ParameterGroup`s (`vae_jax.families.base`): the top-level
      parameters each names get Adam with the group's settings (its learning
      rate, b1, b2, eps over the run's), the same schedule and clipping; the
      rest the run's optimizer. None or (): one optimizer for every parameter.
  """
  tx = _make(config, learning_rate, total_steps)
  if not groups:
    return tx
  transforms = {"": tx}  # "" labels the parameters of no group.
  for group in groups:
    adam = dict(group.adam)
    transforms[group.name] = _make(config, adam.pop("learning_rate", learning_rate),
                                   total_steps, adam)
  owner = {key: group.name for group in groups for key in group.keys}
  return optax.multi_transform(transforms, lambda params: {k: owner.get(k, "") for k in params})


def _make(config, learning_rate, total_steps: int, adam: dict | None = None):
  """One optimizer: adam or adamw (with `adam`'s b1, b2, eps over the config's), the
  schedule, clipping."""
  factor = schedule_factor(config, total_steps)
  rate = learning_rate if factor is None else (lambda count: learning_rate * factor(count))
  options = {"eps": config.adam_eps, **(adam or {})}
  if config.optimizer == "adamw":
    tx = optax.adamw(rate, weight_decay=config.weight_decay, **options)
  else:
    tx = optax.adam(rate, **options)
  if config.grad_clip_norm:
    tx = optax.chain(optax.clip_by_global_norm(config.grad_clip_norm), tx)
  return tx

