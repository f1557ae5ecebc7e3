"""Checkpoint and workdir I/O: orbax checkpoints and the resolved `config.json`.

A workdir holds `config.json` (what rebuilds the model) and `checkpoints/STEP/`
with the train state and a small JSON record of progress within the run.
"""
import dataclasses
import json
import pathlib

import jax
import ml_collections
import optax
import orbax.checkpoint as ocp

from vae_jax import model as model_lib
from vae_jax import parallel
from vae_jax.errors import UsageError

CONFIG_FILE = "config.json"
# Fields that fix the parameter shapes: a checkpoint only restores into a
# model that agrees on all of them.
MODEL_FIELDS = ("image_shape", "hidden", "latents", "likelihood", "decoder", "learn_obs_scale")


def write_config(workdir, config: ml_collections.ConfigDict) -> None:
  path = pathlib.Path(workdir) / CONFIG_FILE
  path.write_text(json.dumps(config.to_dict(), indent=2, sort_keys=True) + "\n")


def read_config(workdir) -> ml_collections.ConfigDict | None:
  """The workdir's resolved config, or None when there is none."""
  path = pathlib.Path(workdir) / CONFIG_FILE
  if not path.is_file():
    return None
  try:
    values = json.loads(path.read_text())
  except (OSError, ValueError) as e:
    raise UsageError(f"{path}: unreadable config ({e})") from None
  if isinstance(values.get("image_shape"), list):
    values["image_shape"] = tuple(values["image_shape"])
  return ml_collections.ConfigDict(values)


def check_same_model(saved: ml_collections.ConfigDict, config: ml_collections.ConfigDict,
                     workdir) -> None:
  """Raises UsageError when `config` describes other parameter shapes than `saved`."""
  diffs = [f"{f} {saved.get(f)!r} vs {config.get(f)!r}"
           for f in MODEL_FIELDS if _norm(saved.get(f)) != _norm(config.get(f))]
  if diffs:
    raise UsageError(f"workdir {workdir} holds a checkpoint of a different model "
                     f"({'; '.join(diffs)}); use a new --workdir or the same settings")


def _norm(value):
  return tuple(value) if isinstance(value, (list, tuple)) else value


class Checkpointer:
  """Saves and restores (train state, progress) under `workdir/checkpoints`."""

  def __init__(self, workdir, keep: int = 3, create: bool = True):
    self._manager = ocp.CheckpointManager(
        pathlib.Path(workdir).absolute() / "checkpoints",
        options=ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=create, enable_async_checkpointing=False),
    )

  @property
  def directory(self) -> pathlib.Path:
    return pathlib.Path(self._manager.directory)

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def save(self, step: int, state, progress: dict) -> None:
    """Writes a checkpoint at `step` unless one exists there already."""
    if step in self._manager.all_steps():
      return
    self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), progress=ocp.args.JsonSave(progress)), force=True)
    self._manager.wait_until_finished()

  def restore(self, abstract_state, step: int | None = None):
    """Returns (state, progress) at `step` (default: the latest).

    Args:
      abstract_state: a pytree of `jax.ShapeDtypeStruct` (with shardings) of
        the state to fill, e.g. from `jax.eval_shape`.
    """
    step = self.latest_step() if step is None else step
    if step not in self._manager.all_steps():
      raise UsageError(f"no checkpoint at step {step} in {self.directory} "
                       f"(steps: {self.all_steps() or 'none'})")
    restored = self._manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state), progress=ocp.args.JsonRestore()))
    return restored.state, restored.progress

  def close(self) -> None:
    self._manager.close()


def abstract_like(tree, sharding) -> object:
  """ShapeDtypeStructs of `tree`, all placed with `sharding`."""
  return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding), tree)


@dataclasses.dataclass(frozen=True)
class TrainedModel:
  """A trained VAE: what `load` returns and the latent-space API takes.

  Attributes:
    module: the flax module (`vae_jax.model.VAE`), hashable, so it can be a
      static argument of jitted functions.
    params: its parameters.
    config: the resolved config the workdir was trained with.
    step: the training step of the checkpoint.
  """

  module: model_lib.VAE
  params: dict
  config: ml_collections.ConfigDict
  step: int

  @property
  def image_shape(self) -> tuple[int, ...]:
    return tuple(self.module.image_shape)


def load(workdir, step: int | None = None) -> TrainedModel:
  """Loads the model trained in `workdir`: its config and the parameters at `step`.

  Args:
    workdir: a folder written by `python -m vae_jax.train`.
    step: the checkpoint step; default the latest.

  Raises:
    UsageError: no config or no checkpoint in `workdir`, or no checkpoint at `step`.
  """
  config = read_config(workdir)
  checkpointer = Checkpointer(workdir, create=False) if config is not None else None
  if config is None or checkpointer.latest_step() is None:
    raise UsageError(f"no trained model in {workdir}: it needs config.json and a checkpoint "
                     "(train one with python -m vae_jax.train --workdir=...)")
  module = model_lib.from_config(config, config.image_shape)

  def template():
    # The optimizer state is restored too (it is part of the checkpoint) and dropped.
    params = model_lib.init_params(module, jax.random.key(0))
    return {"params": params, "opt_state": optax.adam(1.0).init(params), "step": jax.numpy.int32(0)}

  # Shapes only (running the initialisers would compile dozens of small ops), placed
  # replicated over this process's devices whatever the saving run used.
  abstract = abstract_like(jax.eval_shape(template), parallel.replicated(parallel.make_mesh()))
  restored, _ = checkpointer.restore(abstract, step)
  return TrainedModel(module, restored["params"], config, int(restored["step"]))
