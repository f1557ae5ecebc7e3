"""Checkpoint and workdir I/O: orbax checkpoints that detect damage, and the resolved `config.json`.

A workdir holds `config.json` (what rebuilds the model) and `checkpoints/STEP/`
with three orbax items:
  * `params` and `opt_state`: the stacked models' arrays (leading model axis);
  * `meta`: JSON with the step, which models are alive, the trainer's
    progress within the run, and a SHA-256 digest of each array item.
A restore recomputes the digests, so truncated, deleted or overwritten files
are caught (orbax itself does not verify content); the trainer then falls
back to the newest intact checkpoint. Orbax writes each checkpoint into a
temporary folder and renames it when complete, so readers never see half of one.
"""
import dataclasses
import errno
import hashlib
import json
import pathlib
import shutil
import sys

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from vae_jax import model as model_lib
from vae_jax import parallel
from vae_jax import stacked
from vae_jax.errors import UsageError

CONFIG_FILE = "config.json"
CUSTOM_MODEL = "custom"  # config.model of a run trained with a user-defined VAE.


class DamagedCheckpoint(Exception):
  """A checkpoint's files are missing, unreadable or fail their digest."""


# ----------------------------------------------------------------------------
# config.json


def write_config(workdir, config: ml_collections.ConfigDict) -> None:
  """Writes `workdir/config.json` atomically (a temporary file, then a rename)."""
  path = pathlib.Path(workdir) / CONFIG_FILE
  temporary = path.with_name(CONFIG_FILE + ".tmp")
  temporary.write_text(json.dumps(config.to_dict(), indent=2, sort_keys=True) + "\n")
  temporary.replace(path)


def read_config(workdir) -> ml_collections.ConfigDict | None:
  """The workdir's resolved config, or None when there is none.

  Raises:
    UsageError: config.json is unreadable or not a JSON object of a run's config.
  """
  path = pathlib.Path(workdir) / CONFIG_FILE
  if not path.is_file():
    return None
  try:
    values = json.loads(path.read_text())
  except (OSError, ValueError) as e:
    raise UsageError(f"{path}: unreadable config ({_first_line(e)})") from None
  if not isinstance(values, dict) or "image_shape" not in values:
    raise UsageError(f"{path} is not the config.json of a vae_jax run (it holds "
                     f"{_describe_json(values)}); move it away or use a new --workdir")
  values["image_shape"] = tuple(values["image_shape"])
  return ml_collections.ConfigDict(values)


def _describe_json(values) -> str:
  if isinstance(values, dict):
    return "an object without image_shape" if values else "an empty object"
  return f"a JSON {type(values).__name__}"


def check_same_model(saved: ml_collections.ConfigDict, config: ml_collections.ConfigDict,
                     workdir) -> None:
  """Raises UsageError when `config` describes other parameter shapes than `saved`."""
  if CUSTOM_MODEL in (saved.get("model"), config.get("model")):
    return  # The restore itself checks a user-defined network's shapes.
  ours = model_lib.Architecture.from_config(saved)
  diffs = ours.differences(model_lib.Architecture.from_config(config))
  if saved.get("num_models", 1) != config.get("num_models", 1):
    diffs.append(f"num_models {saved.get('num_models', 1)} vs {config.get('num_models', 1)}")
  if diffs:
    raise UsageError(f"workdir {workdir} holds a checkpoint of a different model "
                     f"({'; '.join(diffs)}); use a new --workdir or the same settings")


# ----------------------------------------------------------------------------
# Digests


def digest(tree) -> str:
  """SHA-256 over a pytree's leaves: their paths, dtypes, shapes and bytes."""
  h = hashlib.sha256()
  for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
    # Replicated global arrays: every process holds the whole array.
    array = np.asarray(leaf.addressable_data(0) if isinstance(leaf, jax.Array) else leaf)
    h.update(f"{jax.tree_util.keystr(path)}|{array.dtype}|{array.shape}|".encode())
    h.update(np.ascontiguousarray(array).tobytes())
  return h.hexdigest()


# ----------------------------------------------------------------------------
# The checkpointer


