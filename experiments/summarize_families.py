"""The model families' table (docs/results.md) from experiments/run_families.sh's workdirs.

    python experiments/summarize_families.py runs/families --data=sample
    python experiments/summarize_families.py runs/families --data=fashion

One Markdown row per workdir `DATA_FAMILY` that has an eval.json: the test NLL
(the IWAE bound at eval.json's k), the ELBO and its KL, active units (mean ±
standard deviation over the run's models, ddof 1), and the median seconds per
training epoch of all the models together (from metrics.jsonl; the machine's
load varies between rows, so compare them loosely).
"""
import argparse
import json
import pathlib
import statistics

from vae_jax import reporting

ROWS = {  # Family: what the row trains.
    "baseline": "VAE (ELBO, N(0, I), diagonal Gaussian)",
    "iwae5": "IWAE, K = 5",
    "iwae5_dreg": "IWAE, K = 5, DReG",
    "iwae50": "IWAE, K = 50",
    "iwae50_dreg": "IWAE, K = 50, DReG",
    "mog": "mixture-of-Gaussians prior, 500 components",
    "vamp": "VampPrior, 500 pseudo-inputs",
    "iaf": "IAF posterior, T = 2",
    "hier2": "2 stochastic layers (20 + 10 latents)",
    "hier3": "3 stochastic layers (20 + 10 + 5 latents)",
    "cond": "conditional on the label: -log p(x \\| y)",
}


def row(workdir: pathlib.Path, label: str) -> str:
  result = json.loads((workdir / "eval.json").read_text())
  mean, std = result["mean"], result["std"]
  pm = lambda name, sign=1: f"{sign * mean[name]:.2f} ± {std[name]:.2f}"
  seconds = statistics.median({r["epoch"]: r["epoch_seconds"]
                               for r in reporting.read_metrics(workdir)}.values())
  per_layer = [m["kl_per_layer"] for m in result["models"] if m.get("kl_per_layer")]
  layers = (" / ".join(f"{statistics.mean(v):.1f}" for v in zip(*per_layer)) if per_layer
            else "")
  return (f"| {label} | {pm('nll')} | {pm('elbo', -1)} | {pm('kl')} | {layers} | "
          f"{pm('active_units')} | {seconds:.1f} |")


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("runs")
  parser.add_argument("--data", default="sample")
  args = parser.parse_args()
  runs = pathlib.Path(args.runs)
  first = next((runs / f"{args.data}_{f}" for f in ROWS
                if (runs / f"{args.data}_{f}" / "eval.json").exists()), None)
  if first is None:
    raise SystemExit(f"no {args.data}_* workdir with an eval.json in {runs}")
  info = json.loads((first / "eval.json").read_text())
  print(f"{info['dataset']}, binarize={info['binarize']}, {info['num_models']} seeds; test NLL: "
        f"IWAE bound with k = {info['k']:,} on {info['num_examples']:,} test images\n")
  print("| model | test NLL | negative ELBO | KL | KL per layer (1 = next to the data) | "
        "active units | s per epoch (5 models) |")
  print("|---|---|---|---|---|---|---|")
  for family, label in ROWS.items():
    workdir = runs / f"{args.data}_{family}"
    if (workdir / "eval.json").exists():
      print(row(workdir, label))


if __name__ == "__main__":
  main()
