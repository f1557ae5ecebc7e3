"""Evaluates a trained VAE like the literature: `vae-jax evaluate --workdir=DIR`.

    vae-jax evaluate --workdir=/tmp/vae [--k=5000] [--split=test] [--step=N]

Prints a short table and writes `eval.json` (default `DIR/eval.json`): the
ELBO, the negative log-likelihood estimated with k importance samples (IWAE
bound, Burda et al. 2015), bits per dimension, active units and the KL per
latent dimension. `python -m vae_jax.evaluate` is the same command. Exit
status: 0 done, 2 bad input (one line on stderr).
"""
import json
import pathlib

import jax
from absl import flags

from vae_jax import checkpoints
from vae_jax import cli
from vae_jax import data
from vae_jax import evaluation

_WORKDIR, _STEP, _OUT = cli.define_trained_model_flags(
    "Where to write eval.json; default WORKDIR/eval.json.")
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
  del argv  # cli.run refuses stray arguments.
  with cli.errors_to_exit():
    trained = checkpoints.load(_WORKDIR.value, _STEP.value)
    result = run(trained, _SPLIT.value)
  out = pathlib.Path(_OUT.value) if _OUT.value else pathlib.Path(_WORKDIR.value) / "eval.json"
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps(result, indent=2) + "\n")
  print(format_table(result))
  print(f"wrote {out}")


def run(trained: checkpoints.TrainedModel, split: str) -> dict:
  """Evaluates `trained` on `split` of its dataset with the flags' settings."""
  config = trained.config
  dataset = data.load(config)
  inputs = evaluation.evaluation_inputs(getattr(dataset, split).images, config)
  if _NUM_EXAMPLES.value is not None:
    inputs = inputs[:_NUM_EXAMPLES.value]
  result = evaluation.evaluate(
      trained, inputs, k=_K.value, key=jax.random.key(_SEED.value),
      sample_chunk=_SAMPLE_CHUNK.value or config.iwae_sample_chunk,
      example_chunk=_EXAMPLE_CHUNK.value or config.iwae_example_chunk)
  header = {"workdir": str(_WORKDIR.value), "dataset": dataset.name, "split": split,
            "binarize": config.binarize, "likelihood": config.likelihood,
            "step": trained.step, "seed": _SEED.value}
  return {**header, **result}


def format_table(r: dict) -> str:
  """A few lines for the terminal from an eval.json record."""
  pm = lambda name: f"{r[name]:10.2f} ± {r[name + '_stderr'] or 0:.2f} nats"
  return "\n".join([
      f"{r['dataset']} {r['split']}, {r['num_examples']:,} examples, checkpoint step "
      f"{r['step']}, k = {r['k']:,}, {r['seconds']:.1f} s",
      f"  ELBO             {pm('elbo')}   (recon {r['recon']:.2f}, KL {r['kl']:.2f})",
      f"  NLL (IWAE)       {pm('nll')}   ({r['bits_per_dim']:.4f} bits/dim)",
      f"  active units     {r['active_units']:10d} of {r['latents']}"
      f"        (Cov_x E_q[z_i] > {evaluation.ACTIVE_UNIT_THRESHOLD})",
  ])