class Checkpointer:
  """Saves and restores (train state, progress) under `workdir/checkpoints`.

  The state is any object with `steps_done`, `params`, `opt_state` and `alive`
  (`train_step.TrainState`); `rebuild(step, params, opt_state, alive)`
  turns restored pieces back into one.
  """

  def __init__(self, workdir, keep: int = 3, create: bool = True):
    self._manager = ocp.CheckpointManager(
        pathlib.Path(workdir).absolute() / "checkpoints",
        options=ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=create, enable_async_checkpointing=False))

  @property
  def directory(self) -> pathlib.Path:
    return pathlib.Path(self._manager.directory)

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def save(self, state, progress: dict) -> bool:
    """Writes a checkpoint at `state.steps_done` unless one exists there; returns whether it wrote.

    Raises:
      UsageError: the disk is full; the partial checkpoint is removed, older ones stay.
    """
    step = state.steps_done
    if step in self._manager.all_steps():
      return False
    meta = {"step": step, "alive": np.asarray(state.alive).tolist(), "progress": progress,
            "digests": {"params": digest(state.params), "opt_state": digest(state.opt_state)}}
    try:
      self._manager.save(step, args=ocp.args.Composite(
          params=ocp.args.StandardSave(state.params),
          opt_state=ocp.args.StandardSave(state.opt_state),
          meta=ocp.args.JsonSave(meta)), force=True)
      self._manager.wait_until_finished()
    except Exception as e:  # pylint: disable=broad-except
      self._remove_partial(step)
      if _is_disk_full(e):
        needed = sum(x.nbytes for x in jax.tree.leaves((state.params, state.opt_state)))
        raise UsageError(f"disk full while saving checkpoint {step} to {self.directory} "
                         f"(about {needed / 2**20:.1f} MiB needed); the partial checkpoint was "
                         "removed and older checkpoints are intact") from None
      raise
    return True

  def restore(self, abstract_state, rebuild, step: int | None = None):
    """Returns (state, progress) at `step` (default: the latest), verified.

    Args:
      abstract_state: the state's `jax.ShapeDtypeStruct`s (with shardings).
      rebuild: `(step, params, opt_state, alive) -> state`.
      step: the checkpoint step.

    Raises:
      UsageError: no checkpoint at `step`.
      DamagedCheckpoint: its files are missing, unreadable or altered.
    """
    step = self._existing(step)
    try:
      restored = self._manager.restore(step, args=ocp.args.Composite(
          params=ocp.args.StandardRestore(abstract_state.params),
          opt_state=ocp.args.StandardRestore(abstract_state.opt_state),
          meta=ocp.args.JsonRestore()))
    except Exception as e:  # pylint: disable=broad-except
      raise DamagedCheckpoint(_first_line(e)) from None
    meta = _checked_meta(restored.meta, step)
    _verify(restored.params, meta, "params")
    _verify(restored.opt_state, meta, "opt_state")
    state = rebuild(meta["step"], restored.params, restored.opt_state, np.asarray(meta["alive"]))
    return state, meta["progress"]

  def restore_newest_intact(self, abstract_state, rebuild, warn=None):
    """The newest checkpoint that restores and verifies: (state, progress, step), or None
    when there are no checkpoints.

    Each damaged checkpoint passed over gets one `warn` line naming its step and why.

    Raises:
      UsageError: there are checkpoints, but every one is damaged.
    """
    failures = []
    for step in reversed(self.all_steps()):
      try:
        state, progress = self.restore(abstract_state, rebuild, step)
      except DamagedCheckpoint as e:
        failures.append(f"step {step}: {e}")
        (warn or _warn)(f"warning: checkpoint {step} in {self.directory} is damaged ({e}); "
                        "trying the one before")
        continue
      return state, progress, step
    if failures:
      raise UsageError(f"every checkpoint in {self.directory} is damaged ({'; '.join(failures)}); "
                       "the files cannot be trusted. Restore them from a backup, or move "
                       "checkpoints/ away to train from scratch")
    return None

  def restore_params(self, abstract_params, step: int | None = None):
    """The `params` item alone at `step` (default: the latest), verified; the optimizer
    state is not read, so no optimizer setting can stand in the way."""
    step = self._existing(step)
    try:
      restored = self._manager.restore(step, args=ocp.args.Composite(
          params=ocp.args.StandardRestore(abstract_params), meta=ocp.args.JsonRestore()))
    except Exception as e:  # pylint: disable=broad-except
      raise DamagedCheckpoint(_first_line(e)) from None
    _verify(restored.params, _checked_meta(restored.meta, step), "params")
    return restored.params

  def close(self) -> None:
    self._manager.close()

  def _existing(self, step: int | None) -> int:
    step = self.latest_step() if step is None else step
    if step not in self._manager.all_steps():
      raise UsageError(f"no checkpoint at step {step} in {self.directory} "
                       f"(steps: {', '.join(map(str, self.all_steps())) or 'none'})")
    return step

  def _remove_partial(self, step: int) -> None:
    """Deletes what a failed save of `step` left behind (orbax's temporary folders)."""
    # `save` only writes steps that had no checkpoint, so nothing valid is lost here.
    for path in [self.directory / str(step), *self.directory.glob(f"{step}.*")]:
      shutil.rmtree(path, ignore_errors=True)
    self._manager.reload()


