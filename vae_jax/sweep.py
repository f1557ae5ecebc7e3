"""Per-model settings of a run of several stacked models.

    --config.num_models=5                                 # seeds seed .. seed + 4
    --config.sweep.beta=0.5,1,4                           # 3 models
    --config.sweep.beta=0.5,1 --config.sweep.learning_rate=1e-3,3e-4   # 2 x 2 = 4 models

Each `sweep.FIELD` lists values; the run trains one model per combination
(the Cartesian product, in the order of `SWEEPABLE`, the last field varying
fastest). Unless seeds are swept, model i uses `seed + i`. The sweepable
fields are those `vae_jax.schema` declares so (`schema.sweepable()`: the core's
and the families'); fields that change the parameter shapes cannot be: models
of different shapes cannot be stacked.
"""
import itertools

import ml_collections

from vae_jax import schema
from vae_jax.errors import UsageError

def model_settings(config: ml_collections.ConfigDict) -> list[dict]:
  """The settings of each model: a list of N dicts with every sweepable field.

  Raises:
    UsageError: a value that does not parse or is out of range, a sweep of a field
      that changes shapes, or num_models that disagrees with the sweep.
  """
  swept = _swept_values(config)
  if swept:
    combos = list(itertools.product(*swept.values()))
    if config.num_models not in (1, len(combos)):
      raise UsageError(f"num_models={config.num_models} disagrees with the sweep, which makes "
                       f"{len(combos)} models; leave num_models at 1")
  else:
    if not isinstance(config.num_models, int) or config.num_models < 1:
      raise UsageError(f"num_models must be an integer >= 1, got {config.num_models!r}")
    combos = [()] * config.num_models
  models = []
  for i, combo in enumerate(combos):
    settings = {name: config[name] for name in schema.sweepable() if name in config}
    settings["seed"] = config.seed + i
    settings.update(zip(swept, combo))
    models.append(settings)
  for settings in models:
    for name, value in settings.items():
      schema.FIELDS[name].check(value)
  return models


def _swept_values(config) -> dict[str, list]:
  sweep = config.get("sweep") or {}
  values = {}
  sweepable = schema.sweepable()
  for name in sweep:
    if name not in sweepable:
      raise UsageError(refusal(name))
  for name in sweepable:
    text = str(sweep.get(name, "") or "").strip()
    if text:
      values[name] = [_parse(name, schema.FIELDS[name].kind, v) for v in text.split(",")]
  return values


def refusal(name: str) -> str:
  """Why `sweep.NAME` is refused, in one line."""
  if name in schema.FIELDS and schema.FIELDS[name].shapes:
    return (f"sweep.{name}: {name} changes the parameter shapes, and models of different "
            "shapes cannot be stacked; train them in separate runs")
  return f"sweep.{name}: unknown; sweepable fields are {', '.join(schema.sweepable())}"


def _parse(name: str, kind, text: str):
  try:
    value = kind(float(text)) if kind is int and "e" in text.lower() else kind(text.strip())
  except ValueError:
    raise UsageError(f"sweep.{name}: cannot read {text.strip()!r} as {kind.__name__}") from None
  return value

