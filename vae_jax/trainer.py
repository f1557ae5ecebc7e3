"""Training library: the on-device epoch, evaluation, and the driver.

`train_and_evaluate(config, workdir)` is what `python -m vae_jax.train` runs;
notebooks call it directly. The training set lives in device memory; each
epoch is shuffled there and stepped through with `lax.scan`, in
`config.chunks_per_epoch` calls so that progress, non-finite checks and Ctrl-C
can act between them. Every random draw derives from `config.seed` by
`fold_in`, keyed by (epoch, step), so a resumed run draws the keys an
uninterrupted one would.
"""
import contextlib
import dataclasses
import functools
import pathlib
import signal
import threading
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax.training import train_state
from tqdm.auto import tqdm

from vae_jax import checkpoints
from vae_jax import data
from vae_jax import evaluation
from vae_jax import images
from vae_jax import model as model_lib
from vae_jax import objectives
from vae_jax import parallel
from vae_jax import reporting
from vae_jax.errors import UsageError

TrainState = train_state.TrainState

# Independent key streams from the seed: fold_in(root, stream).
INIT_STREAM, TRAIN_STREAM, EVAL_STREAM, FIGURE_STREAM, TEST_BINARIZE_STREAM = range(5)
IWAE_STREAM = 5  # The same key every epoch, so epochs' IWAE bounds compare.
NUM_RECONSTRUCTIONS = 8
NUM_SAMPLES = 64


class TrainingDiverged(RuntimeError):
  """The loss became NaN or infinite; the last good checkpoint is kept."""


def check_config(config: ml_collections.ConfigDict) -> None:
  """Raises UsageError naming the first invalid value in `config`."""
  choices = {"dataset": data.DATASETS, "binarize": ("none", "dynamic"),
             "likelihood": ("bernoulli", "gaussian"), "decoder": ("mlp", "linear")}
  for field, allowed in choices.items():
    if config[field] not in allowed:
      raise UsageError(f"unknown {field} {config[field]!r}; choose one of {', '.join(allowed)}")
  positive = ("latents", "hidden", "batch_size", "learning_rate", "obs_scale",
              "eval_batch_size", "eval_iwae_k", "iwae_sample_chunk", "iwae_example_chunk",
              "chunks_per_epoch", "keep_checkpoints", "checkpoint_every_epochs")
  for field in positive:
    if not config[field] > 0:
      raise UsageError(f"{field} must be > 0, got {config[field]}")
  for field in ("num_epochs", "eval_iwae_every"):
    if config[field] < 0:
      raise UsageError(f"{field} must be >= 0, got {config[field]}")
  for field in ("batch_size", "eval_batch_size"):
    if config[field] % jax.device_count():
      raise UsageError(f"{field}={config[field]} does not divide over "
                       f"{jax.device_count()} devices; use a multiple of {jax.device_count()}")


def resolve_config(config: ml_collections.ConfigDict, dataset: data.Dataset) -> ml_collections.ConfigDict:
  """A copy of `config` completed from the data (image_shape), checked against it."""
  if config.batch_size > len(dataset.train.images):
    raise UsageError(f"batch_size={config.batch_size} is larger than the training set "
                     f"({len(dataset.train.images)} images)")
  resolved = ml_collections.ConfigDict(config.to_dict())
  resolved.image_shape = dataset.image_shape
  return resolved


# ----------------------------------------------------------------------------
# Jitted pieces.


def create_train_state(model: model_lib.VAE, config, key: jax.Array) -> TrainState:
  """Fresh parameters and Adam state for `model`."""
  params = model_lib.init_params(model, key)
  return TrainState.create(apply_fn=model.apply, params=params,
                           tx=optax.adam(config.learning_rate))


def train_step(model: model_lib.VAE, state: TrainState, batch: jax.Array, key: jax.Array,
               binarize: bool) -> tuple[TrainState, jax.Array]:
  """One Adam step on the mean negative ELBO of a uint8 batch (B, D)."""
  z_key, binarize_key = jax.random.split(key)
  x = data.to_unit_interval(batch)
  if binarize:
    x = data.binarize(binarize_key, x)

  def loss_fn(params):
    return jnp.mean(objectives.negative_elbo(model, params, x, z_key)["loss"])

  loss, grads = jax.value_and_grad(loss_fn)(state.params)
  return state.apply_gradients(grads=grads), loss


@functools.partial(jax.jit, static_argnames=("model", "num_steps", "binarize"),
                   donate_argnames=("state",))
