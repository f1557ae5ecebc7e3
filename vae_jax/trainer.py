"""The training driver: `train_and_evaluate(config, workdir)`, what `python -m vae_jax.train` runs.

One run trains `num_models` stacked models (one by default) on a
device-resident training set (`vae_jax.epoch`), evaluates them every epoch
(`vae_jax.evaluation`), writes metrics and figures (`vae_jax.reporting`) and
checkpoints (`vae_jax.checkpoints`), holding the workdir's lock (`vae_jax.lock`).
Every random draw derives from the seed by `fold_in`, keyed by (stream,
epoch, step), so a resumed run draws the keys an uninterrupted one would: it
ends with the same parameters, bit for bit, on the same machine.

Ctrl-C or SIGTERM is honoured between chunks of training and of evaluation:
the run saves a checkpoint and returns with `interrupted_by` set. In a run of
several processes all of them agree on where to stop.
"""
import contextlib
import dataclasses
import functools
import pathlib
import signal
import sys
import threading
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from vae_jax import checkpoints
from vae_jax import data
from vae_jax import epoch as epoch_lib
from vae_jax import evaluation
from vae_jax import images
from vae_jax import lock as lock_lib
from vae_jax import model as model_lib
from vae_jax import objectives
from vae_jax import optim
from vae_jax import parallel
from vae_jax import reporting
from vae_jax import stacked
from vae_jax import sweep
from vae_jax import train_step
from vae_jax.errors import Interrupted
from vae_jax.errors import TrainingDiverged
from vae_jax.errors import UsageError

# Independent key streams under each model's seed: fold_in(root, stream).
INIT_STREAM, TRAIN_STREAM, EVAL_STREAM, FIGURE_STREAM = range(4)
IWAE_STREAM = 5  # The same key every epoch, so epochs' IWAE bounds compare.
NUM_RECONSTRUCTIONS = 8
NUM_SAMPLES = 64


# ----------------------------------------------------------------------------
# Config


def check_config(config: ml_collections.ConfigDict) -> None:
  """Raises UsageError naming the first invalid value in `config` (before any data is read)."""
  choices = {"binarize": ("none", "dynamic"),
             "matmul_precision": tuple(parallel.MATMUL_PRECISIONS)}
  for field, allowed in choices.items():
    if config[field] not in allowed:
      raise UsageError(f"unknown {field} {config[field]!r}; choose one of {', '.join(allowed)}")
  positive = ("batch_size", "learning_rate", "eval_batch_size", "eval_iwae_k",
              "iwae_sample_chunk", "iwae_example_chunk", "chunks_per_epoch", "keep_checkpoints",
              "checkpoint_every_epochs")
  for field in positive:
    if not config[field] > 0:
      raise UsageError(f"{field} must be > 0, got {config[field]}")
  for field in ("num_epochs", "eval_iwae_every", "beta", "kl_warmup_steps", "free_bits"):
    if config[field] < 0:
      raise UsageError(f"{field} must be >= 0, got {config[field]}")
  data.check_config(config)
  model_lib.Architecture.from_config(config).check()  # Again with the data's image shape later.
  optim.check(config)
  sweep.model_settings(config)
  for field in ("batch_size", "eval_batch_size"):
    if config[field] % jax.device_count():
      raise UsageError(f"{field}={config[field]} does not divide over "
                       f"{jax.device_count()} devices; use a multiple of {jax.device_count()}")


def resolve_config(config: ml_collections.ConfigDict, dataset: data.Dataset,
                   model: model_lib.VAE | None = None) -> ml_collections.ConfigDict:
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
  if model is not None:
    resolved.model = checkpoints.CUSTOM_MODEL
    resolved.network = f"{type(model.encoder).__name__}/{type(model.decoder).__name__}"
    resolved.latents = model.latents
  return resolved


# ----------------------------------------------------------------------------
# Progress of a run, saved with each checkpoint.


