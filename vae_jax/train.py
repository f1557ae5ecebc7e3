"""`train_and_evaluate(config, workdir)`: train a VAE, evaluating every epoch.

    python -m vae_jax.train --workdir=DIR [--config=tiny] [--config.FIELD=VALUE ...]

(the command line is `vae_jax.commands.train`). A run trains `num_models`
stacked models (one by default) on a device-resident training set
(`vae_jax.epoch`), evaluates them every epoch (`vae_jax.evaluation`), and
hands every output to a `reporting.Reporter` and its checkpoints to a
`checkpoints.Checkpointer`, holding the workdir's lock (`vae_jax.lock`).

Where the run stands is its `train_step.TrainState` alone: the epoch is
`step // steps_per_epoch`, and an epoch whose steps are done but which
metrics.jsonl does not record yet is evaluated next. Every random draw derives
from the seed by `fold_in`, keyed by (stream, epoch, step) (`KeyStreams`), so
a resumed run draws the keys an uninterrupted one would: it ends with the same
parameters, bit for bit, on the same machine.

`should_stop` (by default: SIGINT and SIGTERM, `vae_jax.stopping`) is checked
between chunks of training and of evaluation; when it answers True the run
saves a checkpoint and returns with `stopped` set.
"""
import contextlib
import dataclasses
import functools
import pathlib
import time
import warnings
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from vae_jax import checkpoints
from vae_jax import data
from vae_jax import epoch as epoch_lib
from vae_jax import evaluation
from vae_jax import lock as lock_lib
from vae_jax import model as model_lib
from vae_jax import objectives
from vae_jax import optim
from vae_jax import parallel
from vae_jax import reporting
from vae_jax import schema
from vae_jax import stacked
from vae_jax import stopping
from vae_jax import sweep
from vae_jax import train_step
from vae_jax.errors import Interrupted
from vae_jax.errors import TrainingDiverged
from vae_jax.errors import UsageError

NUM_RECONSTRUCTIONS = 8
NUM_SAMPLES = 64


@dataclasses.dataclass
class RunResult:
  """What `train_and_evaluate` did.

  Attributes:
    state: the final train state (stacked over models).
    epochs_done: epochs trained, evaluated and recorded.
    stopped: `should_stop` ended the run early (a checkpoint was saved).
    already_done: the workdir had trained for `num_epochs` already.
  """

  state: train_step.TrainState
  epochs_done: int
  stopped: bool = False
  already_done: bool = False


# ----------------------------------------------------------------------------
# Config


def check_config(config: ml_collections.ConfigDict) -> None:
  """Raises UsageError naming the first invalid value in `config` (before any data is read)."""
  schema.check(config)  # Each field's own values; then how they combine:
  data.check_config(config)
  model_lib.Architecture.from_config(config).check()  # Again with the data's image shape later.
  models = sweep.model_settings(config)
  optim.check(config)
  if any(m["free_bits"] for m in models) and (config.prior, config.posterior) != ("normal",
                                                                                   "gaussian"):
    raise UsageError("free_bits needs the KL per latent in closed form, which only "
                     "prior=normal with posterior=gaussian has; set free_bits=0 or use those")
  for field in ("batch_size", "eval_batch_size"):
    if config[field] % jax.device_count():
      raise UsageError(f"{field}={config[field]} does not divide over "
                       f"{jax.device_count()} devices; use a multiple of {jax.device_count()}")


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
  if module is not None:
    resolved.model = checkpoints.CUSTOM_MODEL
    resolved.update(model_lib.signature(module))
    resolved.latents = module.latents
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
  """The test set on the devices, as evaluation and the figures take it."""

  chunks: evaluation.Chunks  # In eval_batch_size chunks.
  iwae_chunks: evaluation.Chunks | None  # In iwae_example_chunk chunks, when IWAE is logged.
  figure_inputs: jax.Array  # float32 (R, H, W, C) in [0, 1], replicated.

  @classmethod
  def place(cls, test_images: np.ndarray, config, mesh) -> "EvaluationData":
    test = evaluation.evaluation_inputs(test_images, config)
    chunks = evaluation.Chunks.place(test, config.eval_batch_size, mesh)
    iwae = None
    if config.eval_iwae_every:
      size = -(-config.iwae_example_chunk // mesh.size) * mesh.size
      iwae = evaluation.Chunks.place(test, size, mesh)
    figures = parallel.put(test[:NUM_RECONSTRUCTIONS], parallel.replicated(mesh))
    return cls(chunks, iwae, data.to_unit_interval(figures))


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
            with_evaluation: bool = True) -> "Experiment":
    mesh = parallel.make_mesh()
    model_settings = sweep.model_settings(config)
    settings = jax.device_put(train_step.Settings.of(model_settings), parallel.replicated(mesh))
    steps_per_epoch = len(dataset.train.images) // config.batch_size
    step_config = train_step.StepConfig.from_config(
        config, settings, config.num_epochs * steps_per_epoch)  # The cosine schedule's length.
    keys = KeyStreams.of(config)
    runner = epoch_lib.Runner(
        module, step_config, epoch_lib.place_training_set(dataset.train.images, mesh),
        len(dataset.train.images), batch_size=config.batch_size,
        chunks_per_epoch=config.chunks_per_epoch, mesh=mesh,
        independent_orders=keys.independent_orders)
    evaluation_data = (EvaluationData.place(dataset.test.images, config, mesh)
                       if with_evaluation else None)
    return cls(config, module, mesh, keys, model_settings, settings, step_config, runner,
               evaluation_data)

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


