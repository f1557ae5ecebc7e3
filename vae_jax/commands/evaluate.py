"""Evaluates a trained VAE like the literature: `vae-jax evaluate --workdir=DIR`.

    vae-jax evaluate --workdir=/tmp/vae [--k=5000] [--split=test] [--step=N] [--model=I]

Prints a short table and writes `eval.json` (default `DIR/eval.json`): the
ELBO, the negative log-likelihood estimated with k importance samples (IWAE
bound, Burda et al. 2015), bits per dimension, active units and the KL per
latent dimension. A conditional model (`conditional=True`) is evaluated on each
image with its label: the ELBO and the IWAE bound are then on log p(x | y), and
eval.json says `"conditional": true`. A VQ-VAE or FSQ workdir is evaluated with its prior
over codes (`DIR/prior`, `vae-jax train-prior`; refused without one): the two-stage bound
-log p(x) <= -log p(x | z_q(x)) - log p_prior(z_q(x)), which takes no samples (`--k` is
recorded as 1; see `vae_jax.families.discrete.prior`). For a run of several models it evaluates each (or only
`--model`) and adds their mean and standard deviation. `python -m vae_jax.evaluate` is the same command. Exit
status: 0 done, 2 bad input (one line on stderr).
"""
import json
import pathlib

import jax
import numpy as np
from absl import flags

from vae_jax import trained as trained_lib
from vae_jax import cli
from vae_jax import data
from vae_jax import evaluation
from vae_jax import fields
from vae_jax import schema
from vae_jax import streaming
from vae_jax.families.base import Capability

_WORKDIR, _STEP, _OUT, _MODEL = cli.define_trained_model_flags(
    "Where to write eval.json; default WORKDIR/eval.json.",
    "Which of the run's models (0-based); default all.", model_default=None)
_K = flags.DEFINE_integer("k", 5000, "Importance samples per example.", lower_bound=1)
_SPLIT = flags.DEFINE_enum("split", "test", ["test", "train"], "Which split to evaluate.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the importance samples.")
_NUM_EXAMPLES = flags.DEFINE_integer(
    "num_examples", None, "Evaluate only the first N examples of the split (quick checks).",
    lower_bound=1)
_SAMPLE_CHUNK = flags.DEFINE_integer(
    "sample_chunk", None, "Samples drawn at once per example; default config.iwae_sample_chunk.",
    lower_bound=1)
_EXAMPLE_CHUNK = flags.DEFINE_integer(
    "example_chunk", None, "Examples evaluated at once; default config.iwae_example_chunk.",
    lower_bound=1)


def main(argv):
  del argv  # cli.run_command refuses stray arguments.
  with cli.errors_to_exit():
    load = lambda step, i: trained_lib.load_for(_WORKDIR.value, Capability.BOUND, "evaluate",
                                                step, index=i)
    first = load(_STEP.value, _MODEL.value or 0)
    count = first.config.num_models
    indices = [_MODEL.value] if _MODEL.value is not None else range(count)
    dataset, inputs, labels, streamed = _inputs(first.config, _SPLIT.value)
    records = []
    for i in indices:
      trained = first if i == first.index else load(first.step, i)
      records.append(evaluate_split(trained, dataset, inputs, _SPLIT.value, labels,
                                    streamed=streamed))
      print(format_table(records[-1], trained.family.labels), flush=True)
  result = records[0] if len(records) == 1 else summarize_models(records)
  out = pathlib.Path(_OUT.value) if _OUT.value else pathlib.Path(_WORKDIR.value) / "eval.json"
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps(result, indent=2) + "\n")
  if len(records) > 1:
    print(format_summary(result))
  print(f"wrote {out}")


def _inputs(config, split: str):
  """(the dataset, the uint8 images of `split` as every evaluation sees them, their
  labels for a conditional model (else None), whether they stream from the host:
  where the run's `data_placement` resolves to stream)."""
  dataset = data.load(data.settings(config))
  placement, _ = streaming.choose_placement(config.data_placement, dataset,
                                            config.device_data_budget)
  streamed = placement == "stream"
  part = getattr(dataset, split)
  inputs = evaluation.evaluation_inputs(part.images, binarize=config.binarize, seed=config.seed,
                                       on_host=streamed)
  labels = part.labels if config.get("conditional") else None
  if _NUM_EXAMPLES.value is not None:
    inputs = inputs[:_NUM_EXAMPLES.value]
    labels = None if labels is None else labels[:_NUM_EXAMPLES.value]
  return dataset, inputs, labels, streamed