def _checked_meta(meta, step: int) -> dict:
  if not isinstance(meta, dict) or not {"step", "alive", "progress", "digests"} <= meta.keys():
    raise DamagedCheckpoint("its meta record is missing or incomplete")
  if meta["step"] != step:
    raise DamagedCheckpoint(f"its meta record says step {meta['step']}")
  return meta


def _verify(tree, meta: dict, item: str) -> None:
  if digest(tree) != meta["digests"].get(item):
    raise DamagedCheckpoint(f"the {item} arrays do not match their SHA-256 digest")


def _is_disk_full(e: BaseException) -> bool:
  while e is not None:
    if isinstance(e, OSError) and e.errno == errno.ENOSPC or "No space left" in str(e):
      return True
    e = e.__cause__ or e.__context__
  return False


def _first_line(e: BaseException) -> str:
  text = str(e).strip()
  return (text.splitlines()[0][:200] if text else type(e).__name__)


def _warn(message: str) -> None:
  print(message, file=sys.stderr, flush=True)


def abstract_like(tree, sharding) -> object:
  """ShapeDtypeStructs of `tree`, all placed with `sharding`."""
  return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding), tree)


# ----------------------------------------------------------------------------
# Loading a trained model


@dataclasses.dataclass(frozen=True)
class TrainedModel:
  """A trained VAE: what `load` returns and the latent-space API takes.

  Attributes:
    module: the flax module (`vae_jax.model.VAE`), hashable, so it can be a
      static argument of jitted functions.
    params: its parameters (one model, no model axis).
    config: the resolved config the workdir was trained with.
    step: the training step of the checkpoint.
    index: which of the run's stacked models this is.
  """

  module: model_lib.VAE
  params: dict
  config: ml_collections.ConfigDict | None
  step: int
  index: int = 0

  @property
  def image_shape(self) -> tuple[int, ...]:
    """(H, W, C) of the model's images."""
    return tuple(self.module.image_shape)


def load(workdir, step: int | None = None, *, model: int = 0,
         module: model_lib.VAE | None = None) -> TrainedModel:
  """Loads a model trained in `workdir`: its config and its parameters at `step`.

  Only the parameters are read, so any optimizer setting of the run is fine.

  Args:
    workdir: a folder written by `python -m vae_jax.train` or `train_and_evaluate`.
    step: the checkpoint step; default the latest.
    model: which of the run's `num_models` models (0-based).
    module: the VAE, for a run trained with a user-defined network
      (`train_and_evaluate(..., model=vae)`); built from config.json otherwise.

  Raises:
    UsageError: no config or checkpoint in `workdir`, no checkpoint at `step`,
      no such model, a user-defined network not given, or damaged files.
  """
  config = read_config(workdir)
  checkpointer = Checkpointer(workdir, create=False) if config is not None else None
  if config is None or checkpointer.latest_step() is None:
    raise UsageError(f"no trained model in {workdir}: it needs config.json and a checkpoint "
                     "(train one with python -m vae_jax.train --workdir=...)")
  module = module or _module_from_config(config, workdir)
  if module.image_shape is None:
    module = module.clone(image_shape=tuple(config.image_shape))
  num_models = config.get("num_models", 1)
  if not 0 <= model < num_models:
    raise UsageError(f"model {model} out of range: {workdir} holds {num_models} model(s) "
                     f"(0 .. {num_models - 1})")
  abstract = jax.eval_shape(lambda: model_lib.init_params(module, jax.random.key(0)))
  abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct((num_models, *a.shape), a.dtype), abstract)
  # Placed replicated over this process's devices, whatever the saving run used.
  abstract = abstract_like(abstract, parallel.replicated(parallel.make_mesh()))
  step = checkpointer.latest_step() if step is None else step
  try:
    params = checkpointer.restore_params(abstract, step)
  except DamagedCheckpoint as e:
    raise UsageError(f"checkpoint {step} in {checkpointer.directory} is damaged ({e}); "
                     f"load another with step= (steps: {checkpointer.all_steps()})") from None
  return TrainedModel(module, stacked.index(params, model), config, step, model)


def _module_from_config(config, workdir) -> model_lib.VAE:
  if config.get("model") == CUSTOM_MODEL:
    raise UsageError(f"{workdir} holds a user-defined network ({config.get('network', '?')}); "
                     "load it from Python with vae_jax.load(workdir, module=vae)")
  return model_lib.from_config(config, config.image_shape)