# ----------------------------------------------------------------------------
# The driver.


def train_and_evaluate(config: ml_collections.ConfigDict, workdir, *,
                       module: model_lib.VAE | None = None, verbose: bool = True,
                       should_stop: Callable[[], bool] | None = None,
                       model: model_lib.VAE | None = None) -> RunResult:
  """Trains (or resumes) the VAE(s) of `config` in `workdir`, evaluating every epoch.

  Args:
    config: see `vae_jax/schema.py` (`vae-jax train --help`).
    workdir: where checkpoints, metrics and figures go; an existing run there resumes.
    module: a user-defined `vae_jax.VAE` (any encoder and decoder, a subclass,
      its own prior or posterior) instead of the network the config describes;
      `image_shape` is taken from the data. Load it again with
      `vae_jax.load(workdir, module=module)`.
    verbose: print progress and one line per epoch.
    should_stop: checked between chunks; True saves a checkpoint and returns with
      `stopped` set. Default: the first SIGINT (Ctrl-C) or SIGTERM (from the main
      thread; `vae_jax.stopping.StopRequest`).
    model: the old name of `module` (deprecated).

  Raises:
    UsageError: invalid config, data or workdir; another run holds the workdir;
      every checkpoint damaged. Nothing in the workdir has changed then.
    TrainingDiverged: every model's loss became non-finite; the workdir keeps its
      last good checkpoint.
  """
  if model is not None:
    warnings.warn("train_and_evaluate(..., model=vae) is now train_and_evaluate(..., module=vae)",
                  DeprecationWarning, stacklevel=2)
    module = model
  check_config(config)
  workdir = pathlib.Path(workdir)
  config = _with_saved_dataset(config, workdir)
  dataset = data.load(config, say=_printer(verbose))
  data.check_fits(dataset)
  config = resolve_config(config, dataset, module)
  module = _module(config, dataset, module)
  if workdir.exists() and not workdir.is_dir():
    raise UsageError(f"--workdir {workdir} is a file, not a folder")
  with contextlib.ExitStack() as stack:
    if should_stop is None:
      should_stop = stack.enter_context(stopping.StopRequest().installed())
    stack.enter_context(parallel.matmul_precision(config))
    ckpt = stack.enter_context(_workdir_lock(workdir, config.keep_checkpoints))
    reporter = reporting.Reporter(workdir, parallel.is_main_process(), config.num_models,
                                  verbose)
    stack.callback(reporter.close)
    experiment = Experiment.build(config, dataset, module)
    return _train(experiment, ckpt, reporter, stopping.Stopper(should_stop), dataset)


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


def _module(config, dataset, module) -> model_lib.VAE:
  if module is None:
    return model_lib.from_config(config, dataset.image_shape)
  if module.image_shape is not None and tuple(module.image_shape) != tuple(dataset.image_shape):
    raise UsageError(f"the model is built for images of shape {tuple(module.image_shape)}, "
                     f"the data has {tuple(dataset.image_shape)}")
  return module.clone(image_shape=tuple(dataset.image_shape))


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


