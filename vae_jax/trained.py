"""A trained model: `load(workdir)` and the `TrainedModel` it returns.

    model = vae_jax.load("/tmp/vae")           # the latest intact checkpoint, model 0
    model.family, model.params, model.config   # what the latent API and evaluate take

Loading reads config.json (checked as training checks a config), builds the
family it names (`vae_jax.schema.build_family`) and restores the parameters
(and the family's non-gradient state, where it has any) of one of the run's
models. It imports no optimizer and no training code.
"""
import dataclasses
import pathlib
import warnings

import jax
import ml_collections

from vae_jax import checkpoints
from vae_jax import parallel
from vae_jax import schema
from vae_jax import stacked
from vae_jax import sweep
from vae_jax.errors import UsageError
from vae_jax.families import base
from vae_jax.families import vae as vae_family


@dataclasses.dataclass(frozen=True)
class TrainedModel:
  """A trained model: what `load` returns and the latent-space API takes.

  Attributes:
    family: the model family (`vae_jax.families.base.Family`), hashable, so it can
      be a static argument of jitted functions.
    params: its parameters (one model, no model axis).
    config: the resolved config the workdir was trained with.
    step: the training step of the checkpoint.
    index: which of the run's stacked models this is.
    state: the family's non-gradient collections (`{}` for most families).
  """

  family: base.Family
  params: dict
  config: ml_collections.ConfigDict | None
  step: int
  index: int = 0
  state: dict = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    if not isinstance(self.family, base.Family):  # A VAE module, as before families existed.
      warnings.warn("TrainedModel(module, ...) now takes the family first: "
                    "TrainedModel(vae_jax.families.vae.GaussianVAE(module), ...)",
                    DeprecationWarning, stacklevel=3)
      object.__setattr__(self, "family", vae_family.GaussianVAE(self.family))

  @property
  def module(self):
    """The family's flax module (for the Gaussian VAE, `vae_jax.VAE`)."""
    return self.family.module

  @property
  def variables(self) -> dict:
    """`{"params": params, **state}`: what the module applies with."""
    return {"params": self.params, **self.state}

  @property
  def image_shape(self) -> tuple[int, ...]:
    """(H, W, C) of the model's images."""
    return tuple(self.family.image_shape)


def load(workdir, step: int | None = None, *, index: int = 0, module=None,
         model: int | None = None) -> TrainedModel:
  """Loads a model trained in `workdir`: its config and its parameters at `step`.

  Only the parameters (and a family's non-gradient state) are read, so any
  optimizer setting of the run is fine.

  Args:
    workdir: a folder written by `vae-jax train` or `train_and_evaluate`.
    step: the checkpoint step; default the latest.
    index: which of the run's `num_models` models (0-based).
    module: the flax module, for a run trained with a user-defined network
      (`train_and_evaluate(..., module=vae)`); built from config.json otherwise.
    model: the old name of `index` (deprecated).

  Raises:
    UsageError: no config or checkpoint in `workdir`, a config.json with a bad
      value, no checkpoint at `step`, no such model, a user-defined network not
      given, or damaged files (without `step`, a damaged newest checkpoint is
      passed over with a warning, as training does, and the newest intact one
      loaded).
  """
  if model is not None:
    warnings.warn("vae_jax.load(workdir, model=i) is now load(workdir, index=i)",
                  DeprecationWarning, stacklevel=2)
    index = model
  config, family, items, step = load_stacked(workdir, step, module=module)
  if not 0 <= index < config.num_models:
    raise UsageError(f"model {index} out of range: {workdir} holds {config.num_models} model(s) "
                     f"(0 .. {config.num_models - 1})")
  return TrainedModel(family, stacked.index(items["params"], index), config, step, index,
                      stacked.index(items.get("model_state", {}), index))


