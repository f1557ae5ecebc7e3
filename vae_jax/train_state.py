"""The train state of N stacked models and the step that updates them all at once.

Every leaf of the state has a leading model axis of size N (1 for one
model). The step is written for one model (`step_one`); `vae_jax.epoch` maps
a chunk of steps over the model axis (`stacked.over_models`), so N models
train in one compiled program on the same batches, and one model gives the
single-model results bit for bit.

The step knows no loss: it asks the family (`Step.family`, see
`vae_jax.families.base`) for the scalar to minimise, its metrics and its new
non-gradient state, differentiates, and applies the optimizer. It sums every
metric the family returns over the epoch (`TrainState.sums`).

Per-model settings (`hyper`: the sweepable fields the step reads,
`schema.TRACED`) are a dict of arrays of shape (N,), traced, so a sweep needs
no recompilation per value.
"""
import dataclasses

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from vae_jax import data
from vae_jax import optim
from vae_jax import schema
from vae_jax.families import base


@flax.struct.dataclass
class TrainState:
  """Where a run stands, per model (each field with a leading axis of N models).

  Everything the run reports derives from it (with the steps per epoch): the
  epoch is `step // steps_per_epoch`, the position inside it the remainder.
  Inside a per-model function (`step_one`) the same fields without the axis.

  Attributes:
    step: steps taken (int32).
    params, opt_state: the model's parameters and optimizer state.
    model_state: the family's non-gradient collections (e.g. an EMA codebook);
      `{}` for most families.
    alive: False once the model's loss turned non-finite; it is then frozen at
      its state from the start of that chunk of steps (`freeze_diverged`).
    diverged_at: the 1-based step whose metrics turned non-finite, 0 while alive.
    sums: the current epoch's sum of each metric the family's loss returns,
      float32, by name (finite batches only).
    seconds: training time of the current epoch so far, summed over resumes.
    grad_norm_level: the running level of the gradient's global norm (with
      `skip_threshold`; 0 before the first step).
    skipped: updates skipped in the current epoch (with `skip_threshold`).
  """

  step: jax.Array
  params: dict
  opt_state: optax.OptState
  model_state: dict
  alive: jax.Array
  diverged_at: jax.Array
  sums: dict
  seconds: jax.Array
  grad_norm_level: jax.Array
  skipped: jax.Array

  # The fields besides the arrays of the model: small, saved in a checkpoint's record.
  COUNTERS = ("step", "alive", "diverged_at", "seconds", "grad_norm_level", "skipped")

  @property
  def num_models(self) -> int:
    return self.alive.shape[0]

  @property
  def steps_done(self) -> int:
    """Steps taken (the same for every model); waits for the device."""
    return int(self.step[0])

  def counters(self) -> dict:
    """The `COUNTERS` and `sums` as JSON-ready lists, one value per model."""
    lists = {name: np.asarray(getattr(self, name)).tolist() for name in self.COUNTERS}
    return {**lists, "sums": {name: np.asarray(v).tolist() for name, v in self.sums.items()}}

  def new_epoch(self) -> "TrainState":
    """The state with the epoch's sums and seconds at zero: where an epoch starts."""
    # One buffer each, not one shared: the chunk donates each buffer of the state.
    return self.replace(sums={name: jnp.zeros_like(v) for name, v in self.sums.items()},
                        seconds=jnp.zeros_like(self.seconds),
                        skipped=jnp.zeros_like(self.skipped))


def fresh_counters(num_models: int, metrics: dict[str, tuple[int, ...]]) -> dict:
  """The `COUNTERS` and `sums` of N untrained models whose family returns `metrics` (their
  shapes, by name)."""
  zeros = lambda shape=(): jnp.zeros((num_models, *shape), jnp.float32)  # One buffer each.
  return {"step": jnp.zeros(num_models, jnp.int32), "alive": jnp.ones(num_models, bool),
          "diverged_at": jnp.zeros(num_models, jnp.int32),
          "sums": {name: zeros(shape) for name, shape in metrics.items()}, "seconds": zeros(),
          "grad_norm_level": zeros(), "skipped": jnp.zeros(num_models, jnp.int32)}