def _train(exp: Experiment, ckpt: checkpoints.Checkpointer, reporter: reporting.Reporter,
           stop: stopping.Stopper, dataset: data.Dataset) -> RunResult:
  """The loop: resume, then per epoch train, evaluate, record, checkpoint."""
  config, spe = exp.config, exp.steps_per_epoch
  state = _restore_or_create(exp, ckpt)
  epoch, pending = _position(state, spe, reporter)
  if epoch >= config.num_epochs:
    reporter.say(f"{reporter.workdir}: already trained for {epoch} epochs (checkpoint step "
                 f"{ckpt.last_good_step}); nothing to do. Raise --config.num_epochs to train "
                 "further.")
    return RunResult(state, epoch, already_done=True)
  reporter.keep_epochs(epoch)
  stop()  # From here on a signal stops between chunks (the first poll of a StopRequest).
  compile_seconds = exp.runner.compile(state, *exp.keys.epoch(epoch), exp.settings)
  reporter.say(_start_line(exp, state, dataset, compile_seconds))
  first = True
  for epoch in range(epoch, config.num_epochs):
    if not pending:
      state = _train_epoch(exp, state, epoch, stop, reporter, ckpt)
    pending = False
    records = None if stop() else _evaluate_epoch(exp, state, epoch, stop, reporter)
    if records is None:
      return _stopped(exp, state, ckpt, reporter, epoch)
    if first:
      for r in records:
        r["compile_seconds"] = compile_seconds
      first = False
    reporter.write_metrics(records)
    if (epoch + 1) % config.checkpoint_every_epochs == 0 or epoch + 1 == config.num_epochs:
      _save(exp, state, ckpt, reporter)
    reporter.say(reporting.epoch_line(records, config.num_epochs))
  reporter.say(_where_line(reporter.workdir, ckpt))
  return RunResult(state, config.num_epochs)


def _position(state: train_step.TrainState, steps_per_epoch: int,
              reporter: reporting.Reporter) -> tuple[int, bool]:
  """(epochs done, whether the last one's evaluation is pending), from the state's step
  and what metrics.jsonl records (process 0's reading, shared with the others)."""
  full, inside = divmod(state.steps_done, steps_per_epoch)
  if inside or not full:
    return full, False
  recorded = parallel.any_process(parallel.is_main_process() and reporter.has_epoch(full))
  return (full, False) if recorded else (full - 1, True)


def _restore_or_create(exp: Experiment, ckpt: checkpoints.Checkpointer
                       ) -> train_step.TrainState:
  """The newest intact checkpoint's state, or a fresh one."""
  saved = checkpoints.read_config(ckpt.directory.parent)
  if not ckpt.all_steps():
    return exp.create_state()
  if saved is not None:
    checkpoints.check_same_model(saved, exp.config, ckpt.directory.parent)
  abstract = exp.abstract_state()
  try:
    items, meta, _ = ckpt.restore_newest(
        {"params": abstract.params, "opt_state": abstract.opt_state}, set_aside=True)
  except UsageError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    raise UsageError(f"cannot restore the checkpoints in {ckpt.directory} into this model "
                     f"({str(e).splitlines()[0][:160]}); use a new --workdir") from None
  _check_steps_per_epoch(meta, exp.steps_per_epoch, ckpt)
  counters = checkpoints.counters(meta)
  fields = {name: jnp.asarray(counters[name], getattr(abstract, name).dtype)
            for name in train_step.TrainState.COUNTERS}
  return jax.device_put(train_step.TrainState(params=items["params"],
                                              opt_state=items["opt_state"], **fields),
                        parallel.replicated(exp.mesh))


def _check_steps_per_epoch(meta: dict, steps_per_epoch: int, ckpt) -> None:
  """The epoch is derived from the step: refuse a checkpoint of another epoch length."""
  if "progress" in meta:  # Written before the record held the steps per epoch.
    p = meta["progress"]
    ok = p["epoch"] * steps_per_epoch + p["step_in_epoch"] == meta["step"]
  else:
    ok = meta["info"].get("steps_per_epoch") == steps_per_epoch
  if not ok:
    raise UsageError(f"checkpoint {meta['step']} in {ckpt.directory} was written with another "
                     f"number of steps per epoch than this run's {steps_per_epoch} (another "
                     "batch_size or training set); use those settings or a new --workdir")