def train_chunk(model, state, batches, steps_key, start, *, num_steps: int, binarize: bool):
  """Runs steps `start .. start + num_steps - 1` of an epoch with `lax.scan`.

  Args:
    model: the VAE (static).
    state: the train state; its buffers are donated.
    batches: the epoch's shuffled uint8 batches, (steps_per_epoch, B, D).
    steps_key: the epoch's key; step i draws from `fold_in(steps_key, i)`.
    start: index of the first step, a scalar.
    num_steps: steps to run (static).
    binarize: draw binary pixels per step (static).

  Returns:
    The new state and the losses of the steps, (num_steps,).
  """
  def body(state, i):
    step = start + i
    batch = jax.lax.dynamic_index_in_dim(batches, step, keepdims=False)
    return train_step(model, state, batch, jax.random.fold_in(steps_key, step), binarize)

  return jax.lax.scan(body, state, jnp.arange(num_steps))


@functools.partial(jax.jit, static_argnames=("num_examples", "batch_size", "sharding"))
def shuffle_batches(images_u8, key, *, num_examples: int, batch_size: int, sharding):
  """A fresh permutation of the first `num_examples` rows, cut into full batches.

  Returns:
    uint8 (num_examples // batch_size, batch_size, D), each batch sharded over
    the devices by `sharding`. The last `num_examples % batch_size` examples of
    the permutation are dropped this epoch.
  """
  steps = num_examples // batch_size
  perm = jax.random.permutation(key, num_examples)[:steps * batch_size]
  batches = images_u8[perm].reshape(steps, batch_size, -1)
  return jax.lax.with_sharding_constraint(batches, sharding)


@functools.partial(jax.jit, static_argnames=("model",))
def evaluate(model, params, chunks, mask, key) -> dict[str, jax.Array]:
  """Mean single-sample negative ELBO, recon and KL over the masked examples.

  Args:
    chunks: uint8 (C, E, D) test images, zero-padded; `mask` (C, E) marks the
      real ones. Chunk c draws z from `fold_in(key, c)`.
  """
  def body(totals, inputs):
    c, batch, weight = inputs
    terms = objectives.negative_elbo(
        model, params, data.to_unit_interval(batch), jax.random.fold_in(key, c))
    return {k: totals[k] + jnp.sum(terms[k] * weight) for k in totals}, None

  zeros = {k: jnp.zeros((), jnp.float32) for k in ("loss", "recon", "kl")}
  totals, _ = jax.lax.scan(body, zeros, (jnp.arange(len(chunks)), chunks, mask))
  return {k: v / jnp.sum(mask) for k, v in totals.items()}


@functools.partial(jax.jit, static_argnames=("model", "num_samples"))
def figure_images(model, params, x, key, *, num_samples: int):
  """Posterior-mean reconstructions of `x` (N, D) and `num_samples` prior samples.

  Returns:
    (reconstructions (N, D), samples (num_samples, D)), E[x|z] in [0, 1].
  """
  def run(module):
    mean, _ = module.encode(x)
    z = jax.random.normal(key, (num_samples, module.latents))
    return module.mean_image(module.decode(mean)), module.mean_image(module.decode(z))

  return model.apply({"params": params}, method=run)


# ----------------------------------------------------------------------------
# The driver.


@dataclasses.dataclass
class RunResult:
  """What `train_and_evaluate` did."""

  state: TrainState
  epochs_done: int
  interrupted_by: int | None = None  # The signal that stopped training early.
  already_done: bool = False


@dataclasses.dataclass(frozen=True)
class _DeviceData:
  train: jax.Array  # uint8 (N_padded, D), examples sharded.
  num_train: int
  eval_chunks: jax.Array  # uint8 (C, E, D), examples sharded.
  eval_mask: jax.Array  # float32 (C, E).
  figure_inputs: jax.Array  # uint8 (8, D), replicated.