def hyper_arrays(models: list[dict], names: tuple[str, ...]) -> dict[str, jax.Array]:
  """The per-model settings the step traces: one (N,) array per field in `names`, from one
  dict per model (`sweep.model_settings`); int fields as int32, others float32."""
  dtype = lambda name: jnp.int32 if schema.FIELDS[name].kind is int else jnp.float32
  return {name: jnp.asarray([m[name] for m in models], dtype(name)) for name in names}


@dataclasses.dataclass(frozen=True)
class Step:
  """What the step needs, hashable so the step can be a static argument.

  Attributes:
    family: the model family (its loss, its parameter groups).
    optimizer: the config's optimizer fields (`optim.OptimizerConfig`).
    total_steps: steps of the whole run (for a cosine schedule).
    binarize: draw binary pixels from the grey levels each step.
    skip_threshold: skip updates whose gradient norm is non-finite or above this
      many times its running level (`skipped_update`); 0: never.
    sequential_models: run stacked models one after another (`lax.map`) instead
      of vmapped (`stacked.over_models`; the config's resolved `model_mapping`).
  """

  family: base.Family
  optimizer: optim.OptimizerConfig
  total_steps: int
  binarize: bool = False
  skip_threshold: float = 0.0
  sequential_models: bool = False

  def tx(self, learning_rate) -> optax.GradientTransformation:
    """The optimizer at `learning_rate`; per parameter group where the family has groups."""
    return optim.make(self.optimizer, learning_rate, self.total_steps,
                      self.family.parameter_groups())

  def inputs(self, batch, key: jax.Array) -> dict:
    """A batch of uint8 images (B, H, W, C) (or (images, labels), `data.examples`) as the
    family's loss takes it: `x` in [0, 1] (binarised with `key` if asked), `y` the labels."""
    images, labels = data.unpack(batch)
    x = data.to_unit_interval(images)
    if self.binarize:
      x = data.binarize(key, x)
    return {"x": x} if labels is None else {"x": x, "y": labels}

  def metric_shapes(self, variables: dict, hyper: dict) -> dict[str, tuple[int, ...]]:
    """The shapes of the metrics the family's loss returns for one model's `variables`,
    by name (traced, not run)."""
    family = self.family
    x = jnp.zeros((1, *family.image_shape), jnp.uint8)
    batch = (x, jnp.zeros((1,), jnp.int32)) if family.can(base.Capability.LABELS) else x
    one = {name: value[0] for name, value in hyper.items()}
    _, metrics, _ = jax.eval_shape(lambda v: family.loss(
        v, self.inputs(batch, jax.random.key(0)), jax.random.key(0), jnp.int32(0), one),
        variables)
    return {name: tuple(metrics[name].shape) for name in sorted(metrics)}


def create(step: Step, keys: jax.Array, hyper: dict, frozen: list | None = None) -> TrainState:
  """Fresh variables (model i initialised from `keys[i]`) and optimizer states, stacked.

  Args:
    frozen: for a later training stage, each model's trained variables of the stage before.
  """
  def init_one(i):
    variables = dict(step.family.init(keys[i], None if frozen is None else frozen[i]))
    params = variables.pop("params")
    return params, variables, step.tx(hyper["learning_rate"][i]).init(params)

  num_models = len(keys)
  # Not vmapped even for several models: each initialiser draws as it would alone.
  parts = [init_one(i) for i in range(num_models)]
  metrics = step.metric_shapes({"params": parts[0][0], **parts[0][1]}, hyper)
  params, model_state, opt_state = jax.tree.map(lambda *a: jnp.stack(a), *parts)
  return TrainState(params=params, opt_state=opt_state, model_state=model_state,
                    **fresh_counters(num_models, metrics))