def _train_epoch(exp: Experiment, state, epoch: int, stop, reporter, ckpt
                 ) -> train_step.TrainState:
  """Trains the rest of epoch `epoch` chunk by chunk, until its end or a stop."""
  spe = exp.steps_per_epoch
  done = state.steps_done - epoch * spe
  if done == 0:
    state = state.new_epoch()
  shuffle_keys, step_keys = exp.keys.epoch(epoch)
  batches = exp.runner.batches(shuffle_keys)
  bar = reporter.progress_bar(spe, done, f"epoch {epoch + 1}")
  while done < spe and not stop():
    start = time.perf_counter()
    alive_before = parallel.to_host(state.alive)
    state, _ = exp.runner.run_chunk(state, batches, step_keys, exp.settings, done)
    alive = parallel.to_host(state.alive)  # Waits for the chunk: one sync point per chunk.
    state = state.replace(seconds=state.seconds + (time.perf_counter() - start))
    done += exp.runner.chunk
    _report_divergence(exp, state, alive_before, alive, epoch, reporter, ckpt)
    bar.update(exp.runner.chunk)
  bar.close()
  return state


def _report_divergence(exp, state, alive_before, alive, epoch: int, reporter, ckpt) -> None:
  """Warns about models whose loss turned non-finite in the last chunk.

  Raises:
    TrainingDiverged: no model is left.
  """
  spe = exp.steps_per_epoch
  diverged_at = parallel.to_host(state.diverged_at)
  for i in np.flatnonzero(alive_before & ~alive):
    if exp.num_models > 1 and alive.any():
      reporter.warn(f"warning: model {i} ({reporting.settings_text(exp.model_settings[i])}): "
                    f"non-finite loss in epoch {epoch + 1} (step {diverged_at[i] - epoch * spe} "
                    f"of {spe}); it is frozen at its parameters from before that chunk of "
                    "steps, the other models go on")
  if not alive.any():
    kept = (f"last good checkpoint kept (step {ckpt.last_good_step})"
            if ckpt.last_good_step is not None else "no checkpoint had been saved yet")
    bad = int(diverged_at.max()) - epoch * spe
    raise TrainingDiverged(
        f"non-finite loss in epoch {epoch + 1} (step {bad} of {spe}); "
        f"training stopped, {kept}. Try a lower --config.learning_rate.")


def _evaluate_epoch(exp: Experiment, state, epoch: int, stop, reporter) -> list[dict] | None:
  """Evaluates every model on the test set after epoch `epoch` and writes its figures.

  Returns:
    One metrics record per model (every `eval_iwae_every` epochs and after the
    last one with the IWAE bound), or None when `stop` ended the evaluation.
  """
  config, data_ = exp.config, exp.evaluation
  try:
    start = time.perf_counter()
    elbo = evaluation.test_elbo(exp.module, state.params, exp.keys.evaluation(epoch),
                                data_.chunks, stop=stop)
    eval_seconds = time.perf_counter() - start
    iwae, iwae_seconds = None, None
    every = config.eval_iwae_every
    if every and ((epoch + 1) % every == 0 or epoch + 1 == config.num_epochs):
      start = time.perf_counter()
      iwae = evaluation.iwae_nll(
          exp.module, state.params, exp.keys.iwae(), data_.iwae_chunks, k=config.eval_iwae_k,
          sample_chunk=config.iwae_sample_chunk, stop=stop,
          description=f"IWAE k={config.eval_iwae_k}" if reporter.verbose else None)
      iwae_seconds = time.perf_counter() - start
  except Interrupted:
    return None
  _write_figures(exp, state, reporter, epoch + 1)
  return [_record(exp, state, i, epoch, elbo[i], eval_seconds,
                  None if iwae is None else (*iwae[i], iwae_seconds))
          for i in range(exp.num_models)]