def train_and_evaluate(config: ml_collections.ConfigDict, workdir, *, verbose: bool = True) -> RunResult:
  """Trains (or resumes) the VAE of `config` in `workdir`, evaluating every epoch.

  Raises:
    UsageError: invalid config, data or workdir.
    TrainingDiverged: a non-finite loss; the workdir keeps its last good checkpoint.
  """
  check_config(config)
  dataset = data.load(config)
  config = resolve_config(config, dataset)
  workdir = pathlib.Path(workdir)
  saved = checkpoints.read_config(workdir)
  ckpt = checkpoints.Checkpointer(workdir, keep=config.keep_checkpoints)
  if saved is not None and ckpt.latest_step() is not None:
    checkpoints.check_same_model(saved, config, workdir)

  mesh = parallel.make_mesh()
  model = model_lib.from_config(config, dataset.image_shape)
  root = jax.random.key(config.seed)
  state, progress = _init_or_restore(model, config, mesh, ckpt, root)
  steps_per_epoch = len(dataset.train.images) // config.batch_size
  if progress["epoch"] >= config.num_epochs:
    _say(verbose, f"{workdir}: already trained for {progress['epoch']} epochs "
         f"(checkpoint step {ckpt.latest_step()}); nothing to do. "
         "Raise --config.num_epochs to train further.")
    return RunResult(state, progress["epoch"], already_done=True)

  main = parallel.is_main_process()
  if main:
    workdir.mkdir(parents=True, exist_ok=True)
    checkpoints.write_config(workdir, config)
  reporter = reporting.Reporter(workdir, main)
  reporter.forget_after(progress["epoch"])
  device_data = _place_data(dataset, config, mesh)
  chunk = _chunk_size(steps_per_epoch, config.chunks_per_epoch)
  start = time.perf_counter()
  epoch_fns = _compile_epoch(model, state, device_data, config, chunk, mesh)
  compile_seconds = time.perf_counter() - start
  _say(verbose, f"{model_lib.describe(model, state.params)}; {device_data.num_train:,} training "
       f"images, {steps_per_epoch} steps of {config.batch_size} per epoch on "
       f"{jax.device_count()} {jax.devices()[0].platform} device(s); "
       f"compiled in {compile_seconds:.1f} s")

  train_key = jax.random.fold_in(root, TRAIN_STREAM)
  interrupted = False
  with _stop_requested() as stop:
    for epoch in range(progress["epoch"], config.num_epochs):
      epoch_key = jax.random.fold_in(train_key, epoch)
      state, progress, train_loss, seconds = _train_epoch(
          epoch_fns, state, progress, device_data, epoch_key, chunk, steps_per_epoch, stop,
          ckpt, verbose)
      if progress["epoch"] == epoch:  # Stopped before the end of the epoch.
        ckpt.save(int(state.step), state, progress)
        interrupted = True
        break
      record = {"epoch": epoch + 1, "step": int(state.step), "train_loss": train_loss,
                "epoch_seconds": seconds,
                "examples_per_second": steps_per_epoch * config.batch_size / seconds}
      if compile_seconds is not None:  # The first epoch of this process.
        record["compile_seconds"], compile_seconds = compile_seconds, None
      record.update(_evaluate_and_draw(model, state, device_data, root, epoch, reporter,
                                       config))
      reporter.write_metrics(record)
      if (epoch + 1) % config.checkpoint_every_epochs == 0 or epoch + 1 == config.num_epochs:
        ckpt.save(int(state.step), state, progress)
      _say(verbose, _summary_line(record, config.num_epochs))
      if stop.is_set():
        ckpt.save(int(state.step), state, progress)
        interrupted = epoch + 1 < config.num_epochs
        break
  reporter.close()
  if interrupted:
    _say(verbose, f"interrupted after {progress['epoch']} epochs and {progress['step_in_epoch']} "
         f"steps; checkpoint saved at step {int(state.step)}. Rerun the same command to resume.")
  else:
    _say(verbose, _where_line(workdir, ckpt))
  return RunResult(state, progress["epoch"], interrupted_by=stop.signum if interrupted else None)


def _init_or_restore(model, config, mesh, ckpt, root):
  """The latest checkpoint's (state, progress), or a fresh state at epoch 0."""
  create = functools.partial(create_train_state, model, config, jax.random.fold_in(root, INIT_STREAM))
  if ckpt.latest_step() is None:
    return jax.device_put(create(), parallel.replicated(mesh)), {
        "epoch": 0, "step_in_epoch": 0, "loss_sum": 0.0}
  # Shapes only: running the initialisers op by op costs seconds of small compilations.
  abstract = checkpoints.abstract_like(jax.eval_shape(create), parallel.replicated(mesh))
  try:
    return ckpt.restore(abstract)
  except UsageError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    raise UsageError(f"cannot restore the checkpoint in {ckpt.directory} into this model "
                     f"({str(e).splitlines()[0][:160]}); use a new --workdir") from None


