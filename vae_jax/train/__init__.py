"""`train_and_evaluate(config, workdir)`: train a model, evaluating every epoch.

    python -m vae_jax.train --workdir=DIR [--config=tiny] [--config.FIELD=VALUE ...]

(the command line is `vae_jax.commands.train`). A run builds an `Experiment`
once (`vae_jax.experiment`: the family, the devices, the key streams, the
compiled epoch, the test set on the devices) and loops over epochs: train
(`vae_jax.epoch`), evaluate (`vae_jax.evaluation`), hand every output to a
`reporting.Reporter` and the state to a `checkpoints.Checkpointer`, holding
the workdir's lock (`vae_jax.lock`). The driver knows no loss: the records
hold whatever metrics the family returns (`train_NAME`, `test_NAME`).

Where the run stands is its `train_state.TrainState` alone: the epoch is
`step // steps_per_epoch`, and an epoch whose steps are done but which
metrics.jsonl does not record yet is evaluated next. Every random draw derives
from the seed by `fold_in`, keyed by (stream, epoch, step)
(`experiment.KeyStreams`), so a resumed run draws the keys an uninterrupted one
would: it ends with the same parameters, bit for bit, on the same machine.

`should_stop` (by default: SIGINT and SIGTERM, `vae_jax.stopping`) is checked
between chunks of training and of evaluation; when it answers True the run
saves a checkpoint and returns with `stopped` set.
"""
import contextlib
import dataclasses
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
from vae_jax import disentanglement_eval
from vae_jax import epoch as epoch_lib
from vae_jax import evaluation
from vae_jax import experiment as experiment_lib
from vae_jax import lock as lock_lib
from vae_jax import parallel
from vae_jax import reporting
from vae_jax import stacked
from vae_jax import schema
from vae_jax import stopping
from vae_jax import streaming
from vae_jax import train_state
from vae_jax import trained as trained_lib
from vae_jax.errors import Interrupted
from vae_jax.errors import counted
from vae_jax.errors import TrainingDiverged
from vae_jax.errors import UsageError
from vae_jax.experiment import Experiment
from vae_jax.experiment import KeyStreams

@dataclasses.dataclass
class RunResult:
  """What `train_and_evaluate` did.

  Attributes:
    state: the final train state (stacked over models).
    epochs_done: epochs trained, evaluated and recorded.
    stopped: `should_stop` ended the run early (a checkpoint was saved).
    already_done: the workdir had trained for `num_epochs` already.
  """

  state: train_state.TrainState
  epochs_done: int
  stopped: bool = False
  already_done: bool = False


# ----------------------------------------------------------------------------
# The driver.