def load_for(workdir, capability: str, what: str, step: int | None = None, *, index: int = 0,
             module=None) -> TrainedModel:
  """The model of `workdir` that has `capability`: the first stage's where it has it, else
  the last of its later stages (in the family's order) that is trained and has it: e.g.
  `DIR/prior`, the prior over a VQ-VAE's codes, for sampling and the bound on log p(x).

  Args:
    workdir: a folder written by `vae-jax train`.
    capability: a `Capability` value.
    what: what needs it, for the error (e.g. "sampling").
    step: the checkpoint step of the model returned; default the latest.
    index, module: as for `load`.

  Raises:
    UsageError: as `load`; or neither the first stage nor a trained later stage has
      `capability` (one line naming the stages to train).
  """
  config = checkpoints.read_config(workdir)
  if config is None or config.get("stage"):
    return load(workdir, step, index=index, module=module)  # Refuses, or a stage itself.
  family = family_of(config, workdir, module)
  if family.can(capability):
    return load(workdir, step, index=index, module=module)
  for stage in reversed(family.stages):
    stage_dir = pathlib.Path(workdir) / stage
    saved = checkpoints.read_config(stage_dir) if stage_dir.is_dir() else None
    if saved is not None and checkpoints.Checkpointer(stage_dir, create=False).all_steps():
      model = load(stage_dir, step, index=index)
      if model.family.can(capability):
        return model
  how = "".join(f"; train its {stage} stage first ({_stage_command(workdir, stage)})"
                for stage in family.stages)
  raise UsageError(f"{what} needs {capability}, which family {family.name} does not have"
                   f"{how}")


def _stage_command(workdir, stage: str) -> str:
  """How to train a later stage: its command where it has one."""
  if stage == "prior":
    return f"vae-jax train-prior --workdir={workdir}"
  return f"vae_jax.train.train_stage({str(workdir)!r}, {stage!r})"


def load_stacked(workdir, step: int | None = None, *, module=None):
  """Every model of a run at `step` (default: the newest intact checkpoint).

  Returns:
    (the config, the family, the arrays `params` (and `model_state`) stacked over the
    run's models, the step).

  Raises:
    UsageError: as `load`.
  """
  config = checkpoints.read_config(workdir)
  checkpointer = checkpoints.Checkpointer(workdir, create=False) if config is not None else None
  if config is None or checkpointer.latest_step() is None:
    raise UsageError(f"no trained model in {workdir}: it needs config.json and a checkpoint "
                     "(train one with vae-jax train --workdir=...)")
  family = family_of(config, workdir, module)
  abstract = _abstract(family, config)
  try:
    if step is None:  # The newest intact one, as training resumes from.
      items, _, step = checkpointer.restore_newest(abstract, set_aside=False)
    else:
      items = checkpointer.restore(abstract, step)[0]
  except checkpoints.DamagedCheckpoint as e:
    raise UsageError(f"checkpoint {step} in {checkpointer.directory} is damaged ({e}); "
                     f"load another with step= (steps: {checkpointer.all_steps()})") from None
  except checkpoints.OtherLayout as e:  # config.json agrees with itself, not with the arrays.
    detail = getattr(e, "detail", str(e))
    raise UsageError(f"{pathlib.Path(workdir) / checkpoints.CONFIG_FILE} describes other "
                     f"parameter shapes than the checkpoints hold ({detail}); was it edited? "
                     "Restore the values the run was trained with") from None
  return config, family, items, step


def _abstract(family: base.Family, config) -> dict:
  """The array items to restore, as shapes: the stacked params (and model_state), placed
  replicated over this process's devices, whatever the saving run used."""
  num_models, frozen = config.num_models, None
  if config.get("stage"):  # A later stage keeps the stage before's variables.
    first = ml_collections.ConfigDict({**config.to_dict(), "stage": ""})
    frozen = schema.build_family(first, sweep.model_settings(first)).variable_shapes()
  variables = dict(family.variable_shapes(frozen))
  params = variables.pop("params")
  stack = lambda tree: jax.tree.map(
      lambda a: jax.ShapeDtypeStruct((num_models, *a.shape), a.dtype), tree)
  items = {"params": stack(params)}
  if jax.tree.leaves(variables):
    items["model_state"] = stack(variables)
  sharding = parallel.replicated(parallel.make_mesh())
  return {item: checkpoints.abstract_like(tree, sharding) for item, tree in items.items()}


def family_of(config: ml_collections.ConfigDict, workdir, module=None) -> base.Family:
  """The family config.json describes, with the user's `module` where the run trained one
  (which must be the module it trained: its class and parts are compared with config.json's).

  Raises:
    UsageError: a user-defined module not given, or another one than the run's.
  """
  custom = config.get("model") == checkpoints.CUSTOM_MODEL
  if custom and module is None:
    raise UsageError(f"{workdir} holds a user-defined network ({config.get('network', '?')}); "
                     "load it from Python with vae_jax.load(workdir, module=vae)")
  if module is not None and module.image_shape is None:
    module = module.clone(image_shape=tuple(config.image_shape))
  family = schema.build_family(config, sweep.model_settings(config), module)
  if custom:
    diffs = family.signature_differences(config)
    if diffs:
      raise UsageError(f"{workdir} was trained with another model than the module given "
                       f"({'; '.join(diffs)}); pass the module it was trained with")
  return family
