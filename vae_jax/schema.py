"""The config: every field of the core and of every family, and the pieces a run takes from it.

The core's fields are declared in `vae_jax.fields`, each family's in its module
(`vae_jax.families`); `FIELDS` holds them all, in the order `--help` shows them
(the core's, then each family's). From them:

  * `default_config()`: the ConfigDict of `configs/default.py` (every field at
    its default, an empty `sweep.FIELD` per sweepable one);
  * `check(config)`: each field's own value (type, choices, bounds), the core's
    and the config's family's;
  * `upgrade(values)`: a `config.json` written before a field existed,
    completed with the field's `legacy` value;
  * `differences(saved, config)`: the `shapes` fields on which two configs
    differ (a workdir restores only into a config that agrees on them);
  * `describe()`: the fields for `--help`;
  * `family_settings(config)`, `build_family(config, models, module)`: the
    family a config selects, built from its settings (the config stops here:
    below the driver each part takes its own settings).

Adding a field is one declaration, in `fields.py` or in its family's module.
"""
import ml_collections

from vae_jax import fields as fields_lib
from vae_jax.errors import UsageError
from vae_jax.families import base
from vae_jax.families import registry
from vae_jax.fields import Field

CUSTOM_MODEL = "custom"  # config.model of a run trained with a user's own module.


def _all_fields() -> dict[str, Field]:
  """The core's fields, then each registered family's (and its stages'), each name once."""
  declared = dict(fields_lib.FIELDS)
  for family in registry.every_class():
    for f in family.fields:
      if declared.setdefault(f.name, f) is not f:
        raise ValueError(f"config field {f.name} is declared twice ({family.name})")
  return declared


def sweepable() -> tuple[str, ...]:
  """The fields `--config.sweep.NAME` takes, in the sweep's order."""
  return tuple(n for n, f in _all_fields().items() if f.sweepable)


def __getattr__(name: str):
  # Computed at each use, so that a family registered later (`registry.register`) counts.
  if name == "FIELDS":  # dict[str, Field]: every field.
    return _all_fields()
  if name == "SWEEPABLE":
    return sweepable()
  if name == "SHAPES":  # Deprecated: the shapes fields of every family; see `shapes(family)`.
    return tuple(n for n, f in _all_fields().items() if f.shapes)
  if name == "TRACED":  # The sweepable ones the step traces (`hyper` of a family's loss).
    return tuple(n for n, f in _all_fields().items() if f.sweepable and not f.host_only)
  raise AttributeError(f"module 'vae_jax.schema' has no attribute {name!r}")


def choices(name: str) -> tuple:
  """The allowed values of field `name`."""
  return _all_fields()[name].choices


def group(name: str) -> tuple[Field, ...]:
  """The fields of one group, in declaration order."""
  return fields_lib.group(name, _all_fields())


def family_class(config) -> type[base.Family]:
  """The family class a config (or config.json's values) selects; UsageError if unknown."""
  return registry.get(config.get("family", "vae") if hasattr(config, "get") else config.family)


def fields_of(family: str, stage: str = "") -> tuple[Field, ...]:
  """The fields a run of `family` (of its `stage`) reads: the core's, the family's own and
  the stage's."""
  cls = registry.get(family)
  extra = () if not stage else tuple(f for f in stage_class(cls, stage).fields
                                     if f not in cls.fields)
  return (*fields_lib.FIELDS.values(), *cls.fields, *extra)


def stage_class(family: type[base.Family], stage: str) -> type[base.Family]:
  """The family class of a later stage `stage` of `family`; UsageError if it has none."""
  if stage not in family.stages:
    later = f"its stages after the first: {', '.join(family.stages)}" if family.stages else (
        "it trains in one stage")
    raise UsageError(f"family {family.name} has no training stage {stage!r} ({later})")
  return family.stages[stage]


def shapes(family: str, stage: str = "") -> tuple[str, ...]:
  """The fields that fix a run's parameter shapes (or what its checkpoints hold); of a later
  `stage`, its own and the first stage's."""
  return tuple(f.name for f in fields_of(family, stage) if f.shapes)


