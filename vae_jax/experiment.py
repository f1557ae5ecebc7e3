"""What a training run builds once from its config and data: the `Experiment`.

    config, family = resolve(config, dataset, module)
    experiment = Experiment.build(config, family, dataset)

holds the family, the devices, the key streams (`KeyStreams`: every random draw
of a run, by stream, epoch and step), the per-model settings, the compiled
epoch (`epoch.Runner`) and the test set (`EvaluationData`), both on the devices
or both streamed from the host (`data_placement`). The config stops here: the
parts below take their own settings (the family, the step, the runner's sizes).
`vae_jax.train` loops over it; `experiments/bench_train.py` times its epoch.
"""
import dataclasses
import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from vae_jax import checkpoints
from vae_jax import data
from vae_jax import epoch as epoch_lib
from vae_jax import evaluation
from vae_jax import fields
from vae_jax import optim
from vae_jax import parallel
from vae_jax import schema
from vae_jax import stacked
from vae_jax import streaming
from vae_jax import sweep
from vae_jax import train_state
from vae_jax.errors import UsageError
from vae_jax.families import base
from vae_jax.errors import counted

NUM_RECONSTRUCTIONS = 8  # Test images whose reconstructions each epoch's figure shows.


# ----------------------------------------------------------------------------
# Config


def check_config(config: ml_collections.ConfigDict) -> None:
  """Raises UsageError naming the first invalid value in `config` (before any data is read)."""
  schema.check(config)  # Each field's own values; then how they combine:
  data.check_config(data.settings(config))
  models = sweep.model_settings(config)
  optim.check(config)
  family = schema.family_class(config)
  family.check(fields.settings_of(family.settings_type, config, image_shape=None), models)
  if config.get("conditional") and config.data_placement == "stream":
    raise UsageError("conditional=True reads the labels with the device-resident training "
                     "set only; use data_placement=device or auto")
  for field in ("batch_size", "eval_batch_size"):
    if config[field] % jax.device_count():
      raise UsageError(f"{field}={config[field]} does not divide over "
                       f"{jax.device_count()} devices; use a multiple of {jax.device_count()}")


def resolve(config: ml_collections.ConfigDict, dataset: data.Dataset,
            module=None) -> tuple[ml_collections.ConfigDict, base.Family]:
  """A copy of `config` completed from the data (its name, image_shape, train_size,
  num_classes), the sweep (num_models) and a user-defined module, and the family it selects,
  built.

  Returns:
    (the resolved config, which config.json records; the family).
  """
  if config.batch_size > len(dataset.train.images):
    raise UsageError(f"batch_size={config.batch_size} is larger than the training set "
                     f"({counted(len(dataset.train.images), 'image')})")
  if not len(dataset.test.images):
    raise UsageError(f"the test split of {dataset.name} has no images; every epoch is "
                     "evaluated on it")
  resolved = ml_collections.ConfigDict(config.to_dict())
  resolved.dataset = dataset.name  # Of the data read: an empty `dataset` is resolved by it.
  resolved.image_shape = tuple(dataset.image_shape)
  resolved.train_size = len(dataset.train.images)
  models = sweep.model_settings(config)
  resolved.num_models = len(models)
  resolved.model_mapping = train_state.resolved_mapping(config.model_mapping)  # This backend's.
  if module is not None:
    resolved.model = checkpoints.CUSTOM_MODEL
  elif resolved.get("conditional"):
    resolved.num_classes = data.num_classes(dataset)
  family = schema.build_family(resolved, models, module)
  if module is not None:
    resolved.update(family.signature())
    if family.num_classes:
      classes = data.num_classes(dataset)
      if classes > family.num_classes:
        raise UsageError(f"the model is conditional on {family.num_classes} classes; "
                         f"{dataset.name} has labels up to {classes - 1}")
      resolved.num_classes = family.num_classes
  return resolved, family


# ----------------------------------------------------------------------------
# What a run builds once.