def _record(exp: Experiment, state, i: int, epoch: int, elbo: dict, eval_seconds: float,
            iwae: tuple | None) -> dict:
  """Model i's metrics record of an epoch, from the state and the evaluation."""
  spe, steps = exp.steps_per_epoch, state.steps_done
  alive = bool(state.alive[i])
  seconds = float(state.seconds[i])
  record = {"epoch": epoch + 1, "step": steps, "model": i,
            **(dict(exp.model_settings[i]) if exp.num_models > 1 else {}),
            "train_loss": float(state.loss_sum[i]) / spe if alive else None,
            "test_loss": elbo["loss"], "test_recon": elbo["recon"], "test_kl": elbo["kl"],
            "epoch_seconds": seconds,
            "examples_per_second": exp.runner.examples_per_epoch / seconds,
            "eval_seconds": eval_seconds}
  if exp.step_config.weighted:
    record["train_objective"] = float(state.objective_sum[i]) / spe if alive else None
    settings = exp.model_settings[i]
    record["kl_weight"] = float(objectives.kl_weight(
        jnp.float32(steps), settings["beta"], settings["kl_warmup_steps"]))
  if not alive:
    record["diverged_at_step"] = int(state.diverged_at[i])
  if iwae is not None:
    record.update(test_iwae_nll=iwae[0], test_iwae_nll_stderr=iwae[1],
                  iwae_k=exp.config.eval_iwae_k, iwae_seconds=iwae[2])
  # NaN and infinities (a diverged model's losses) as None: JSON has no NaN.
  return {k: None if isinstance(v, float) and not np.isfinite(v) else v
          for k, v in record.items()}


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
      z = module.sample_prior(key, num_samples)
      return module.mean_image(module.decode(mean)), module.mean_image(module.decode(z))
    return model.apply({"params": params}, method=run)

  return stacked.over_models(one, len(keys), (0, 0))(params, keys)


def _write_figures(exp: Experiment, state, reporter, epoch: int) -> None:
  originals = exp.evaluation.figure_inputs
  recon, samples = parallel.to_host(figure_images(
      exp.module, state.params, originals, exp.keys.stream(KeyStreams.FIGURES),
      num_samples=NUM_SAMPLES))
  reporter.write_figures(epoch, state.steps_done, np.asarray(originals), recon, samples)


def _save(exp: Experiment, state, ckpt, reporter) -> bool:
  """Saves a checkpoint of the state unless it is untrained or saved already; the first
  save of a run writes config.json first (so a run that fails before its first
  checkpoint leaves the workdir's config as it was).

  Returns:
    Whether a checkpoint of the state's step now exists.
  """
  if state.steps_done == 0:
    return False
  reporter.write_config(exp.config, _tensorboard_settings(exp))
  ckpt.save(state, {"steps_per_epoch": exp.steps_per_epoch})
  return True


def _stopped(exp: Experiment, state, ckpt, reporter, epoch: int) -> RunResult:
  """Saves what a stop leaves and says so."""
  spe = exp.steps_per_epoch
  done = state.steps_done - epoch * spe
  phase = "training" if done < spe else "evaluation"
  saved = _save(exp, state, ckpt, reporter)
  reporter.say(f"interrupted during {phase} in epoch {epoch + 1} ({done} of {spe} steps done); "
               + (f"checkpoint saved at step {state.steps_done}. " if saved
                  else "nothing to save. ") + "Rerun the same command to resume.")
  return RunResult(state, epoch, stopped=True)


def _tensorboard_settings(exp: Experiment) -> list[dict]:
  return ([dict(s, model=i) for i, s in enumerate(exp.model_settings)]
          if exp.num_models > 1 else [{}])


def _start_line(exp: Experiment, state, dataset: data.Dataset, compile_seconds: float) -> str:
  config = exp.config
  params = stacked.index(state.params, 0)
  return (f"{model_lib.describe(exp.module, params)}"
          f"{f' x {exp.num_models} models' if exp.num_models > 1 else ''}; "
          f"{len(dataset.train.images):,} training images of {dataset.name}, "
          f"{exp.steps_per_epoch} steps of "
          f"{config.batch_size} per epoch on {jax.device_count()} {jax.devices()[0].platform} "
          f"device(s); compiled in {compile_seconds:.1f} s")


def _where_line(workdir: pathlib.Path, ckpt) -> str:
  return (f"done. images: {workdir / 'images'}  metrics: {workdir / 'metrics.jsonl'}  "
          f"checkpoints: {ckpt.directory} (latest step {ckpt.latest_step()})  "
          f"TensorBoard: tensorboard --logdir {workdir / 'tensorboard'}")


if __name__ == "__main__":
  from vae_jax import cli  # pylint: disable=g-import-not-at-top
  from vae_jax.commands import train as train_command  # pylint: disable=g-import-not-at-top
  cli.run(train_command.main, train_command.INTERRUPTED)
