"""docs/results.md's disentanglement table from experiments/run_disentangle.sh's runs.

    python experiments/summarize_disentangle.py runs/disentangle

For each run (betatc, factorvae, dipvae, annealed) and each value of its swept weight: the
mean ± sd (ddof 1) over the seeds of every metric of DIR/disentanglement.json, and of the
last epoch's test reconstruction error and KL (metrics.jsonl).
"""
import json
import pathlib
import sys

import numpy as np

from vae_jax import disentanglement_eval as de
from vae_jax import reporting

RUNS = {"betatc": "tc_beta", "factorvae": "tc_gamma", "dipvae": "lambda_od",
        "annealed": "capacity_max"}
NAMES = {"betatc": "beta-TCVAE", "factorvae": "FactorVAE", "dipvae": "DIP-VAE-I",
         "annealed": "AnnealedVAE"}


def cell(values) -> str:
  values = np.asarray(values, np.float64)
  sd = values.std(ddof=1) if len(values) > 1 else 0.0
  return f"{values.mean():.3f} ± {sd:.3f}"


def main(root: str) -> None:
  root = pathlib.Path(root)
  head = ["model", "seeds", *[de.LABELS[n] for n in de.SCORES], "test recon", "test KL"]
  print("| " + " | ".join(head) + " |")
  print("|" + "---|" * len(head))
  for run, field in RUNS.items():
    if not (root / run / de.FILE_NAME).exists():
      continue
    result = json.loads((root / run / de.FILE_NAME).read_text())
    records = reporting.read_metrics(root / run)
    last = max(r["epoch"] for r in records)
    final = {r["model"]: r for r in records if r["epoch"] == last}
    for value in sorted({m[field] for m in result["models"]}):
      models = [m for m in result["models"] if m[field] == value]
      cells = [cell([m["scores"][n] for m in models]) for n in de.SCORES]
      recon = [final[m["model"]]["test_recon"] for m in models]
      kl = [final[m["model"]]["test_kl"] for m in models]
      print(f"| {NAMES[run]}, {field} = {value:g} | {len(models)} | " + " | ".join(cells)
            + f" | {np.mean(recon):.1f} ± {np.std(recon, ddof=1):.1f} | "
            f"{np.mean(kl):.2f} ± {np.std(kl, ddof=1):.2f} |")


if __name__ == "__main__":
  main(sys.argv[1] if len(sys.argv) > 1 else "runs/disentangle")
