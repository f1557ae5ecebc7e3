"""Evaluates a trained VAE like the literature: `vae-jax evaluate --workdir=DIR`.

    vae-jax evaluate --workdir=/tmp/vae [--k=5000] [--split=test] [--step=N] [--model=I]

Prints a short table and writes `eval.json` (default `DIR/eval.json`): the
ELBO, the negative log-likelihood estimated with k importance samples (IWAE
bound, Burda et al. 2015), bits per dimension, active units and the KL per
latent dimension. A conditional model (`conditional=True`) is evaluated on each
image with its label: the ELBO and the IWAE bound are then on log p(x | y), and
eval.json says `"conditional": true`. For a run of several models it evaluates each (or only
`--model`) and adds their mean and standard deviation. `python -m vae_jax.evaluate` is the same command. Exit
status: 0 done, 2 bad input (one line on stderr).
"""
import json
import pathlib

import jax
import numpy as np
from absl import flags

from vae_jax import checkpoints
from vae_jax import cli
from vae_jax import data
from vae_jax import evaluation
from vae_jax import streaming

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
    first = checkpoints.load(_WORKDIR.value, _STEP.value, index=_MODEL.value or 0)
    count = first.config.num_models
    indices = [_MODEL.value] if _MODEL.value is not None else range(count)
    dataset, inputs, labels, streamed = _inputs(first.config, _SPLIT.value)
    records = []
    for i in indices:
      trained = first if i == first.index else checkpoints.load(_WORKDIR.value, first.step, index=i)
      records.append(evaluate_split(trained, dataset, inputs, _SPLIT.value, labels,
                                    streamed=streamed))
      print(format_table(records[-1]), flush=True)
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
  dataset = data.load(config)
  placement, _ = streaming.choose_placement(config.data_placement, dataset,
                                            config.device_data_budget)
  streamed = placement == "stream"
  part = getattr(dataset, split)
  inputs = evaluation.evaluation_inputs(part.images, config, on_host=streamed)
  labels = part.labels if config.get("conditional") else None
  if _NUM_EXAMPLES.value is not None:
    inputs = inputs[:_NUM_EXAMPLES.value]
    labels = None if labels is None else labels[:_NUM_EXAMPLES.value]
  return dataset, inputs, labels, streamed


def evaluate_split(trained: checkpoints.TrainedModel, dataset, inputs, split: str, labels=None,
                   *, streamed: bool = False) -> dict:
  """Evaluates `trained` on uint8 images (N, H, W, C) (given `labels` (N,) when it is
  conditional) with the flags' settings."""
  config = trained.config
  result = evaluation.evaluate(
      trained, inputs, k=_K.value, key=jax.random.key(_SEED.value),
      sample_chunk=_SAMPLE_CHUNK.value or config.iwae_sample_chunk,
      example_chunk=_EXAMPLE_CHUNK.value or config.iwae_example_chunk, labels=labels,
      streamed=streamed)
  header = {"workdir": str(_WORKDIR.value), "dataset": dataset.name, "split": split,
            "binarize": config.binarize, "likelihood": config.likelihood,
            "step": trained.step, "seed": _SEED.value, "model": trained.index,
            "family": {name: config[name] for name in FAMILY if name in config}}
  return {**header, **result}


# The config fields that say which model family was evaluated (recorded in eval.json).
FAMILY = ("prior", "prior_components", "posterior", "flow_steps", "flow_hidden", "objective",
          "train_samples", "gradient_estimator", "stochastic_layers", "layer_latents")
SUMMARIZED = ("elbo", "recon", "kl", "nll", "bits_per_dim", "active_units")


def summarize_models(records: list[dict]) -> dict:
  """eval.json for several models: the shared header, `models` (one record each) and
  `mean` / `std` (standard deviation over models, ddof 1) of the main figures."""
  values = {name: np.array([r[name] for r in records], np.float64) for name in SUMMARIZED}
  shared = {k: records[0][k] for k in ("workdir", "dataset", "split", "binarize", "likelihood",
                                       "family", "step", "seed", "k", "num_examples",
                                       "conditional")}
  return {**shared, "num_models": len(records), "models": records,
          "mean": {k: float(v.mean()) for k, v in values.items()},
          "std": {k: float(v.std(ddof=1)) for k, v in values.items()}}


def format_summary(r: dict) -> str:
  pm = lambda name: f"{r['mean'][name]:10.2f} ± {r['std'][name]:.2f}"
  return "\n".join([
      f"{r['num_models']} models, mean ± standard deviation over models:",
      f"  ELBO             {pm('elbo')}", f"  NLL (IWAE)       {pm('nll')}",
      f"  active units     {pm('active_units')}"])


def format_table(r: dict) -> str:
  """A few lines for the terminal from an eval.json record."""
  pm = lambda name: f"{r[name]:10.2f} ± {r[name + '_stderr'] or 0:.2f} nats"
  nll = "-log p(x|y) IWAE" if r.get("conditional") else "NLL (IWAE)      "
  layers = [] if "kl_per_layer" not in r else [  # A hierarchy, layer 1 (next to the data) first.
      f"  KL per layer     {' '.join(f'{v:.2f}' for v in r['kl_per_layer'])}   (active units "
      f"{' '.join(map(str, r['active_units_per_layer']))})"]
  return "\n".join([
      f"{r['dataset']} {r['split']}, model {r['model']}, {r['num_examples']:,} examples, checkpoint step "
      f"{r['step']}, k = {r['k']:,}, {r['seconds']:.1f} s",
      f"  ELBO             {pm('elbo')}   (recon {r['recon']:.2f}, KL {r['kl']:.2f})",
      f"  {nll} {pm('nll')}   ({r['bits_per_dim']:.4f} bits/dim)",
      f"  active units     {r['active_units']:10d} of {r['latents']}"
      f"        (Cov_x E_q[z_i] > {evaluation.ACTIVE_UNIT_THRESHOLD})",
      *layers,
  ])

