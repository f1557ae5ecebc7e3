"""What a training run builds once from its config and data: the `Experiment`.

    experiment = Experiment.build(resolve_config(config, dataset), dataset, module)

holds the module, the devices, the key streams (`KeyStreams`: every random draw
of a run, by stream, epoch and step), the per-model settings, the compiled
epoch (`epoch.Runner`) and the test set (`EvaluationData`), both on the devices
or both streamed from the host (`data_placement`).
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
from vae_jax import estimators
from vae_jax import evaluation
from vae_jax import model as model_lib
from vae_jax import optim
from vae_jax import parallel
from vae_jax import schema
from vae_jax import stacked
from vae_jax import streaming
from vae_jax import sweep
from vae_jax import train_step
from vae_jax.errors import UsageError

NUM_RECONSTRUCTIONS = 8  # Test images whose reconstructions each epoch's figure shows.


# ----------------------------------------------------------------------------
# Config


def check_config(config: ml_collections.ConfigDict) -> None:
  """Raises UsageError naming the first invalid value in `config` (before any data is read)."""
  schema.check(config)  # Each field's own values; then how they combine:
  data.check_config(config)
  model_lib.Architecture.from_config(config).check()  # Again with the data's image shape later.
  models = sweep.model_settings(config)
  optim.check(config)
  estimator = estimators.of_config(config.objective, config.gradient_estimator,
                                   config.train_samples)
  weighs = any(m["beta"] != 1 or m["kl_warmup_steps"] or m["free_bits"] for m in models)
  if estimator is not None and weighs:
    raise UsageError(f"beta, kl_warmup_steps and free_bits weigh the single-sample ELBO's KL; "
                     f"with objective={config.objective}, train_samples={config.train_samples} "
                     f"and gradient_estimator={config.gradient_estimator} they are not defined: "
                     "leave them at 1, 0 and 0")
  if any(m["free_bits"] for m in models) and (config.prior, config.posterior) != ("normal",
                                                                                   "gaussian"):
    raise UsageError("free_bits needs the KL per latent in closed form, which only "
                     "prior=normal with posterior=gaussian has; set free_bits=0 or use those")
  if config.get("conditional") and config.data_placement == "stream":
    raise UsageError("conditional=True reads the labels with the device-resident training "
                     "set only; use data_placement=device or auto")
  _check_layers_objective(config)
  for field in ("batch_size", "eval_batch_size"):
    if config[field] % jax.device_count():
      raise UsageError(f"{field}={config[field]} does not divide over "
                       f"{jax.device_count()} devices; use a multiple of {jax.device_count()}")


def _check_layers_objective(config: ml_collections.ConfigDict) -> None:
  if config.gradient_estimator in ("stl", "dreg") and config.get("stochastic_layers", 1) > 1:
    raise UsageError(f"gradient_estimator={config.gradient_estimator} is not built for "
                     f"stochastic_layers > 1 (the top-down path is shared by q and p); "
                     "use reparam")


def resolve_config(config: ml_collections.ConfigDict, dataset: data.Dataset,
                   module: model_lib.VAE | None = None) -> ml_collections.ConfigDict:
  """A copy of `config` completed from the data (its name, image_shape), the sweep
  (num_models) and a user-defined network, checked against them."""
  if config.batch_size > len(dataset.train.images):
    raise UsageError(f"batch_size={config.batch_size} is larger than the training set "
                     f"({len(dataset.train.images)} images)")
  if not len(dataset.test.images):
    raise UsageError(f"the test split of {dataset.name} has no images; every epoch is "
                     "evaluated on it")
  resolved = ml_collections.ConfigDict(config.to_dict())
  resolved.dataset = dataset.name  # Of the data read: an empty `dataset` is resolved by it.
  resolved.image_shape = tuple(dataset.image_shape)
  resolved.num_models = len(sweep.model_settings(config))
  resolved.model_mapping = train_step.resolved_mapping(config.model_mapping)  # For this backend.
  if module is not None:
    resolved.model = checkpoints.CUSTOM_MODEL
    resolved.update(model_lib.signature(module))
    resolved.latents = module.latents
    resolved.conditional = bool(getattr(module, "num_classes", 0))
    # A user-built hierarchy (vae_jax.hierarchy.HierarchicalVAE) records its layers.
    resolved.stochastic_layers = getattr(module, "stochastic_layers", 1)
    resolved.layer_latents = tuple(getattr(module, "layer_latents", ()))
    _check_layers_objective(resolved)
  if resolved.get("conditional"):
    classes = data.num_classes(dataset)
    wanted = getattr(module, "num_classes", 0) if module is not None else classes
    if classes > wanted:
      raise UsageError(f"the model is conditional on {wanted} classes; {dataset.name} has "
                       f"labels up to {classes - 1}")
    resolved.num_classes = wanted
  return resolved


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
  iwae_chunks: evaluation.Chunks | None  # In iwae_example_chunk chunks, when IWAE is logged.
  figure_inputs: jax.Array  # float32 (R, H, W, C) in [0, 1], replicated.
  figure_labels: jax.Array | None = None  # int32 (R,) of a conditional model, replicated.

  @classmethod
  def place(cls, test_split: data.Split, config, mesh,
            placement: str = "device") -> "EvaluationData":
    """Args: placement: "device" (the test set in device memory) or "stream" (read
    from the host a chunk at a time; the same numbers; not for conditional models)."""
    streamed = placement == "stream"
    conditional = bool(config.get("conditional"))
    test = evaluation.evaluation_inputs(test_split.images, config, on_host=streamed)
    test = test if streamed else np.asarray(test)  # Lazy records decoded once, not per use.
    if streamed:
      chunked = lambda size: streaming.StreamedChunks(test, size, mesh)
    else:
      examples = data.examples(data.Split(test, test_split.labels), conditional)
      chunked = lambda size: evaluation.Chunks.place(examples, size, mesh)
    chunks = chunked(config.eval_batch_size)
    iwae = None
    if config.eval_iwae_every:
      iwae = chunked(-(-config.iwae_example_chunk // mesh.size) * mesh.size)
    figures = parallel.put(np.asarray(test[:NUM_RECONSTRUCTIONS]), parallel.replicated(mesh))
    labels = (parallel.put(test_split.labels[:NUM_RECONSTRUCTIONS].astype(np.int32),
                           parallel.replicated(mesh)) if conditional else None)
    return cls(chunks, iwae, data.to_unit_interval(figures), labels)

  def close(self) -> None:
    """Stops streamed chunks' reader threads (nothing to do for resident ones)."""
    for chunks in (self.chunks, self.iwae_chunks):
      if hasattr(chunks, "close"):
        chunks.close()


