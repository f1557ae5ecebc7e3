"""The train state of N stacked models and the step that updates them all at once.

Every leaf of the state has a leading model axis of size N (1 for one
model). The step is written for one model (`step_one`); `vae_jax.epoch` maps
a chunk of steps over the model axis (`stacked.over_models`), so N models
train in one compiled program on the same batches, and one model gives the
single-model results bit for bit.

Per-model settings (`Settings`: the schema's sweepable fields that the step
reads, `schema.TRACED`) are arrays of shape (N,), traced, so a sweep needs no
recompilation per value.
"""
import collections
import dataclasses

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from vae_jax import data
from vae_jax import estimators
from vae_jax import model as model_lib
from vae_jax import objectives
from vae_jax import optim
from vae_jax import schema


@flax.struct.dataclass
class TrainState:
  """Where a run stands, per model (each field with a leading axis of N models).

  Everything the run reports derives from it (with the steps per epoch): the
  epoch is `step // steps_per_epoch`, the position inside it the remainder.
  Inside a per-model function (`step_one`) the same fields without the axis.

  Attributes:
    step: steps taken (int32).
    params, opt_state: the model's parameters and optimizer state.
    alive: False once the model's loss turned non-finite; it is then frozen at
      its state from the start of that chunk of steps (`freeze_diverged`).
    diverged_at: the 1-based step whose loss turned non-finite, 0 while alive.
    loss_sum, objective_sum: sums of the current epoch's finite batch losses
      (the mean negative ELBO) and objectives (what was minimised), float32.
    seconds: training time of the current epoch so far, summed over resumes.
    grad_norm_level: the running level of the gradient's global norm (with
      `skip_threshold`; 0 before the first step).
    skipped: updates skipped in the current epoch (with `skip_threshold`).
  """

  step: jax.Array
  params: dict
  opt_state: optax.OptState
  alive: jax.Array
  diverged_at: jax.Array
  loss_sum: jax.Array
  objective_sum: jax.Array
  seconds: jax.Array
  grad_norm_level: jax.Array
  skipped: jax.Array

  # The fields besides params and opt_state: small, saved in a checkpoint's record.
  COUNTERS = ("step", "alive", "diverged_at", "loss_sum", "objective_sum", "seconds",
              "grad_norm_level", "skipped")

  @property
  def num_models(self) -> int:
    return self.alive.shape[0]

  @property
  def steps_done(self) -> int:
    """Steps taken (the same for every model); waits for the device."""
    return int(self.step[0])

  def counters(self) -> dict[str, list]:
    """The `COUNTERS` as JSON-ready lists, one value per model."""
    return {name: np.asarray(getattr(self, name)).tolist() for name in self.COUNTERS}

  def new_epoch(self) -> "TrainState":
    """The state with the epoch's sums and seconds at zero: where an epoch starts."""
    # Three arrays, not one: the chunk donates each buffer of the state.
    return self.replace(loss_sum=jnp.zeros_like(self.loss_sum),
                        objective_sum=jnp.zeros_like(self.objective_sum),
                        seconds=jnp.zeros_like(self.seconds),
                        skipped=jnp.zeros_like(self.skipped))


def fresh_counters(num_models: int) -> dict[str, jax.Array]:
  """The `COUNTERS` of N untrained models."""
  zeros = lambda: jnp.zeros(num_models, jnp.float32)  # One buffer each: they are donated.
  return {"step": jnp.zeros(num_models, jnp.int32), "alive": jnp.ones(num_models, bool),
          "diverged_at": jnp.zeros(num_models, jnp.int32), "loss_sum": zeros(),
          "objective_sum": zeros(), "seconds": zeros(), "grad_norm_level": zeros(),
          "skipped": jnp.zeros(num_models, jnp.int32)}


class Settings(collections.namedtuple("Settings", schema.TRACED)):
  """Per-model training settings: one (N,) array per field of `schema.TRACED` (a pytree)."""

  __slots__ = ()

  @classmethod
  def of(cls, models: list[dict]) -> "Settings":
    """From one dict per model (`sweep.model_settings`): int fields as int32, others float32."""
    dtype = lambda name: jnp.int32 if schema.FIELDS[name].kind is int else jnp.float32
    return cls(*(jnp.asarray([m[name] for m in models], dtype(name)) for name in cls._fields))