def default_config() -> ml_collections.ConfigDict:
  """A ConfigDict of every field at its default, with an empty `sweep.FIELD` per sweepable one."""
  config = ml_collections.ConfigDict(
      {name: f.default for name, f in _all_fields().items() if not f.resolved})
  config.sweep = ml_collections.ConfigDict({name: "" for name in sweepable()})
  return config


def check(config: ml_collections.ConfigDict, where: str = "", *, resolved: bool = False) -> None:
  """Raises UsageError naming the first field of `config` whose value is not allowed: the
  core's fields and its family's (another family's fields keep their defaults unread).

  Args:
    where: where the values come from, said first in the error (e.g. "DIR/config.json: ").
    resolved: also check the fields a run resolves (a config.json's image_shape, ...).
  """
  try:
    family = family_class(config)
    # A run of a user's own module records its parts where the config names its choices.
    custom = ("model", *family.signature_fields) if (
        resolved and config.get("model") == CUSTOM_MODEL) else ()
    for field in fields_of(family.name, config.get("stage", "")):
      if field.name in config and (resolved or not field.resolved) and field.name not in custom:
        field.check(config[field.name])
    shape = config.get("image_shape") if resolved else None
    if shape is not None and (len(shape) != 3 or min(shape) < 1):
      raise UsageError(f"image_shape must be 3 positive integers (H, W, C), got {list(shape)}")
  except UsageError as e:
    raise UsageError(f"{where}{e}") from None


def upgrade(values: dict, where: str = "") -> dict:
  """A config.json's values completed with each missing field's `legacy` value.

  Raises:
    UsageError: a `required` field is missing (every config.json has held it: this
      one was edited, and a default would build other parameter shapes).
  """
  for name, f in _all_fields().items():
    if f.required and name not in values:
      raise UsageError(f"{where}no {name}, which fixes the parameter shapes (was the file "
                       "edited?); restore it or use a new --workdir")
  every = _all_fields()
  return {**{name: f.legacy_value for name, f in every.items() if name not in values}, **values}


def differences(saved, config) -> list[str]:
  """'field saved vs config' for each `shapes` field (of the saved run's family) on which
  two configs differ."""
  value = lambda c, name: hashable(c[name] if name in c else _all_fields()[name].legacy_value)
  family = value(saved, "family")
  names = shapes(family, value(saved, "stage")) if family in registry.FAMILIES else ("family",)
  return [f"{name} {value(saved, name)!r} vs {value(config, name)!r}" for name in names
          if value(saved, name) != value(config, name)]


def hashable(value):
  """Lists (as JSON gives back tuples) as tuples, so that a config and its config.json compare."""
  return tuple(value) if isinstance(value, (list, tuple)) else value


def build_family(config, models: list[dict], module=None) -> base.Family:
  """The family a resolved config selects, for models of the given sweepable settings; for
  a config of a later stage (`stage`), that stage's family, built on the first's.

  Args:
    config: a resolved config (with image_shape and, if conditional, num_classes).
    models: each model's sweepable settings (`sweep.model_settings`).
    module: a user's own flax module for the family, instead of the config's.
  """
  cls = family_class(config)
  family = cls.build(fields_lib.settings_of(cls.settings_type, config), models, module)
  stage = config.get("stage", "")
  if not stage:
    return family
  later = stage_class(cls, stage)
  return later.build(fields_lib.settings_of(later.settings_type, config), models, parent=family)


def describe() -> str:
  """The fields for `--help`: `--config.NAME (default): help`, by group, each family's last."""
  lines = []
  for name in dict.fromkeys(f.group for f in _all_fields().values()):
    title = f"family {name}" if name in registry.FAMILIES else name
    lines.append(f"\n  {title}:")
    for f in (f for f in group(name) if not f.resolved):
      lines.append(f"    --config.{f.name}={f.default!r}: {f.help}"
                   f"{'  [sweepable]' if f.sweepable else ''}")
  return "\n".join(lines)