@dataclasses.dataclass(frozen=True)
class Experiment:
  """Everything a run builds once from its config and data: the module, the devices,
  the keys, the per-model settings, the compiled epoch and the evaluation data.

  `experiments/bench_train.py` builds the same object to time the epoch.
  """

  config: ml_collections.ConfigDict  # Resolved.
  module: model_lib.VAE
  mesh: jax.sharding.Mesh
  keys: KeyStreams
  model_settings: list[dict]  # Per model: every sweepable field.
  settings: train_step.Settings  # The traced ones, (N,) each, on the devices.
  step_config: train_step.StepConfig
  runner: epoch_lib.Runner
  evaluation: EvaluationData | None

  @classmethod
  def build(cls, config, dataset: data.Dataset, module: model_lib.VAE,
            with_evaluation: bool = True, placement: str = "device") -> "Experiment":
    """Args: placement: "device" (the training set in device memory, `epoch.Runner`)
    or "stream" (read from the host batch by batch, `streaming.StreamedRunner`)."""
    mesh = parallel.make_mesh()
    model_settings = sweep.model_settings(config)
    settings = jax.device_put(train_step.Settings.of(model_settings), parallel.replicated(mesh))
    steps_per_epoch = len(dataset.train.images) // config.batch_size
    step_config = train_step.StepConfig.from_config(
        config, settings, config.num_epochs * steps_per_epoch)  # The cosine schedule's length.
    keys = KeyStreams.of(config)
    train_examples = data.examples(dataset.train, bool(config.get("conditional")))
    options = dict(batch_size=config.batch_size, chunks_per_epoch=config.chunks_per_epoch,
                   mesh=mesh, independent_orders=keys.independent_orders)
    if placement == "stream":
      runner = streaming.StreamedRunner(module, step_config, dataset.train.images,
                                        len(dataset.train.images), **options)
    else:
      runner = epoch_lib.Runner(
          module, step_config, epoch_lib.place_training_set(train_examples, mesh),
          len(dataset.train.images), **options)
    evaluation_data = (EvaluationData.place(dataset.test, config, mesh, placement)
                       if with_evaluation else None)
    return cls(config, module, mesh, keys, model_settings, settings, step_config, runner,
               evaluation_data)

  def close(self) -> None:
    """Stops a streamed epoch's and evaluation's reader threads (nothing to do for resident
    ones)."""
    if hasattr(self.runner, "close"):
      self.runner.close()
    if self.evaluation is not None:
      self.evaluation.close()

  @property
  def num_models(self) -> int:
    return len(self.model_settings)

  @property
  def steps_per_epoch(self) -> int:
    return self.runner.steps_per_epoch

  def create_state(self) -> train_step.TrainState:
    """Fresh parameters and optimizer states of every model, replicated."""
    return jax.device_put(self._create(), parallel.replicated(self.mesh))

  def abstract_state(self) -> train_step.TrainState:
    # Shapes only: running the initialisers op by op costs seconds of small compilations.
    return checkpoints.abstract_like(jax.eval_shape(self._create),
                                     parallel.replicated(self.mesh))

  def _create(self):
    return train_step.create(self.module, self.step_config, self.keys.stream(KeyStreams.INIT),
                             self.settings)


@functools.partial(jax.jit, static_argnames=("model", "num_samples", "grid_columns"))
def figure_images(model, params, x, keys, labels=None, *, num_samples: int,
                  grid_columns: int = 0):
  """Posterior-mean reconstructions of `x` (R, H, W, C) and prior samples, per model.

  For a conditional model (`labels`: x's (R,)) the reconstructions use x's
  labels, sample i is of class i mod K, and a class grid follows.

  Returns:
    (reconstructions (N, R, H, W, C), samples (N, num_samples, H, W, C)),
    E[x|z] in [0, 1]; model i draws its samples from `keys[i]`. With labels
    also the class grid (N, K, grid_columns, H, W, C): row k decodes the first
    `grid_columns` samples' codes with label k (one code per column).
  """
  def one(params, key):
    def run(module):
      mean, _ = module.encode(x, **model_lib.given(labels))
      z = module.sample_prior(key, num_samples)
      if labels is None:
        return module.mean_image(module.decode(mean)), module.mean_image(module.decode(z))
      classes = jnp.arange(module.num_classes)
      grid_codes = jnp.broadcast_to(z[:grid_columns], (len(classes), grid_columns, z.shape[-1]))
      grid_labels = jnp.broadcast_to(classes[:, None], grid_codes.shape[:2])
      return (module.mean_image(module.decode(mean, y=labels)),
              module.mean_image(module.decode(z, y=jnp.arange(num_samples) % len(classes))),
              module.mean_image(module.decode(grid_codes, y=grid_labels)))
    return model.apply({"params": params}, method=run)

  return stacked.over_models(one, len(keys), (0, 0))(params, keys)