@dataclasses.dataclass
class Progress:
  """Where the run is, per model where it differs.

  Attributes:
    epoch: epochs completed (trained, evaluated and recorded).
    step_in_epoch: steps of the current epoch done (all of them while its
      evaluation is pending).
    loss_sums, objective_sums: per model, sums of the current epoch's batch losses.
    seconds: training time of the current epoch so far (summed over resumes).
    diverged_at: per model, the step at which its loss turned non-finite, or None.
  """

  epoch: int
  step_in_epoch: int
  loss_sums: list
  objective_sums: list
  seconds: float
  diverged_at: list

  @classmethod
  def start(cls, num_models: int) -> "Progress":
    return cls(0, 0, [0.0] * num_models, [0.0] * num_models, 0.0, [None] * num_models)

  def next_epoch(self) -> "Progress":
    n = len(self.loss_sums)
    return Progress(self.epoch + 1, 0, [0.0] * n, [0.0] * n, 0.0, list(self.diverged_at))


@dataclasses.dataclass
class RunResult:
  """What `train_and_evaluate` did."""

  state: train_step.TrainState
  epochs_done: int
  interrupted_by: int | None = None  # The signal that stopped training early.
  already_done: bool = False


@dataclasses.dataclass
class _Run:
  """What one training run holds while it goes."""

  config: ml_collections.ConfigDict
  workdir: pathlib.Path
  model: model_lib.VAE
  settings: list[dict]  # Per model.
  roots: jax.Array  # (N,) root keys, one per model's seed.
  mesh: object
  ckpt: checkpoints.Checkpointer
  reporter: reporting.Reporter
  verbose: bool
  stop: "_StopFlag"
  steps_per_epoch: int
  good_step: int | None = None  # The newest checkpoint known intact (verified or written here).
  good_progress: "Progress | None" = None  # The progress saved with it.
  config_written: bool = False

  @property
  def num_models(self) -> int:
    return len(self.settings)

  @functools.cached_property
  def step_config(self) -> train_step.StepConfig:
    total_steps = self.config.num_epochs * self.steps_per_epoch  # The cosine schedule's length.
    return train_step.StepConfig.from_config(self.config, _settings(self), total_steps)

  def say(self, message: str) -> None:
    if self.verbose and parallel.is_main_process():
      print(message, flush=True)

  def stream_keys(self, stream: int, *more: int) -> jax.Array:
    """(N,) keys `fold_in(fold_in(root_i, stream), more...)`."""
    keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(self.roots, stream)
    for m in more:
      keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(keys, m)
    return keys


# ----------------------------------------------------------------------------
# The driver.