@dataclasses.dataclass(frozen=True)
class StepConfig:
  """What the step needs from the config, hashable so the step can be a static argument.

  Attributes:
    optimizer: the config's optimizer fields (`optim.OptimizerConfig`).
    total_steps: steps of the whole run (for a cosine schedule).
    binarize: draw binary pixels from the grey levels each step.
    weighted: train on `objectives.weighted_objective` (some model has beta != 1,
      a KL warm-up or free bits) instead of the plain mean negative ELBO.
    estimator: a many-sample objective of `vae_jax.estimators` (elbo, iwae, stl,
      dreg) with `train_samples` samples per example; None: the single-sample
      ELBO with its analytic KL (the seed's).
    skip_threshold: skip updates whose gradient norm is non-finite or above this
      many times its running level (`skipped_update`); 0: never.
    sequential_models: run stacked models one after another (`lax.map`) instead
      of vmapped (`stacked.over_models`; the config's resolved `model_mapping`).
  """

  optimizer: optim.OptimizerConfig
  total_steps: int
  binarize: bool
  weighted: bool
  estimator: str | None = None
  train_samples: int = 1
  skip_threshold: float = 0.0
  sequential_models: bool = False

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict, settings: "Settings",
                  total_steps: int) -> "StepConfig":
    weighted = bool(np.any(np.asarray(settings.beta) != 1)
                    or np.any(np.asarray(settings.kl_warmup_steps) > 0)
                    or np.any(np.asarray(settings.free_bits) > 0))
    estimator = estimators.of_config(config.objective, config.gradient_estimator,
                                     config.train_samples)
    return cls(optim.optimizer_config(config), total_steps, config.binarize == "dynamic",
               weighted, estimator, config.train_samples, config.skip_threshold,
               resolved_mapping(config.model_mapping) == "sequential")

  def tx(self, learning_rate) -> optax.GradientTransformation:
    return optim.make(self.optimizer, learning_rate, self.total_steps)


def resolved_mapping(model_mapping: str) -> str:
  """`auto`: sequential on CPUs, where vmap's batched products cost more than the
  models one after another; vmap on GPUs and TPUs, where they cost far less."""
  if model_mapping != "auto":
    return model_mapping
  return "sequential" if jax.default_backend() == "cpu" else "vmap"


def create(model: model_lib.VAE, step_config: StepConfig, keys: jax.Array,
           settings: Settings) -> TrainState:
  """Fresh parameters (model i initialised from `keys[i]`) and optimizer states, stacked."""
  def init_one(key, learning_rate):
    params = model_lib.init_params(model, key)
    return params, step_config.tx(learning_rate).init(params)

  num_models = len(keys)
  # Not vmapped even for several models: each initialiser draws as it would alone.
  parts = [init_one(keys[i], settings.learning_rate[i]) for i in range(num_models)]
  params, opt_state = jax.tree.map(lambda *a: jnp.stack(a), *parts)
  return TrainState(params=params, opt_state=opt_state, **fresh_counters(num_models))


def step_one(model, step_config: StepConfig, state: TrainState, batch: jax.Array,
             key: jax.Array, settings: Settings) -> tuple[TrainState, dict]:
  """One step of one model (`state` and `settings` without the model axis).

  Args:
    model: the VAE (static).
    step_config: see `StepConfig` (static).
    state: the model's state.
    batch: uint8 images (B, H, W, C), or (images, int32 labels (B,)) for a
      conditional model (`data.examples`).
    key: the step's key.
    settings: the model's settings (scalars).

  Returns:
    The new state and the metrics `loss` (the batch's mean negative ELBO) and
    `objective` (what was minimised; equal to `loss` unless weighted). Models
    whose loss turns non-finite are frozen by `freeze_diverged`, per chunk.
  """
  z_key, binarize_key = jax.random.split(key)
  batch, labels = data.unpack(batch)
  x = data.to_unit_interval(batch)
  if step_config.binarize:
    x = data.binarize(binarize_key, x)

  def loss_fn(params):
    terms = objectives.negative_elbo(model, params, x, z_key, labels)
    loss = jnp.mean(terms["loss"])
    if not step_config.weighted:
      return loss, loss
    weight = objectives.kl_weight(state.step, settings.beta, settings.kl_warmup_steps)
    return objectives.weighted_objective(terms, weight, settings.free_bits), loss

  if step_config.estimator is None:
    (objective, loss), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  else:
    objective, grads = _estimated(model, step_config, state.params, x, z_key, labels)
    loss = objective
  tx = step_config.tx(settings.learning_rate)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  new = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
  if step_config.skip_threshold:
    new = skipped_update(state, new, optax.tree.norm(grads), step_config.skip_threshold)
  return new, {"loss": loss, "objective": objective}