def train_and_evaluate(config: ml_collections.ConfigDict, workdir, *,
                       module=None, verbose: bool = True,
                       should_stop: Callable[[], bool] | None = None,
                       model=None) -> RunResult:
  """Trains (or resumes) the model(s) of `config` in `workdir`, evaluating every epoch.

  Args:
    config: see `vae_jax/schema.py` (`vae-jax train --help`).
    workdir: where checkpoints, metrics and figures go; an existing run there resumes.
    module: a user-defined flax module of the config's family (for the Gaussian VAE
      a `vae_jax.VAE`: any encoder and decoder, a subclass, its own prior or
      posterior) instead of the network the config describes; `image_shape` is
      taken from the data. Load it again with `vae_jax.load(workdir, module=module)`.
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
  experiment_lib.check_config(config)
  workdir = pathlib.Path(workdir)
  if parallel.is_main_process() and workdir.is_dir():  # A busy workdir: refused at once.
    lock_lib.WorkdirLock(workdir).check_free()
  config = _with_saved_dataset(config, workdir)
  say = _printer(verbose)
  say(f"reading the data ({_data_words(config)}) for {workdir} ...")
  dataset = data.load(data.settings(config), say=say)
  placement, why = streaming.choose_placement(config.data_placement, dataset,
                                              config.device_data_budget)
  if config.conditional and placement == "stream":
    raise UsageError(f"conditional=True reads the labels with the device-resident training set "
                     f"only, and the data would be streamed ({why}); use a smaller data set")
  if placement == "device":  # Streamed, neither split need fit the devices.
    data.check_fits(dataset)
  config, family = experiment_lib.resolve(config, dataset, _with_shape(module, dataset))
  return _run(config, family, dataset, placement, why, workdir, verbose=verbose,
              should_stop=should_stop)


def train_stage(workdir, stage: str, overrides: dict | None = None, *, verbose: bool = True,
                should_stop: Callable[[], bool] | None = None) -> RunResult:
  """Trains (or resumes) a later stage of the models trained in `workdir`, in `workdir/STAGE`.

  For a family that trains in more than one stage (`Family.stages`, e.g. a prior
  fitted on a trained encoder's codes). The stage's config is the first stage's
  config.json with `overrides`; its models start from each first-stage model's
  variables at the newest intact checkpoint, kept frozen (`Family.init`'s
  `frozen`), which its config.json records as `parent_step`. It holds the
  workdir's lock, so the first stage cannot train meanwhile.

  Args:
    workdir: a workdir the family's first stage trained in.
    stage: one of the family's `stages`.
    overrides: config fields of the stage (its own, and e.g. num_epochs, learning_rate).
    verbose, should_stop: as for `train_and_evaluate`.

  Raises:
    UsageError: no trained first stage in `workdir`, a family without that stage,
      a stage trained on another checkpoint of the first stage (the first trained
      further), an invalid override, or one of a field that fixes the first stage's
      shapes.
  """
  workdir = pathlib.Path(workdir)
  parent = checkpoints.read_config(workdir) if workdir.is_dir() else None
  if parent is None or not checkpoints.Checkpointer(workdir, create=False).all_steps():
    raise UsageError(f"no trained model in {workdir} to train its {stage} on: train the first "
                     f"stage there first (vae-jax train --workdir={workdir})")
  if parent.get("stage"):
    raise UsageError(f"{workdir} holds the {parent.stage} stage of a run; pass the run's workdir")
  schema.stage_class(schema.family_class(parent), stage)  # Refuses a family without it.
  if parent.get("model") == checkpoints.CUSTOM_MODEL:
    raise UsageError(f"{workdir} was trained with a user-defined module; later stages are built "
                     "for the config's networks")
  config = ml_collections.ConfigDict(parent.to_dict())
  fixed = schema.shapes(parent.family)  # The frozen first stage's: its checkpoint's shapes.
  for name, value in (overrides or {}).items():
    if name not in config:
      raise UsageError(f"unknown config field {name!r}")
    if name in fixed and schema.hashable(value) != schema.hashable(parent[name]):
      raise UsageError(f"{name} fixes the shapes of the model trained in {workdir} "
                       f"({name}={parent[name]!r}); its {stage} stage keeps them")
    config[name] = value
  config.stage = stage
  experiment_lib.check_config(config)
  _, _, items, step = trained_lib.load_stacked(workdir)
  frozen = [stacked.index(items, i) for i in range(parent.num_models)]
  frozen = [{"params": f["params"], **f.get("model_state", {})} for f in frozen]
  run_dir = workdir / stage
  saved = checkpoints.read_config(run_dir) if run_dir.is_dir() else None
  if saved is not None and saved.get("parent_step") != step:
    raise UsageError(f"{workdir} has trained further since its {stage} was fitted (now step "
                     f"{step}, then {saved.get('parent_step')}); move {run_dir} away to fit "
                     "it again")
  config.parent_step = step
  dataset = data.load(data.settings(config), say=_printer(verbose))
  placement, why = streaming.choose_placement(config.data_placement, dataset,
                                              config.device_data_budget)
  config, family = experiment_lib.resolve(config, dataset)
  return _run(config, family, dataset, placement, why, run_dir, lock_dir=workdir,
              frozen=frozen, verbose=verbose, should_stop=should_stop)


def _run(config, family, dataset, placement: str, why: str, run_dir: pathlib.Path, *,
         lock_dir: pathlib.Path | None = None, frozen: list | None = None,
         verbose: bool = True, should_stop=None) -> RunResult:
  """Trains `family` in `run_dir`, holding the lock of `lock_dir` (default run_dir)."""
  if run_dir.exists() and not run_dir.is_dir():
    raise UsageError(f"--workdir {run_dir} is a file, not a folder")
  if config.disentanglement_every:
    disentanglement_eval.check_run(family, dataset)
  with contextlib.ExitStack() as stack:
    if should_stop is None:
      should_stop = stack.enter_context(stopping.StopRequest().installed())
    stack.enter_context(parallel.matmul_precision(config))
    ckpt = stack.enter_context(_workdir_lock(lock_dir or run_dir, run_dir,
                                             config.keep_checkpoints))
    reporter = reporting.Reporter(run_dir, parallel.is_main_process(), config.num_models,
                                  verbose)
    stack.callback(reporter.close)
    experiment = Experiment.build(config, family, dataset, placement=placement, frozen=frozen)
    stack.callback(experiment.close)
    if config.data_placement == "auto" and placement == "stream":  # Worth a line: slower.
      reporter.say(f"streaming the training and test sets from the host: {why}")
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


def _data_words(config) -> str:
  """What a run is about to read, in a few words, before it has read it."""
  if config.data_dir:
    return config.data_dir
  return config.dataset or "mnist, or the shipped digits offline"


def _printer(verbose: bool):
  """Prints a line on stdout when `verbose`, from process 0 only."""
  return lambda message: (verbose and parallel.is_main_process()
                          and print(message, flush=True))


def _with_shape(module, dataset):
  """A user's module for the data's image shape (refused if built for another)."""
  if module is None:
    return None
  if module.image_shape is not None and tuple(module.image_shape) != tuple(dataset.image_shape):
    raise UsageError(f"the model is built for images of shape {tuple(module.image_shape)}, "
                     f"the data has {tuple(dataset.image_shape)}")
  return module.clone(image_shape=tuple(dataset.image_shape))


@contextlib.contextmanager
def _workdir_lock(workdir: pathlib.Path, run_dir: pathlib.Path, keep: int):
  """Holds the workdir's lock (process 0) for the run; yields the Checkpointer of `run_dir`
  (the workdir, or the folder of a later stage inside it)."""
  holder = lock_lib.WorkdirLock(workdir)
  error = None
  if parallel.is_main_process():
    try:
      workdir.mkdir(parents=True, exist_ok=True)
      holder.acquire()
      run_dir.mkdir(parents=True, exist_ok=True)
    except UsageError as e:
      error = e
    except OSError as e:
      error = UsageError(f"cannot write to --workdir {workdir}: {e.strerror or e}")
  if parallel.any_process(error is not None):  # Every process gives up together.
    raise error or UsageError(f"process 0 could not lock --workdir {workdir}")
  try:
    yield checkpoints.Checkpointer(run_dir, keep=keep)
  finally:
    holder.release()


def _train(exp: Experiment, ckpt: checkpoints.Checkpointer, reporter: reporting.Reporter,
           stop: stopping.Stopper, dataset: data.Dataset) -> RunResult:
  """The loop: resume, then per epoch train, evaluate, record, checkpoint."""
  config, spe = exp.config, exp.steps_per_epoch
  state = _restore_or_create(exp, ckpt)
  epoch, pending = _position(state, spe, reporter)
  if epoch >= config.num_epochs:
    reporter.say(f"{reporter.workdir}: already trained for {counted(epoch, 'epoch')} (checkpoint "
                 f"step {ckpt.last_good_step or ckpt.latest_step()}); nothing to do. Raise "
                 "--config.num_epochs to train "
                 "further.")
    return RunResult(state, epoch, already_done=True)
  if state.steps_done:
    where = (f"the evaluation of epoch {epoch + 1}" if pending
             else f"epoch {epoch + 1} of {config.num_epochs}")
    reporter.say(f"resuming from step {state.steps_done} ({where})")
  reporter.keep_epochs(epoch)
  truth = data.ground_truth(dataset) if config.disentanglement_every else None
  for line in exp.family.data_warnings(len(dataset.train.images)):
    reporter.warn(f"warning: {line}")
  stop()  # From here on a signal stops between chunks (the first poll of a StopRequest).
  reporter.say(f"compiling the training step ({len(dataset.train.images):,} training images "
               f"of {dataset.name} read) ...")
  compile_seconds = exp.runner.compile(state, *exp.keys.epoch(epoch), exp.hyper)
  reporter.say(_start_line(exp, state, dataset, compile_seconds))
  first, huge = True, False
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
    if truth is not None and _due(epoch, config.disentanglement_every, config.num_epochs):
      for r, scores in zip(records, disentanglement_eval.epoch_scores(
          exp.family, config, state.params, state.model_state, parallel.to_host(state.alive),
          state.steps_done, truth)):
        r.update(scores)
    reporter.write_metrics(records, tuple(exp.model_settings[0]) if exp.num_models > 1 else ())
    huge = huge or _warn_of_huge_losses(records, epoch, reporter)
    if (epoch + 1) % config.checkpoint_every_epochs == 0 or epoch + 1 == config.num_epochs:
      _save(exp, state, ckpt, reporter)
    reporter.say(reporting.epoch_line(records, config.num_epochs, exp.family.labels))
  reporter.say(_where_line(reporter.workdir, ckpt))
  return RunResult(state, config.num_epochs)


def _due(epoch: int, every: int, num_epochs: int) -> bool:
  """Whether a per-N-epochs evaluation runs after 0-based `epoch`: every N, and the last."""
  return (epoch + 1) % every == 0 or epoch + 1 == num_epochs


HUGE_LOSS = 1e30  # A finite loss above this is a diverging model, not a bad fit.


def _warn_of_huge_losses(records: list[dict], epoch: int, reporter) -> bool:
  """Warns (once per run: returns whether it did) about a finite loss above `HUGE_LOSS`."""
  for r in records:
    for name in ("train_loss", "test_loss"):
      value = r.get(name)
      if value is not None and abs(value) > HUGE_LOSS:
        which = f"model {r['model']}'s " if len(records) > 1 else ""
        reporter.warn(f"warning: {which}{name} is {value:.3g} after epoch {epoch + 1}: finite, "
                      "but the model is diverging; try a lower --config.learning_rate")
        return True
  return False


def _position(state: train_state.TrainState, steps_per_epoch: int,
              reporter: reporting.Reporter) -> tuple[int, bool]:
  """(epochs done, whether the last one's evaluation is pending), from the state's step
  and what metrics.jsonl records (process 0's reading, shared with the others)."""
  full, inside = divmod(state.steps_done, steps_per_epoch)
  if inside or not full:
    return full, False
  recorded = parallel.any_process(parallel.is_main_process() and reporter.has_epoch(full))
  return (full, False) if recorded else (full - 1, True)


def _restore_or_create(exp: Experiment, ckpt: checkpoints.Checkpointer
                       ) -> train_state.TrainState:
  """The newest intact checkpoint's state, or a fresh one."""
  saved = checkpoints.read_config(ckpt.directory.parent)
  if not ckpt.all_steps():
    return exp.create_state()
  if saved is not None:
    checkpoints.check_same_model(saved, exp.config, ckpt.directory.parent)
  abstract = exp.abstract_state()
  try:
    items, meta, _ = ckpt.restore_newest(checkpoints.array_items(abstract), set_aside=True)
  except UsageError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    raise UsageError(f"cannot restore the checkpoints in {ckpt.directory} into this model "
                     f"({str(e).splitlines()[0][:160]}); use a new --workdir") from None
  _check_steps_per_epoch(meta, exp.steps_per_epoch, ckpt)
  counters = checkpoints.counters(meta, tuple(abstract.sums))
  fields = {name: jnp.asarray(counters[name], getattr(abstract, name).dtype)
            for name in train_state.TrainState.COUNTERS}
  saved = counters["sums"]  # A metric the record lacks (a newer one) starts at 0.
  sums = {name: jnp.asarray(saved[name], jnp.float32) if name in saved else jnp.zeros(
      like.shape, jnp.float32) for name, like in abstract.sums.items()}
  return jax.device_put(train_state.TrainState(
      params=items["params"], opt_state=items["opt_state"],
      model_state=items.get("model_state", {}), sums=sums, **fields),
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
                 ) -> train_state.TrainState:
  """Trains the rest of epoch `epoch` chunk by chunk, until its end or a stop."""
  spe = exp.steps_per_epoch
  done = state.steps_done - epoch * spe
  if done % exp.runner.chunk:
    raise UsageError(f"the checkpoint at step {state.steps_done} is {done} steps into epoch "
                     f"{epoch + 1}, not at a boundary of this run's chunks of "
                     f"{exp.runner.chunk} steps; resume with the chunks_per_epoch and "
                     "data_placement it was written with")
  if done == 0:
    state = state.new_epoch()
  shuffle_keys, step_keys = exp.keys.epoch(epoch)
  batches = exp.runner.batches(shuffle_keys)
  bar = reporter.progress_bar(spe, done, f"epoch {epoch + 1}")
  seconds = 0.0  # Into the state once, after the loop: no dispatch per chunk for it.
  alive = parallel.to_host(state.alive)
  while done < spe and not stop():
    start = time.perf_counter()
    alive_before = alive
    state, _ = exp.runner.run_chunk(state, batches, step_keys, exp.hyper, done)
    alive = parallel.to_host(state.alive)  # Waits for the chunk: one sync point per chunk.
    seconds += time.perf_counter() - start
    done += exp.runner.chunk
    if (alive_before & ~alive).any():
      _report_divergence(exp, state, alive_before, alive, epoch, reporter, ckpt)
    bar.update(exp.runner.chunk)
  bar.close()
  return state.replace(seconds=state.seconds + seconds)


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
    last one with the family's bound), or None when `stop` ended the evaluation.
  """
  config, data_ = exp.config, exp.evaluation
  variables = _variables(state)
  try:
    start = time.perf_counter()
    tests = evaluation.test_metrics(exp.family, variables, exp.keys.evaluation(epoch),
                                    data_.chunks, stop=stop)
    eval_seconds = time.perf_counter() - start
    bound, bound_seconds = None, None
    every = config.eval_iwae_every
    if data_.bound_chunks and ((epoch + 1) % every == 0 or epoch + 1 == config.num_epochs):
      start = time.perf_counter()
      bound = evaluation.bound_nll(
          exp.family, variables, exp.keys.iwae(), data_.bound_chunks, k=config.eval_iwae_k,
          sample_chunk=config.iwae_sample_chunk, stop=stop,
          description=f"IWAE k={config.eval_iwae_k}" if reporter.verbose else None)
      bound_seconds = time.perf_counter() - start
  except Interrupted:
    return None
  _write_figures(exp, state, reporter, epoch + 1)
  return [_record(exp, state, i, epoch, tests[i], eval_seconds,
                  None if bound is None else (*bound[i], bound_seconds))
          for i in range(exp.num_models)]


def _variables(state: train_state.TrainState) -> dict:
  """The stacked models' variables: their params and non-gradient collections."""
  return {"params": state.params, **state.model_state}


def _record(exp: Experiment, state, i: int, epoch: int, tests: dict, eval_seconds: float,
            bound: tuple | None) -> dict:
  """Model i's metrics record of an epoch, from the state and the evaluation: `train_NAME`
  and `test_NAME` for each metric the family returns, the bound, the schedules, times."""
  spe, steps = exp.steps_per_epoch, state.steps_done
  alive = bool(state.alive[i])
  seconds = float(state.seconds[i])
  family = exp.family
  means = {name: np.asarray(total[i], np.float64) / spe for name, total in state.sums.items()}
  trained = {f"train_{name}": value if alive else None
             for name, value in family.epoch_metrics(means).items()}
  tests = family.epoch_metrics(tests)
  record = {"epoch": epoch + 1, "step": steps, "model": i,
            **(dict(exp.model_settings[i]) if exp.num_models > 1 else {}),
            **trained, **{f"test_{name}": tests[name] for name in _headline_first(exp, tests)},
            "epoch_seconds": seconds,
            "examples_per_second": exp.runner.examples_per_epoch / seconds,
            "eval_seconds": eval_seconds,
            **exp.family.schedules(steps, exp.model_settings[i])}
  if exp.step.skip_threshold:
    record["skipped_updates"] = int(state.skipped[i])
  if not alive:
    record["diverged_at_step"] = int(state.diverged_at[i])
  if bound is not None:
    name = f"test_{exp.family.bound_metric}"
    record.update({name: bound[0], f"{name}_stderr": bound[1],
                   "iwae_k": exp.config.eval_iwae_k, "iwae_seconds": bound[2]})
  # NaN and infinities (a diverged model's losses) as None: JSON has no NaN.
  return {k: None if isinstance(v, float) and not np.isfinite(v) else v
          for k, v in record.items()}


def _headline_first(exp: Experiment, tests: dict) -> list[str]:
  """The test metrics' names, the family's headline first, then alphabetical."""
  return sorted(tests, key=lambda name: (name != exp.family.headline, name))


def _write_figures(exp: Experiment, state, reporter, epoch: int) -> None:
  originals, labels = exp.evaluation.figure_inputs, exp.evaluation.figure_labels
  figures = parallel.to_host(experiment_lib.figure_images(
      exp.family, _variables(state), originals, exp.keys.stream(KeyStreams.FIGURES), labels))
  reporter.write_figures(epoch, state.steps_done, figures)


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
  settings = exp.family.settings_text()
  placement = ("streamed from the host" if isinstance(exp.runner, epoch_lib.StreamedRunner)
               else "on the device")
  return (f"{exp.family.describe(params)}{f'; {settings}' if settings else ''}"
          f"{f' x {exp.num_models} models' if exp.num_models > 1 else ''}; "
          f"{len(dataset.train.images):,} training images of {dataset.name} ({placement}), "
          f"{exp.steps_per_epoch} steps of "
          f"{config.batch_size} per epoch on {jax.device_count()} {jax.devices()[0].platform} "
          f"device(s); compiled in {compile_seconds:.1f} s")


def _where_line(workdir: pathlib.Path, ckpt) -> str:
  return (f"done. images: {workdir / 'images'}  metrics: {workdir / 'metrics.jsonl'}  "
          f"checkpoints: {ckpt.directory} (latest step {ckpt.latest_step()})  "
          f"TensorBoard: tensorboard --logdir {workdir / 'tensorboard'}")