def evaluate_split(trained: trained_lib.TrainedModel, dataset, inputs, split: str, labels=None,
                   *, streamed: bool = False) -> dict:
  """Evaluates `trained` on uint8 images (N, H, W, C) (given `labels` (N,) when it is
  conditional) with the flags' settings."""
  config = trained.config
  result = evaluation.evaluate(
      trained, inputs, k=_K.value, key=jax.random.key(_SEED.value),
      sample_chunk=_SAMPLE_CHUNK.value or config.iwae_sample_chunk,
      example_chunk=_EXAMPLE_CHUNK.value or config.iwae_example_chunk, labels=labels,
      streamed=streamed)
  family = trained.family
  header = {"workdir": str(_WORKDIR.value), "dataset": dataset.name, "split": split,
            "binarize": config.binarize, "likelihood": config.likelihood,
            "step": trained.step, "seed": _SEED.value, "model": trained.index,
            "family": {"name": family.name, **_family_fields(config)}}
  return {**header, **result}


def _family_fields(config) -> dict:
  """The family's own settings (and its stage's, for a later stage) of a run's config."""
  stage = config.get("stage", "")
  own = [f for f in schema.fields_of(config.family, stage) if f.name not in fields.FIELDS]
  return {**({"stage": stage} if stage else {}),
          **{f.name: config[f.name] for f in own if not f.sweepable and f.name in config}}


HEADER = ("workdir", "dataset", "split", "binarize", "likelihood", "family", "step", "seed",
          "model", "k", "num_examples", "conditional", "seconds")


def _figures(record: dict) -> dict[str, float]:
  """The numbers of an eval.json record that describe the model (not the header)."""
  return {name: value for name, value in record.items()
          if name not in HEADER and not name.endswith("_stderr")
          and isinstance(value, (int, float)) and not isinstance(value, bool)}


def summarize_models(records: list[dict]) -> dict:
  """eval.json for several models: the shared header, `models` (one record each) and
  `mean` / `std` (standard deviation over models, ddof 1) of each of their numbers."""
  values = {name: np.array([r[name] for r in records], np.float64)
            for name in _figures(records[0])}
  shared = {k: records[0][k] for k in HEADER if k in records[0] and k not in ("model", "seconds")}
  return {**shared, "num_models": len(records), "models": records,
          "mean": {k: float(v.mean()) for k, v in values.items()},
          "std": {k: float(v.std(ddof=1)) for k, v in values.items()}}


LABELS = {"elbo": "ELBO", "nll": "NLL (bound)", "kl": "KL", "bits_per_dim": "bits/dim",
          "active_units": "active units", "kl_per_layer": "KL per layer",
          "active_units_per_layer": "active units per layer"}
SHORT_LIST = 8  # Lists up to this long are shown in the table (per layer, not per latent).


def _label(name: str, labels: dict | None = None) -> str:
  return {**LABELS, **(labels or {})}.get(name, name.replace("_", " "))


def format_summary(r: dict) -> str:
  """The mean ± standard deviation over models of each number, one per line."""
  return "\n".join([f"{r['num_models']} models, mean ± standard deviation over models:",
                    *(f"  {_label(k):<22} {r['mean'][k]:10.2f} ± {r['std'][k]:.2f}"
                      for k in r["mean"])])


def format_table(r: dict, labels: dict | None = None) -> str:
  """A few lines for the terminal from an eval.json record: each number of the model
  (± its standard error where it has one) and its short lists; `labels`: the family's
  names for them (`Family.labels`)."""
  lines = [f"{r['dataset']} {r['split']}, model {r['model']}, {r['num_examples']:,} examples, "
           f"checkpoint step {r['step']}, k = {r['k']:,}, {r['seconds']:.1f} s"
           + (" (log p(x|y): conditional on the labels)" if r.get("conditional") else "")]
  for name, value in r.items():
    if name in HEADER or name.endswith("_stderr"):
      continue
    if isinstance(value, list) and 0 < len(value) <= SHORT_LIST:
      lines.append(f"  {_label(name, labels):<22} {' '.join(_short(v) for v in value)}")
    elif isinstance(value, float):
      error = r.get(f"{name}_stderr")
      lines.append(f"  {_label(name, labels):<22} {value:10.4f}" if name == "bits_per_dim" else
                   f"  {_label(name, labels):<22} {value:10.2f}"
                   + (f" ± {error:.2f}" if error else ""))
    elif isinstance(value, int) and not isinstance(value, bool):
      lines.append(f"  {_label(name, labels):<22} {value:10d}")
  return "\n".join(lines)


def _short(value) -> str:
  return f"{value:.2f}" if isinstance(value, float) else str(value)