@dataclasses.dataclass(frozen=True)
class KeyStreams:
  """The run's independent key streams under each model's seed: `fold_in(root, stream)`.

  Attributes:
    roots: (N,) root keys, one per model's seed.
    independent_orders: each model shuffles the data with its own key.
  """

  roots: jax.Array
  independent_orders: bool = False
  INIT, TRAIN, EVALUATION, FIGURES, IWAE = 0, 1, 2, 3, 5  # 4 was never used.

  @classmethod
  def of(cls, config: ml_collections.ConfigDict) -> "KeyStreams":
    settings = sweep.model_settings(config)
    roots = jnp.stack([jax.random.key(s["seed"]) for s in settings])
    return cls(roots, bool(config.independent_data_order) and len(settings) > 1)

  def stream(self, stream: int, *more: int) -> jax.Array:
    """(N,) keys `fold_in(fold_in(root_i, stream), more...)`."""
    keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(self.roots, stream)
    for m in more:
      keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(keys, m)
    return keys

  def epoch(self, epoch: int) -> tuple[jax.Array, jax.Array]:
    """(shuffle keys, step keys) of an epoch: per model (N,), or one shared shuffle key (1,)."""
    shuffle, steps = jax.vmap(jax.random.split, out_axes=1)(self.stream(self.TRAIN, epoch))
    return (shuffle if self.independent_orders else shuffle[:1]), steps

  def evaluation(self, epoch: int) -> jax.Array:
    return self.stream(self.EVALUATION, epoch)

  def iwae(self) -> jax.Array:
    """The same keys every epoch, so that epochs' IWAE bounds compare."""
    return self.stream(self.IWAE)