def step_one(step: Step, state: TrainState, batch, key: jax.Array,
             hyper: dict) -> tuple[TrainState, dict]:
  """One step of one model (`state` and `hyper` without the model axis).

  Args:
    step: see `Step` (static).
    state: the model's state.
    batch: uint8 images (B, H, W, C), or (images, int32 labels (B,)) for a
      conditional model (`data.examples`).
    key: the step's key.
    hyper: the model's sweepable settings (scalars), by name.

  Returns:
    The new state and the metrics the family's loss returned (scalars). Models
    whose metrics turn non-finite are frozen by `freeze_diverged`, per chunk.
  """
  loss_key, binarize_key = jax.random.split(key)
  inputs = step.inputs(batch, binarize_key)

  def loss_fn(params):
    loss, metrics, model_state = step.family.loss(
        {"params": params, **state.model_state}, inputs, loss_key, state.step, hyper)
    return loss, (metrics, model_state)

  (_, (metrics, model_state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  updates, opt_state = step.tx(hyper["learning_rate"]).update(grads, state.opt_state,
                                                               state.params)
  params = optax.apply_updates(state.params, updates)
  new = state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                      model_state=dict(model_state))
  if step.skip_threshold:
    new = skipped_update(state, new, optax.tree.norm(grads), step.skip_threshold)
  return new, metrics


SKIP_FROM = 20  # Steps of running level before an update may be skipped for its size.
LEVEL_DECAY = 0.99  # The running level averages about the last 1 / (1 - decay) steps.


def skipped_update(before: TrainState, after: TrainState, norm: jax.Array,
                   threshold: float) -> TrainState:
  """`after`, unless the gradient's global norm `norm` is non-finite or above
  `threshold` times its running level: then `before`'s variables and optimizer
  state, with the step taken and `skipped` counted (Child 2021's VDVAE skips so)."""
  level = before.grad_norm_level
  too_large = (before.step >= SKIP_FROM) & (norm > threshold * level)
  skip = ~jnp.isfinite(norm) | too_large
  updated = jnp.where(level == 0, norm, LEVEL_DECAY * level + (1 - LEVEL_DECAY) * norm)
  keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(skip, o, n), new, old)
  return after.replace(params=keep(after.params, before.params),
                       opt_state=keep(after.opt_state, before.opt_state),
                       model_state=keep(after.model_state, before.model_state),
                       grad_norm_level=jnp.where(skip, level, updated),
                       skipped=before.skipped + skip.astype(jnp.int32))


def _all_finite(*trees) -> jax.Array:
  leaves = jax.tree.leaves(trees)
  if not leaves:
    return jnp.bool_(True)
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(a)) for a in leaves]))


def freeze_diverged(before: TrainState, after: TrainState, metrics: dict) -> TrainState:
  """One model's state after a chunk of steps, unless it diverged: then the state before.

  A model stays alive while every metric of the chunk and its new variables are
  finite. Checked once per chunk rather than per step, this costs one pass over
  the parameters per chunk, and the step itself stays the plain update.

  Args:
    before, after: the model's state at the start and the end of the chunk.
    metrics: the chunk's metrics, each (steps,).

  Returns:
    `after` with the chunk's finite metrics added to the sums, or for a model
    that is (or became) not alive `before`'s variables and optimizer state,
    with `after`'s step, `alive` False and `diverged_at` the step of its first
    non-finite metric.
  """
  ok = before.alive & _all_finite(metrics) & _all_finite(after.params, after.model_state)
  keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(ok, n, o), new, old)
  good = jnp.all(jnp.stack([jnp.all(jnp.isfinite(m).reshape(len(m), -1), axis=1)
                            for m in jax.tree.leaves(metrics)]), axis=0)  # (steps,)
  first_bad = before.step + jnp.argmin(good).astype(jnp.int32) + 1
  dies = before.alive & ~ok
  total = lambda a: jnp.sum(jnp.where(jnp.isfinite(a), a, 0.0), axis=0)  # Over the steps.
  return after.replace(
      params=keep(after.params, before.params), opt_state=keep(after.opt_state, before.opt_state),
      model_state=keep(after.model_state, before.model_state),
      alive=ok, diverged_at=jnp.where(dies, first_bad, before.diverged_at),
      sums={name: before.sums[name] + total(metrics[name]) for name in before.sums})


def resolved_mapping(model_mapping: str) -> str:
  """`auto`: sequential on CPUs, where vmap's batched products cost more than the
  models one after another; vmap on GPUs and TPUs, where they cost far less."""
  if model_mapping != "auto":
    return model_mapping
  return "sequential" if jax.default_backend() == "cpu" else "vmap"