def evaluation_inputs(images: np.ndarray, config) -> np.ndarray:
  """The uint8 (N, D) inputs every evaluation of `images` (N, H, W) uses.

  With `binarize=dynamic` they are binarised once, with a key fixed by the
  seed, so that epochs, runs and `python -m vae_jax.evaluate` all compare.
  """
  flat = images.reshape(len(images), -1)
  if config.binarize != "dynamic":
    return flat
  key = jax.random.fold_in(jax.random.key(config.seed), TEST_BINARIZE_STREAM)
  return np.asarray(data.binarize(key, data.to_unit_interval(flat)) * 255).astype(np.uint8)


def _place_data(dataset, config, mesh) -> _DeviceData:
  """Copies train and test images to the devices, uint8, examples sharded."""
  n = jax.device_count()
  flat_train = dataset.train.images.reshape(len(dataset.train.images), -1)
  train = parallel.put(parallel.pad_to_multiple(flat_train, n), parallel.sharded(mesh, 0, 2))
  test = evaluation_inputs(dataset.test.images, config)
  e = config.eval_batch_size
  padded = parallel.pad_to_multiple(test, e)
  mask = np.arange(len(padded)) < len(test)
  chunks = parallel.put(padded.reshape(-1, e, padded.shape[-1]), parallel.sharded(mesh, 1, 3))
  mask = parallel.put(mask.reshape(-1, e).astype(np.float32), parallel.sharded(mesh, 1, 2))
  figure_inputs = parallel.put(test[:NUM_RECONSTRUCTIONS], parallel.replicated(mesh))
  return _DeviceData(train, len(flat_train), chunks, mask, figure_inputs)


def _chunk_size(steps: int, chunks: int) -> int:
  """The divisor of `steps` closest to `steps / chunks`: one compiled chunk length."""
  divisors = [d for d in range(1, steps + 1) if steps % d == 0]
  return min(divisors, key=lambda d: (abs(steps / d - chunks), -d))


@dataclasses.dataclass(frozen=True)
class _EpochFns:
  """The compiled pieces of an epoch, their static arguments bound."""

  shuffle: object  # (train images, key) -> batches (S, B, D)
  chunk: object  # (state, batches, steps key, start) -> (state, losses)


def _compile_epoch(model, state, device_data, config, chunk, mesh) -> _EpochFns:
  """Compiles the shuffle and the train chunk ahead of time, so that compile
  time is measured apart from the first epoch's."""
  batches_sharding = parallel.sharded(mesh, 1, 3)
  key = jax.random.key(0)
  shuffle = shuffle_batches.lower(
      device_data.train, key, num_examples=device_data.num_train,
      batch_size=config.batch_size, sharding=batches_sharding).compile()
  batches = shuffle.out_info
  batches = jax.ShapeDtypeStruct(batches.shape, batches.dtype, sharding=batches_sharding)
  step = train_chunk.lower(model, state, batches, key, jnp.int32(0), num_steps=chunk,
                           binarize=config.binarize == "dynamic").compile()
  return _EpochFns(shuffle, step)


def _train_epoch(fns: _EpochFns, state, progress, device_data, epoch_key, chunk,
                 steps_per_epoch, stop, ckpt, verbose):
  """Runs the rest of one epoch chunk by chunk.

  Returns:
    (state, progress, mean train loss, seconds). `progress["step_in_epoch"]` is
    0 after a full epoch and the position reached when `stop` was set inside it.
  """
  epoch = progress["epoch"]
  shuffle_key, steps_key = jax.random.split(epoch_key)
  start_time = time.perf_counter()
  batches = fns.shuffle(device_data.train, shuffle_key)
  step, loss_sum = progress["step_in_epoch"], progress["loss_sum"]
  bar = tqdm(total=steps_per_epoch, initial=step, desc=f"epoch {epoch + 1}", unit="step",
             leave=False, disable=None if verbose else True)
  while step < steps_per_epoch and not stop.is_set():
    state, losses = fns.chunk(state, batches, steps_key, jnp.int32(step))
    losses = np.asarray(losses)  # Waits for the chunk: one sync point per chunk.
    if not np.isfinite(losses).all():
      bar.close()
      bad = step + int(np.argmin(np.isfinite(losses)))
      raise TrainingDiverged(
          f"non-finite loss in epoch {epoch + 1} (step {bad + 1} of {steps_per_epoch}); "
          f"training stopped, last good checkpoint kept (step {ckpt.latest_step()}). "
          "Try a lower --config.learning_rate.")
    step, loss_sum = step + chunk, loss_sum + float(losses.sum())
    bar.update(chunk)
  bar.close()
  seconds = time.perf_counter() - start_time
  if step < steps_per_epoch:
    return state, {"epoch": epoch, "step_in_epoch": step, "loss_sum": loss_sum}, None, seconds
  done = {"epoch": epoch + 1, "step_in_epoch": 0, "loss_sum": 0.0}
  return state, done, loss_sum / steps_per_epoch, seconds