@dataclasses.dataclass(frozen=True)
class EvaluationData:
  """The test set as evaluation and the figures take it: on the devices, or streamed."""

  # In eval_batch_size chunks: evaluation.Chunks, or streaming.StreamedChunks.
  chunks: evaluation.Chunks
  bound_chunks: evaluation.Chunks | None  # In iwae_example_chunk chunks, when the bound is logged.
  figure_inputs: jax.Array  # float32 (R, H, W, C) in [0, 1], replicated.
  figure_labels: jax.Array | None = None  # int32 (R,) of a conditional model, replicated.

  @classmethod
  def place(cls, test_split: data.Split, *, binarize: str, seed: int, batch_size: int,
            bound_chunk: int | None, labels: bool, mesh,
            placement: str = "device") -> "EvaluationData":
    """
    Args:
      test_split: the test images (and labels).
      binarize, seed: as `evaluation.evaluation_inputs` takes them.
      batch_size: examples per chunk of the per-epoch test metrics.
      bound_chunk: examples per chunk of the per-epoch bound; None: no bound.
      labels: the family takes labels (a conditional model).
      mesh: the devices.
      placement: "device" (the test set in device memory) or "stream" (read
        from the host a chunk at a time; the same numbers; not with labels).
    """
    streamed = placement == "stream"
    test = evaluation.evaluation_inputs(test_split.images, binarize=binarize, seed=seed,
                                        on_host=streamed)
    test = test if streamed else np.asarray(test)  # Lazy records decoded once, not per use.
    if streamed:
      chunked = lambda size: streaming.StreamedChunks(test, size, mesh)
    else:
      examples = data.examples(data.Split(test, test_split.labels), labels)
      chunked = lambda size: evaluation.Chunks.place(examples, size, mesh)
    chunks = chunked(batch_size)
    bound = None if bound_chunk is None else chunked(-(-bound_chunk // mesh.size) * mesh.size)
    figures = parallel.put(np.asarray(test[:NUM_RECONSTRUCTIONS]), parallel.replicated(mesh))
    figure_labels = (parallel.put(test_split.labels[:NUM_RECONSTRUCTIONS].astype(np.int32),
                                  parallel.replicated(mesh)) if labels else None)
    return cls(chunks, bound, data.to_unit_interval(figures), figure_labels)

  def close(self) -> None:
    """Stops streamed chunks' reader threads (nothing to do for resident ones)."""
    for chunks in (self.chunks, self.bound_chunks):
      if hasattr(chunks, "close"):
        chunks.close()


@dataclasses.dataclass(frozen=True)
class Experiment:
  """Everything a run builds once from its config and data: the family, the devices,
  the keys, the per-model settings, the compiled epoch and the evaluation data.

  `experiments/bench_train.py` builds the same object to time the epoch.
  """

  config: ml_collections.ConfigDict  # Resolved.
  family: base.Family
  mesh: jax.sharding.Mesh
  keys: KeyStreams
  model_settings: list[dict]  # Per model: every sweepable field.
  hyper: dict  # The traced ones, (N,) each, on the devices.
  step: train_state.Step
  runner: epoch_lib.Runner | epoch_lib.StreamedRunner
  evaluation: EvaluationData | None
  frozen: list | None = None  # A later stage's: each model's variables of the stage before.

  @classmethod
  def build(cls, config, family: base.Family, dataset: data.Dataset,
            with_evaluation: bool = True, placement: str = "device",
            frozen: list | None = None) -> "Experiment":
    """Args:
      config: the resolved config (`resolve`).
      family: its family.
      dataset: the data.
      with_evaluation: place the test set too.
      placement: "device" (the training set in device memory, `epoch.Runner`)
        or "stream" (read from the host batch by batch, `epoch.StreamedRunner`).
      frozen: for a later training stage, each model's trained variables of the
        stage before.
    """
    mesh = parallel.make_mesh()
    model_settings = sweep.model_settings(config)
    hyper = jax.device_put(hyper_of(config, family), parallel.replicated(mesh))
    step = step_of(config, family, len(dataset.train.images) // config.batch_size)
    keys = KeyStreams.of(config)
    labels = family.can(base.Capability.LABELS)
    options = dict(batch_size=config.batch_size, chunks_per_epoch=config.chunks_per_epoch,
                   mesh=mesh, independent_orders=keys.independent_orders)
    if placement == "stream":
      runner = epoch_lib.StreamedRunner(step, dataset.train.images, len(dataset.train.images),
                                        **options)
    else:
      runner = epoch_lib.Runner(
          step, epoch_lib.place_training_set(data.examples(dataset.train, labels), mesh),
          len(dataset.train.images), **options)
    evaluation_data = None
    if with_evaluation:
      bound = (config.iwae_example_chunk if config.eval_iwae_every
               and family.can(base.Capability.BOUND) else None)
      evaluation_data = EvaluationData.place(
          dataset.test, binarize=config.binarize, seed=config.seed,
          batch_size=config.eval_batch_size, bound_chunk=bound, labels=labels, mesh=mesh,
          placement=placement)
    return cls(config, family, mesh, keys, model_settings, hyper, step, runner,
               evaluation_data, frozen)

  def close(self) -> None:
    """Stops a streamed epoch's and evaluation's reader threads (nothing to do for resident
    ones)."""
    if isinstance(self.runner, epoch_lib.StreamedRunner):
      self.runner.close()
    if self.evaluation is not None:
      self.evaluation.close()

  @property
  def num_models(self) -> int:
    return len(self.model_settings)

  @property
  def steps_per_epoch(self) -> int:
    return self.runner.steps_per_epoch

  def create_state(self) -> train_state.TrainState:
    """Fresh variables and optimizer states of every model, replicated."""
    return jax.device_put(self._create(), parallel.replicated(self.mesh))

  def abstract_state(self) -> train_state.TrainState:
    # Shapes only: running the initialisers op by op costs seconds of small compilations.
    return checkpoints.abstract_like(jax.eval_shape(self._create),
                                     parallel.replicated(self.mesh))

  def _create(self):
    return train_state.create(self.step, self.keys.stream(KeyStreams.INIT), self.hyper,
                              self.frozen)


def step_of(config, family: base.Family, steps_per_epoch: int) -> train_state.Step:
  """The step a resolved config trains `family` with, for epochs of `steps_per_epoch`."""
  return train_state.Step(
      family, optim.optimizer_config(config),
      total_steps=config.num_epochs * steps_per_epoch,  # The cosine schedule's length.
      binarize=config.binarize == "dynamic", skip_threshold=config.skip_threshold,
      sequential_models=train_state.resolved_mapping(config.model_mapping) == "sequential")


def hyper_of(config, family: base.Family) -> dict:
  """The per-model settings the step traces: (N,) arrays of the sweepable fields the core
  and `family` read (`train_state.hyper_arrays`)."""
  traced = {f.name for f in schema.fields_of(family.name, config.get("stage", ""))}
  names = tuple(name for name in schema.TRACED if name in traced)
  return train_state.hyper_arrays(sweep.model_settings(config), names)


@functools.partial(jax.jit, static_argnames=("family",))
def figure_images(family, variables, x, keys, labels=None) -> dict:
  """The family's figures of an epoch (`Family.figures`) for every model: name -> grids
  (N, rows, cols, H, W, C) in [0, 1]; model i draws from `keys[i]`.

  Args:
    variables: the stacked variables.
    x: test images (R, H, W, C) in [0, 1] to reconstruct (labels: their (R,)).
  """
  def one(variables, key):
    return family.figures(variables, x, labels, key)
  return stacked.over_models(one, len(keys), (0, 0))(variables, keys)