SKIP_FROM = 20  # Steps of running level before an update may be skipped for its size.
LEVEL_DECAY = 0.99  # The running level averages about the last 1 / (1 - decay) steps.


def skipped_update(before: TrainState, after: TrainState, norm: jax.Array,
                   threshold: float) -> TrainState:
  """`after`, unless the gradient's global norm `norm` is non-finite or above
  `threshold` times its running level: then `before`'s parameters and optimizer
  state, with the step taken and `skipped` counted (Child 2021's VDVAE skips so)."""
  level = before.grad_norm_level
  too_large = (before.step >= SKIP_FROM) & (norm > threshold * level)
  skip = ~jnp.isfinite(norm) | too_large
  updated = jnp.where(level == 0, norm, LEVEL_DECAY * level + (1 - LEVEL_DECAY) * norm)
  keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(skip, o, n), new, old)
  return after.replace(params=keep(after.params, before.params),
                       opt_state=keep(after.opt_state, before.opt_state),
                       grad_norm_level=jnp.where(skip, level, updated),
                       skipped=before.skipped + skip.astype(jnp.int32))


def _estimated(model, step_config: StepConfig, params, x, key, labels=None):
  """The batch's mean surrogate loss of a many-sample estimator and its gradient."""
  terms = estimators.vae_terms(model, x, key, step_config.train_samples, labels)
  q, p = estimators.split_params(params, getattr(model.prior, "uses_encoder", False))
  surrogate = lambda q, p: jnp.mean(estimators.surrogate(step_config.estimator, terms, q, p))
  value, (q_grads, p_grads) = jax.value_and_grad(surrogate, argnums=(0, 1))(q, p)
  return value, estimators.merge_grads(q_grads, p_grads)


def freeze_diverged(before: TrainState, after: TrainState, metrics: dict) -> TrainState:
  """One model's state after a chunk of steps, unless it diverged: then the state before.

  A model stays alive while every loss of the chunk and its new parameters are
  finite. Checked once per chunk rather than per step, this costs one pass
  over the parameters per chunk, and the step itself stays the plain update.

  Args:
    before, after: the model's state at the start and the end of the chunk.
    metrics: the chunk's metrics, each (steps,).

  Returns:
    `after` with the chunk's finite losses and objectives added to the sums, or
    for a model that is (or became) not alive `before`'s parameters and
    optimizer state, with `after`'s step, `alive` False and `diverged_at` the
    step of its first non-finite loss.
  """
  finite = lambda tree: jnp.all(jnp.stack([jnp.all(jnp.isfinite(a)) for a in jax.tree.leaves(tree)]))
  ok = before.alive & finite(metrics) & finite(after.params)
  keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(ok, n, o), new, old)
  good = jnp.isfinite(metrics["loss"]) & jnp.isfinite(metrics["objective"])
  first_bad = before.step + jnp.argmin(good).astype(jnp.int32) + 1
  dies = before.alive & ~ok
  total = lambda a: jnp.sum(jnp.where(jnp.isfinite(a), a, 0.0))
  return after.replace(
      params=keep(after.params, before.params), opt_state=keep(after.opt_state, before.opt_state),
      alive=ok, diverged_at=jnp.where(dies, first_bad, before.diverged_at),
      loss_sum=before.loss_sum + total(metrics["loss"]),
      objective_sum=before.objective_sum + total(metrics["objective"]))