def _evaluate_and_draw(model, state, device_data, root, epoch, reporter, config) -> dict:
  """Evaluates the full test set and writes this epoch's figures; returns metrics.

  Every `config.eval_iwae_every` epochs and after the last one, the metrics
  include the IWAE bound with `eval_iwae_k` samples (see `_iwae_metrics`).
  """
  start = time.perf_counter()
  eval_key = jax.random.fold_in(jax.random.fold_in(root, EVAL_STREAM), epoch)
  metrics = jax.device_get(evaluate(model, state.params, device_data.eval_chunks,
                                    device_data.eval_mask, eval_key))
  seconds = time.perf_counter() - start
  _write_figures(model, state, device_data, root, epoch + 1, reporter)
  result = {"test_loss": float(metrics["loss"]), "test_recon": float(metrics["recon"]),
            "test_kl": float(metrics["kl"]), "eval_seconds": seconds}
  every = config.eval_iwae_every
  if every and ((epoch + 1) % every == 0 or epoch + 1 == config.num_epochs):
    result.update(_iwae_metrics(model, state, device_data, root, config))
  return result


def _iwae_metrics(model, state, device_data, root, config) -> dict:
  """-log p_k(x) on the test set, k = eval_iwae_k: `test_iwae_nll` (mean) and its stderr."""
  start = time.perf_counter()
  nll, stderr = jax.device_get(evaluation.iwae_nll_on_chunks(
      model, state.params, device_data.eval_chunks, device_data.eval_mask,
      jax.random.fold_in(root, IWAE_STREAM), k=config.eval_iwae_k,
      rows=config.iwae_sample_chunk * config.iwae_example_chunk))
  return {"test_iwae_nll": float(nll), "test_iwae_nll_stderr": float(stderr),
          "iwae_k": config.eval_iwae_k, "iwae_seconds": time.perf_counter() - start}


def _write_figures(model, state, device_data, root, epoch, reporter) -> None:
  originals = data.to_unit_interval(device_data.figure_inputs)
  recon, samples = jax.device_get(figure_images(
      model, state.params, originals, jax.random.fold_in(root, FIGURE_STREAM),
      num_samples=NUM_SAMPLES))
  shape = model.image_shape
  originals = np.asarray(originals)
  pairs = np.concatenate([originals, recon]).reshape((-1, *shape))
  reporter.write_image("reconstruction", epoch, images.tile(pairs, cols=NUM_RECONSTRUCTIONS))
  reporter.write_image("sample", epoch, images.tile(samples.reshape((-1, *shape)), cols=8))


class _StopFlag:
  """Set by SIGINT/SIGTERM; the training loop checks it between chunks."""

  def __init__(self):
    self.signum = None

  def is_set(self) -> bool:
    return self.signum is not None


@contextlib.contextmanager
def _stop_requested():
  """Turns the first SIGINT/SIGTERM into a `_StopFlag`; a second one acts as usual.

  Outside the main thread (where Python allows no handlers) the flag never sets.
  """
  stop = _StopFlag()
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


def _summary_line(record: dict, num_epochs: int) -> str:
  iwae = (f"  IWAE NLL (k={record['iwae_k']}) {record['test_iwae_nll']:8.2f}"
          if "test_iwae_nll" in record else "")
  return (f"epoch {record['epoch']:>3}/{num_epochs}  test loss {record['test_loss']:8.2f}  "
          f"recon {record['test_recon']:8.2f}  KL {record['test_kl']:6.2f}{iwae}  "
          f"train loss {record['train_loss']:8.2f}  {record['epoch_seconds']:6.2f} s  "
          f"({record['examples_per_second']:,.0f} examples/s)")


def _where_line(workdir, ckpt) -> str:
  workdir = pathlib.Path(workdir)
  return (f"done. images: {workdir / 'images'}  metrics: {workdir / 'metrics.jsonl'}  "
          f"checkpoints: {ckpt.directory} (latest step {ckpt.latest_step()})  "
          f"TensorBoard: tensorboard --logdir {workdir / 'tensorboard'}")


def _say(verbose: bool, message: str) -> None:
  if verbose and parallel.is_main_process():
    print(message, flush=True)