def train_and_evaluate(config: ml_collections.ConfigDict, workdir, *,
                       model: model_lib.VAE | None = None, verbose: bool = True) -> RunResult:
  """Trains (or resumes) the VAE(s) of `config` in `workdir`, evaluating every epoch.

  Args:
    config: see `vae_jax/configs/default.py`.
    workdir: where checkpoints, metrics and figures go; an existing run there resumes.
    model: a user-defined `vae_jax.VAE` (any encoder and decoder) instead of the
      network the config describes; `image_shape` is taken from the data. Load
      it again with `vae_jax.load(workdir, module=model)`.
    verbose: print progress and one line per epoch.

  Raises:
    UsageError: invalid config, data or workdir; another run holds the workdir;
      every checkpoint damaged. Nothing in the workdir has changed then.
    TrainingDiverged: every model's loss became non-finite; the workdir keeps its
      last good checkpoint.
  """
  check_config(config)
  workdir = pathlib.Path(workdir)
  config = _with_saved_dataset(config, workdir)
  dataset = data.load(config, say=_printer(verbose))
  data.check_fits(dataset)
  config = resolve_config(config, dataset, model)
  module = _module(config, dataset, model)
  if workdir.exists() and not workdir.is_dir():
    raise UsageError(f"--workdir {workdir} is a file, not a folder")
  with parallel.matmul_precision(config), _workdir_lock(workdir, config.keep_checkpoints) as ckpt:
    run = _Run(config, workdir, module, sweep.model_settings(config), _roots(config),
               parallel.make_mesh(), ckpt,
               reporting.Reporter(workdir, parallel.is_main_process(), config.num_models),
               verbose, _StopFlag(), len(dataset.train.images) // config.batch_size)
    try:
      return _train(run, dataset)
    finally:
      run.reporter.close()


def _with_saved_dataset(config: ml_collections.ConfigDict,
                        workdir: pathlib.Path) -> ml_collections.ConfigDict:
  """`config` with the dataset of the run in `workdir` when it names none and reads no data_dir.

  An empty `dataset` means full MNIST online and the shipped digits offline; a
  run resumes on the data it started with, whatever the network does meanwhile.
  """
  if config.dataset or config.data_dir or not workdir.is_dir():
    return config
  try:
    saved = checkpoints.read_config(workdir)
  except UsageError:
    return config  # Reported, as always, once the workdir is locked.
  if saved is None or not saved.get("dataset") or saved.get("data_dir"):
    return config
  config = ml_collections.ConfigDict(config.to_dict())
  config.dataset = saved.dataset
  return config


def _printer(verbose: bool):
  """Prints a line on stdout when `verbose`, from process 0 only."""
  return lambda message: (verbose and parallel.is_main_process()
                          and print(message, flush=True))


def _module(config, dataset, model) -> model_lib.VAE:
  if model is None:
    return model_lib.from_config(config, dataset.image_shape)
  if model.image_shape is not None and tuple(model.image_shape) != tuple(dataset.image_shape):
    raise UsageError(f"the model is built for images of shape {tuple(model.image_shape)}, "
                     f"the data has {tuple(dataset.image_shape)}")
  return model.clone(image_shape=tuple(dataset.image_shape))


def _roots(config) -> jax.Array:
  return jnp.stack([jax.random.key(s["seed"]) for s in sweep.model_settings(config)])


@contextlib.contextmanager
def _workdir_lock(workdir: pathlib.Path, keep: int):
  """Holds the workdir's lock (process 0) for the run; yields its Checkpointer."""
  holder = lock_lib.WorkdirLock(workdir)
  error = None
  if parallel.is_main_process():
    try:
      workdir.mkdir(parents=True, exist_ok=True)
      holder.acquire()
    except UsageError as e:
      error = e
    except OSError as e:
      error = UsageError(f"cannot write to --workdir {workdir}: {e.strerror or e}")
  if parallel.any_process(error is not None):  # Every process gives up together.
    raise error or UsageError(f"process 0 could not lock --workdir {workdir}")
  try:
    yield checkpoints.Checkpointer(workdir, keep=keep)
  finally:
    holder.release()


def _train(run: _Run, dataset: data.Dataset) -> RunResult:
  config = run.config
  state, progress = _init_or_restore(run)
  if progress.epoch >= config.num_epochs:
    run.say(f"{run.workdir}: already trained for {progress.epoch} epochs (checkpoint step "
            f"{run.good_step}); nothing to do. Raise --config.num_epochs to train further.")
    return RunResult(state, progress.epoch, already_done=True)
  run.reporter.keep_epochs(progress.epoch)
  settings = _settings(run)
  runner = _runner(run, dataset, settings)
  evaluation_data = _evaluation_data(run, dataset)
  with _stop_requested(run.stop):
    compile_seconds = runner.compile(state, *_epoch_keys(run, progress.epoch), settings)
    run.say(f"{model_lib.describe(run.model, stacked.index(state.params, 0))}"
            f"{f' x {run.num_models} models' if run.num_models > 1 else ''}; "
            f"{len(dataset.train.images):,} training images of {dataset.name}, "
            f"{runner.steps_per_epoch} steps of "
            f"{config.batch_size} per epoch on {jax.device_count()} {jax.devices()[0].platform} "
            f"device(s); compiled in {compile_seconds:.1f} s")
    first = True
    for epoch in range(progress.epoch, config.num_epochs):
      try:
        state, progress = _train_epoch(run, runner, state, progress, settings)
        if progress.step_in_epoch < runner.steps_per_epoch:
          raise Interrupted("training")
        records = _evaluate_epoch(run, state, progress, evaluation_data, runner)
      except Interrupted as e:
        saved = _save(run, state, progress)
        run.say(f"interrupted during {e.phase} in epoch {epoch + 1} ({progress.step_in_epoch} of "
                f"{runner.steps_per_epoch} steps done); "
                + (f"checkpoint saved at step {state.steps_done}. " if saved else "nothing to save. ")
                + "Rerun the same command to resume.")
        return RunResult(state, progress.epoch, interrupted_by=run.stop.signum)
      if first:
        for r in records:
          r["compile_seconds"] = compile_seconds
        first = False
      run.reporter.write_metrics(records)
      progress = progress.next_epoch()
      if (epoch + 1) % config.checkpoint_every_epochs == 0 or epoch + 1 == config.num_epochs:
        _save(run, state, progress)
      run.say(_summary_line(records, config.num_epochs))
  run.say(_where_line(run))
  return RunResult(state, progress.epoch)


def _init_or_restore(run: _Run) -> tuple[train_step.TrainState, Progress]:
  """The newest intact checkpoint's (state, progress), or a fresh state at epoch 0."""
  saved = checkpoints.read_config(run.workdir)
  if saved is not None and run.ckpt.all_steps():
    checkpoints.check_same_model(saved, run.config, run.workdir)
  create = functools.partial(train_step.create, run.model, run.step_config,
                             run.stream_keys(INIT_STREAM), _settings(run))
  replicated = parallel.replicated(run.mesh)
  if not run.ckpt.all_steps():
    return jax.device_put(create(), replicated), Progress.start(run.num_models)
  # Shapes only: running the initialisers op by op costs seconds of small compilations.
  abstract = checkpoints.abstract_like(jax.eval_shape(create), replicated)
  rebuild = lambda step, params, opt_state, alive: jax.device_put(train_step.TrainState(
      jnp.full(len(alive), step, jnp.int32), params, opt_state, jnp.asarray(alive)), replicated)
  try:
    state, progress, run.good_step = run.ckpt.restore_newest_intact(abstract, rebuild)
  except Exception as e:  # pylint: disable=broad-except
    if isinstance(e, UsageError):
      raise
    raise UsageError(f"cannot restore the checkpoints in {run.ckpt.directory} into this model "
                     f"({str(e).splitlines()[0][:160]}); use a new --workdir") from None
  run.good_progress = Progress(**progress)
  return state, run.good_progress




def _settings(run: _Run) -> train_step.Settings:
  return jax.device_put(train_step.Settings.of(run.settings), parallel.replicated(run.mesh))


def _runner(run: _Run, dataset: data.Dataset, settings) -> epoch_lib.Runner:
  train = epoch_lib.place_training_set(dataset.train.images, run.mesh)
  return epoch_lib.Runner(
      run.model, run.step_config, train, len(dataset.train.images),
      batch_size=run.config.batch_size, chunks_per_epoch=run.config.chunks_per_epoch,
      mesh=run.mesh, independent_orders=run.config.independent_data_order and run.num_models > 1)


def _epoch_keys(run: _Run, epoch: int) -> tuple[jax.Array, jax.Array]:
  """(shuffle keys, step keys) of an epoch: per model (N,), or one shared shuffle key (1,)."""
  keys = run.stream_keys(TRAIN_STREAM, epoch)
  shuffle, steps = jax.vmap(jax.random.split, out_axes=1)(keys)
  if not (run.config.independent_data_order and run.num_models > 1):
    shuffle = shuffle[:1]  # Model 0's order, which all models share.
  return shuffle, steps


@dataclasses.dataclass(frozen=True)
class _EvaluationData:
  chunks: evaluation.Chunks  # The test set in eval_batch_size chunks.
  iwae_chunks: evaluation.Chunks | None  # ... in iwae_example_chunk chunks, when IWAE is logged.
  figure_inputs: jax.Array  # float32 (8, H, W, C) in [0, 1], replicated.


def _evaluation_data(run: _Run, dataset: data.Dataset) -> _EvaluationData:
  test = evaluation.evaluation_inputs(dataset.test.images, run.config)
  chunks = evaluation.Chunks.place(test, run.config.eval_batch_size, run.mesh)
  iwae = None
  if run.config.eval_iwae_every:
    size = -(-run.config.iwae_example_chunk // run.mesh.size) * run.mesh.size
    iwae = evaluation.Chunks.place(test, size, run.mesh)
  figures = parallel.put(test[:NUM_RECONSTRUCTIONS], parallel.replicated(run.mesh))
  return _EvaluationData(chunks, iwae, data.to_unit_interval(figures))


def _train_epoch(run: _Run, runner: epoch_lib.Runner, state, progress: Progress, settings
                 ) -> tuple[train_step.TrainState, Progress]:
  """Trains the rest of one epoch chunk by chunk, until its end or a stop request.

  Returns:
    The state and the progress; `progress.step_in_epoch` is `steps_per_epoch`
    after the whole epoch, less when the run was asked to stop.
  """
  epoch = progress.epoch
  shuffle_keys, step_keys = _epoch_keys(run, epoch)
  batches = runner.batches(shuffle_keys)
  bar = _progress_bar(run, runner.steps_per_epoch, progress.step_in_epoch, f"epoch {epoch + 1}")
  while progress.step_in_epoch < runner.steps_per_epoch and not _should_stop(run):
    start = time.perf_counter()
    alive_before = parallel.to_host(state.alive)
    state, metrics = runner.run_chunk(state, batches, step_keys, settings, progress.step_in_epoch)
    metrics = parallel.to_host(metrics)  # Waits for the chunk: one sync point per chunk.
    progress = _advance(run, progress, metrics, alive_before, parallel.to_host(state.alive),
                        time.perf_counter() - start)
    bar.update(runner.chunk)
  bar.close()
  return state, progress


def _advance(run: _Run, progress: Progress, metrics: dict, alive_before: np.ndarray,
             alive_after: np.ndarray, seconds: float) -> Progress:
  """The progress after a chunk; reports models whose loss turned non-finite in it.

  Raises:
    TrainingDiverged: no model is left.
  """
  losses, objectives = metrics["loss"].T, metrics["objective"].T  # (chunk, N)
  start = progress.step_in_epoch
  diverged_at = list(progress.diverged_at)
  for i in np.flatnonzero(alive_before & ~alive_after):
    bad = start + int(np.argmin(np.isfinite(objectives[:, i]) & np.isfinite(losses[:, i])))
    diverged_at[i] = progress.epoch * run.steps_per_epoch + bad + 1
    if run.num_models > 1 and alive_after.any():
      _warn(run, f"warning: model {i} ({_settings_text(run.settings[i])}): non-finite loss in "
            f"epoch {progress.epoch + 1} (step {bad + 1} of {run.steps_per_epoch}); it is frozen "
            "at its parameters from before that chunk of steps, the other models go on")
  if not alive_after.any():
    kept = (f"last good checkpoint kept (step {run.good_step})" if run.good_step is not None
            else "no checkpoint had been saved yet")
    bad = diverged_at[int(np.argmax([d or 0 for d in diverged_at]))] - progress.epoch * run.steps_per_epoch
    raise TrainingDiverged(
        f"non-finite loss in epoch {progress.epoch + 1} (step {bad} of {run.steps_per_epoch}); "
        f"training stopped, {kept}. Try a lower --config.learning_rate.")
  finite = lambda a: np.where(np.isfinite(a), a, 0.0).sum(axis=0)
  return dataclasses.replace(
      progress, step_in_epoch=start + len(losses),
      loss_sums=[a + b for a, b in zip(progress.loss_sums, finite(losses).tolist())],
      objective_sums=[a + b for a, b in zip(progress.objective_sums, finite(objectives).tolist())],
      seconds=progress.seconds + seconds, diverged_at=diverged_at)


def _evaluate_epoch(run: _Run, state, progress: Progress, evaluation_data: _EvaluationData,
                    runner: epoch_lib.Runner) -> list[dict]:
  """Evaluates every model on the test set after an epoch and writes its figures.

  Returns:
    One metrics record per model. Every `eval_iwae_every` epochs and after the
    last one, the records include the IWAE bound with `eval_iwae_k` samples.
  """
  config, epoch = run.config, progress.epoch
  start = time.perf_counter()
  elbo = evaluation.test_elbo(run.model, state.params, run.stream_keys(EVAL_STREAM, epoch),
                              evaluation_data.chunks, stop=_Stop(run))
  eval_seconds = time.perf_counter() - start
  iwae = None
  every = config.eval_iwae_every
  if every and ((epoch + 1) % every == 0 or epoch + 1 == config.num_epochs):
    start = time.perf_counter()
    iwae = evaluation.iwae_nll(
        run.model, state.params, run.stream_keys(IWAE_STREAM), evaluation_data.iwae_chunks,
        k=config.eval_iwae_k, sample_chunk=config.iwae_sample_chunk, stop=_Stop(run),
        description=f"IWAE k={config.eval_iwae_k}" if run.verbose else None)
    iwae_seconds = time.perf_counter() - start
  _write_figures(run, state, evaluation_data, epoch + 1)
  records = []
  for i in range(run.num_models):
    steps = runner.steps_per_epoch
    alive = progress.diverged_at[i] is None
    record = {"epoch": epoch + 1, "step": state.steps_done, "model": i,
              **({k: v for k, v in run.settings[i].items()} if run.num_models > 1 else {}),
              "train_loss": progress.loss_sums[i] / steps if alive else None,
              "test_loss": elbo[i]["loss"], "test_recon": elbo[i]["recon"],
              "test_kl": elbo[i]["kl"],
              "epoch_seconds": progress.seconds,
              "examples_per_second": runner.examples_per_epoch / progress.seconds,
              "eval_seconds": eval_seconds}
    if run.step_config.weighted:
      record["train_objective"] = progress.objective_sums[i] / steps if alive else None
      record["kl_weight"] = float(_kl_weight(run.settings[i], state.steps_done))
    if not alive:
      record["diverged_at_step"] = progress.diverged_at[i]
    if iwae is not None:
      record.update(test_iwae_nll=iwae[i][0], test_iwae_nll_stderr=iwae[i][1],
                    iwae_k=config.eval_iwae_k, iwae_seconds=iwae_seconds)
    records.append({k: _finite_or_none(v) for k, v in record.items()})
  return records


def _finite_or_none(value):
  """NaN and infinities (a diverged model's losses) as None: JSON has no NaN."""
  return None if isinstance(value, float) and not np.isfinite(value) else value


def _kl_weight(settings: dict, step: int):
  return objectives.kl_weight(jnp.float32(step), settings["beta"], settings["kl_warmup_steps"])


@functools.partial(jax.jit, static_argnames=("model", "num_samples"))
def figure_images(model, params, x, keys, *, num_samples: int):
  """Posterior-mean reconstructions of `x` (R, H, W, C) and prior samples, per model.

  Returns:
    (reconstructions (N, R, H, W, C), samples (N, num_samples, H, W, C)),
    E[x|z] in [0, 1]; model i draws its samples from `keys[i]`.
  """
  def one(params, key):
    def run(module):
      mean, _ = module.encode(x)
      z = jax.random.normal(key, (num_samples, module.latents))
      return module.mean_image(module.decode(mean)), module.mean_image(module.decode(z))
    return model.apply({"params": params}, method=run)

  return stacked.over_models(one, len(keys), (0, 0))(params, keys)


def _write_figures(run: _Run, state, evaluation_data: _EvaluationData, epoch: int) -> None:
  originals = evaluation_data.figure_inputs
  recon, samples = parallel.to_host(figure_images(
      run.model, state.params, originals, run.stream_keys(FIGURE_STREAM),
      num_samples=NUM_SAMPLES))
  originals = np.asarray(originals)
  for i in range(run.num_models):
    pairs = np.concatenate([originals, recon[i]])
    run.reporter.write_image("reconstruction", epoch, state.steps_done,
                             images.tile(pairs, cols=NUM_RECONSTRUCTIONS), model=i)
    run.reporter.write_image("sample", epoch, state.steps_done, images.tile(samples[i], cols=8),
                             model=i)


def _save(run: _Run, state, progress: Progress) -> bool:
  """Saves a checkpoint of the state unless it is untrained or saved already with this
  progress; the first save of a process writes config.json first (so a run that fails
  before its first checkpoint leaves the workdir's config as it was).

  A checkpoint of the same step with other progress (saved when a stop came during
  the epoch's evaluation, which has since completed) is replaced: otherwise a rerun
  would find that evaluation still pending and do it again.

  Returns:
    Whether a checkpoint of the state's step now exists.
  """
  if state.steps_done == 0:
    return False
  if state.steps_done == run.good_step and progress == run.good_progress:
    return True
  if not run.config_written and parallel.is_main_process():
    checkpoints.write_config(run.workdir, run.config)
    run.reporter.write_config(run.config.to_dict(), _tensorboard_settings(run))
  run.config_written = True
  run.ckpt.save(state, dataclasses.asdict(progress), replace=state.steps_done == run.good_step)
  run.good_step, run.good_progress = state.steps_done, progress
  return True


def _tensorboard_settings(run: _Run) -> list[dict]:
  return [dict(s, model=i) for i, s in enumerate(run.settings)] if run.num_models > 1 else [{}]


# ----------------------------------------------------------------------------
# Stopping on SIGINT / SIGTERM.


class _StopFlag:
  """Set by SIGINT/SIGTERM; the run checks it between chunks."""

  def __init__(self):
    self.signum = None

  def is_set(self) -> bool:
    return self.signum is not None


class _Stop:
  """What evaluation checks between chunks: the run's stop flag, agreed over processes."""

  def __init__(self, run: _Run):
    self.run = run

  def is_set(self) -> bool:
    return _should_stop(self.run)


def _should_stop(run: _Run) -> bool:
  """Whether any process of the run was asked to stop (a collective in multi-process runs)."""
  if parallel.any_process(run.stop.is_set()):
    run.stop.signum = run.stop.signum or signal.SIGTERM  # Another process got the signal.
    return True
  return False


@contextlib.contextmanager
def _stop_requested(stop: _StopFlag):
  """Turns the first SIGINT/SIGTERM into `stop`; a second one acts as usual.

  Outside the main thread (where Python allows no handlers) the flag never sets.
  """
  if threading.current_thread() is not threading.main_thread():
    yield stop
    return
  previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

  def handler(signum, frame):
    del frame
    stop.signum = signum
    signal.signal(signum, previous[signum])

  for s in previous:
    signal.signal(s, handler)
  try:
    yield stop
  finally:
    for s, h in previous.items():
      signal.signal(s, h)


# ----------------------------------------------------------------------------
# Output lines.


def _progress_bar(run: _Run, total: int, initial: int, description: str):
  from tqdm.auto import tqdm  # pylint: disable=g-import-not-at-top
  show = run.verbose and parallel.is_main_process()
  return tqdm(total=total, initial=initial, desc=description, unit="step", leave=False,
              disable=None if show else True)


def _summary_line(records: list[dict], num_epochs: int) -> str:
  """One line per epoch: the metrics, or for several models their mean ± std and the best."""
  first = records[0]
  head = f"epoch {first['epoch']:>3}/{num_epochs}"
  speed = (f"{first['epoch_seconds']:6.2f} s  ({first['examples_per_second']:,.0f} "
           f"examples/s{f' x {len(records)} models' if len(records) > 1 else ''})")
  if len(records) == 1:
    iwae = (f"  IWAE NLL (k={first['iwae_k']}) {first['test_iwae_nll']:8.2f}"
            if "test_iwae_nll" in first else "")
    train = (f"{first['train_loss']:8.2f}" if first["train_loss"] is not None else "     nan")
    return (f"{head}  test loss {first['test_loss']:8.2f}  recon {first['test_recon']:8.2f}  "
            f"KL {first['test_kl']:6.2f}{iwae}  train loss {train}  {speed}")
  live = [r for r in records if "diverged_at_step" not in r]
  stat = lambda name: _mean_std([r[name] for r in live])
  best = min(live, key=lambda r: r["test_loss"])
  iwae = (f"  IWAE NLL {stat('test_iwae_nll')}" if "test_iwae_nll" in first else "")
  dead = f"  ({len(records) - len(live)} diverged)" if len(live) < len(records) else ""
  return (f"{head}  test loss {stat('test_loss')} (best {best['test_loss']:.2f}, model "
          f"{best['model']})  recon {stat('test_recon')}  KL {stat('test_kl')}{iwae}  "
          f"{speed}{dead}")


def _mean_std(values: list[float]) -> str:
  values = np.asarray(values, np.float64)
  return f"{values.mean():.2f} ± {values.std(ddof=1) if len(values) > 1 else 0.0:.2f}"


def _settings_text(settings: dict) -> str:
  return ", ".join(f"{k} {v:g}" for k, v in settings.items())


def _where_line(run: _Run) -> str:
  workdir = run.workdir
  return (f"done. images: {workdir / 'images'}  metrics: {workdir / 'metrics.jsonl'}  "
          f"checkpoints: {run.ckpt.directory} (latest step {run.ckpt.latest_step()})  "
          f"TensorBoard: tensorboard --logdir {workdir / 'tensorboard'}")


def _warn(run: _Run, message: str) -> None:
  if parallel.is_main_process():
    print(message, file=sys.stderr, flush=True)
