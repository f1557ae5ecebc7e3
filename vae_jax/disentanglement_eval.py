"""The disentanglement metrics of trained models: every model of a run against its data's factors.

    import vae_jax
    result = vae_jax.disentanglement_eval.evaluate_workdir("/tmp/betatc")   # every model
    print(vae_jax.disentanglement_eval.format_table(result))

is what `vae-jax disentanglement --workdir=DIR` runs: each model's encoder means are its
representation (`representation`), scored by every metric of `vae_jax.disentanglement`
(`evaluate_all`, at disentanglement_lib's sizes unless `sizes` says otherwise) against the
ground truth of the data the run trained on (`vae_jax.data.ground_truth`: shapes2d or the
dSprites file). The result (what `DIR/disentanglement.json` holds) has one record per model
with its sweepable settings, the mean and standard deviation over the models of each score,
and what the numbers depend on: the scikit-learn version, the sizes, DCI's estimator and the
seed. A seed gives the same numbers on every run (with the same scikit-learn), and every model
is scored on the same sampled points.

A run can compute the same scores every N epochs (`--config.disentanglement_every=N`, at
`--config.disentanglement_scale` times the sizes): `epoch_scores` gives each model's
`disentanglement_NAME` entries of metrics.jsonl.
"""
import dataclasses
import json
import pathlib
from collections.abc import Callable

import numpy as np

from vae_jax import data
from vae_jax import disentanglement
from vae_jax import latent
from vae_jax import stacked
from vae_jax import sweep
from vae_jax import trained as trained_lib
from vae_jax.errors import UsageError
from vae_jax.families.base import Capability

FILE_NAME = "disentanglement.json"
PREFIX = "disentanglement_"  # Of the scores in metrics.jsonl.
SEED = 0  # The per-epoch scores' seed, the command's default: the same points every time.

# The headline number of each metric, by name, from what `evaluate_all` returns: the
# evaluation (held-out) accuracies and scores, as disentanglement_lib reports them.
SCORES: dict[str, Callable[[dict], float]] = {
    "beta_vae": lambda r: r["beta_vae"]["eval_accuracy"],
    "factor_vae": lambda r: r["factor_vae"]["eval_accuracy"],
    "mig": lambda r: r["mig"],
    "sap": lambda r: r["sap"],
    "dci_disentanglement": lambda r: r["dci"]["disentanglement"],
    "dci_completeness": lambda r: r["dci"]["completeness"],
    "dci_informativeness": lambda r: r["dci"]["informativeness_test"],
    "modularity": lambda r: r["modularity"],
    "explicitness": lambda r: r["explicitness"]["test"],
}
LABELS = {"beta_vae": "BetaVAE", "factor_vae": "FactorVAE", "mig": "MIG", "sap": "SAP",
          "dci_disentanglement": "DCI D", "dci_completeness": "DCI C",
          "dci_informativeness": "DCI I", "modularity": "modularity",
          "explicitness": "explicitness"}


def scaled_sizes(scale: float) -> disentanglement.Sizes:
  """disentanglement_lib's numbers of points times `scale` (batches and bins unchanged)."""
  if not scale > 0:
    raise UsageError(f"the disentanglement sizes' scale must be > 0, got {scale}")
  full = disentanglement.Sizes()
  points = ("num_train", "num_test", "beta_vae_train", "beta_vae_eval", "factor_vae_train",
            "factor_vae_eval", "factor_vae_variance_points")
  return dataclasses.replace(full, **{name: max(1, round(getattr(full, name) * scale))
                                      for name in points})


def representation(model: trained_lib.TrainedModel) -> Callable[[np.ndarray], np.ndarray]:
  """The model's representation: uint8 observations (n, H, W, C) -> encoder means (n, L).

  Raises:
    UsageError: the model's family has no continuous codes.
  """
  model.family.require(Capability.LATENT, "the disentanglement metrics")
  return lambda images: np.asarray(latent.encode(model, images)[0], np.float64)


def ground_truth(config):
  """The ground truth of the data a run's config names (UsageError for data without factors)."""
  return data.ground_truth(data.load(data.settings(config)))


def scores(result: dict) -> dict[str, float]:
  """The headline number of each metric (`SCORES`) from one `evaluate_all` result."""
  return {name: float(get(result)) for name, get in SCORES.items()}


def evaluate_model(model: trained_lib.TrainedModel, truth, *, seed: int = SEED,
                   sizes: disentanglement.Sizes = disentanglement.Sizes(),
                   dci_estimator: str = "hist_gradient_boosting") -> dict:
  """Every metric of one trained model (`disentanglement.evaluate_all` of its encoder means).

  Args:
    model: a trained model with continuous codes.
    truth: the ground truth of its data (`data.ground_truth`).
    seed, sizes, dci_estimator: as `evaluate_all` takes them.

  Returns:
    `scores` (the headline numbers) and `metrics` (everything `evaluate_all` returns).
  """
  result = disentanglement.evaluate_all(representation(model), truth, seed=seed, sizes=sizes,
                                        dci_estimator=dci_estimator)
  return {"scores": scores(result), "metrics": result}


def evaluate_workdir(workdir, *, index: int | None = None, step: int | None = None,
                     seed: int = SEED, sizes: disentanglement.Sizes = disentanglement.Sizes(),
                     dci_estimator: str = "hist_gradient_boosting", out=None,
                     say: Callable[[str], None] | None = None) -> dict:
  """Scores every model of the run in `workdir` (or model `index`) and writes the result.

  Args:
    workdir: a folder written by `vae-jax train`.
    index: one of the run's models (0-based); None: every model.
    step: the checkpoint step; default the latest.
    seed, sizes, dci_estimator: as `disentanglement.evaluate_all` takes them.
    out: where to write the JSON; default `workdir/disentanglement.json`; False: nowhere.
    say: called with one line per model as it is scored (e.g. `print`).

  Returns:
    {"workdir", "dataset", "factor_names", "factor_sizes", "step", "seed", "scikit_learn",
    "dci_estimator", "sizes", "num_models", "models": [{"model", its sweepable settings,
    "scores", "metrics"}, ...], "mean", "std"}: `mean` and `std` (ddof 1; 0 for one model)
    of each score over the models.

  Raises:
    UsageError: no trained model, a family without continuous codes, data without known
      factors, scikit-learn missing.
  """
  first = trained_lib.load(workdir, step, index=index or 0)
  truth = ground_truth(first.config)
  settings = sweep.model_settings(first.config)
  indices = [index] if index is not None else range(first.config.num_models)
  records = []
  for i in indices:
    model = first if i == first.index else trained_lib.load(workdir, first.step, index=i)
    result = evaluate_model(model, truth, seed=seed, sizes=sizes, dci_estimator=dci_estimator)
    swept = settings[i] if first.config.num_models > 1 else {}
    records.append({"model": i, **swept, **result})
    if say:
      say(f"model {i}: " + ", ".join(f"{LABELS[k]} {v:.3f}" for k, v in result["scores"].items()))
  summary = _summary(workdir, first, truth, records, seed, sizes, dci_estimator)
  if out is not False:
    path = pathlib.Path(out) if out else pathlib.Path(workdir) / FILE_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=2) + "\n")
  return summary


def _summary(workdir, first, truth, records, seed, sizes, dci_estimator) -> dict:
  values = {name: np.array([r["scores"][name] for r in records]) for name in SCORES}
  spread = lambda v: float(v.std(ddof=1)) if len(v) > 1 else 0.0
  return {"workdir": str(workdir), "dataset": first.config.dataset,
          "family": first.config.get("family", "vae"),
          "factor_names": list(truth.factor_names), "factor_sizes": list(truth.factor_sizes),
          "step": first.step, "seed": seed, "scikit_learn": disentanglement.scikit_learn_version(),
          "dci_estimator": dci_estimator, "sizes": dataclasses.asdict(sizes),
          "num_models": len(records), "models": records,
          "mean": {k: float(v.mean()) for k, v in values.items()},
          "std": {k: spread(v) for k, v in values.items()}}


def format_table(result: dict) -> str:
  """The scores, one row per model and the mean ± sd over models, for the terminal."""
  names = list(SCORES)
  width = max(len(LABELS[n]) for n in names)
  head = f"{'model':>5}  " + "  ".join(f"{LABELS[n]:>{max(width, 6)}}" for n in names)
  cell = lambda v: f"{v:>{max(width, 6)}.3f}"
  rows = [f"{r['model']:>5}  " + "  ".join(cell(r["scores"][n]) for n in names)
          for r in result["models"]]
  lines = [f"{result['dataset']} ({result['family']}), checkpoint step {result['step']}, seed "
           f"{result['seed']}, scikit-learn {result['scikit_learn']}, DCI "
           f"{result['dci_estimator']}", head, *rows]
  if result["num_models"] > 1:
    lines.append(f"{'mean':>5}  " + "  ".join(cell(result["mean"][n]) for n in names))
    lines.append(f"{'sd':>5}  " + "  ".join(cell(result["std"][n]) for n in names))
  return "\n".join(lines)


# ----------------------------------------------------------------------------
# Every N epochs of a run.


def check_run(family, dataset) -> None:
  """Raises UsageError when a run with `disentanglement_every` cannot score its models."""
  family.require(Capability.LATENT, "disentanglement_every")
  data.ground_truth(dataset)
  if disentanglement.scikit_learn_version() is None:
    raise UsageError(f"disentanglement_every fits scikit-learn classifiers: "
                     f"{disentanglement.INSTALL}")


def epoch_scores(family, config, params, model_state: dict, alive, step: int, truth
                 ) -> list[dict]:
  """Each model's `disentanglement_NAME` scores of a run's stacked models (None for a model
  whose loss diverged), at `disentanglement_scale` times the sizes and seed `SEED`.

  Args:
    family: the run's family.
    config: its resolved config.
    params, model_state: the stacked models' variables (a leading model axis).
    alive: (N,) bools.
    step: the steps taken.
    truth: the data's ground truth.
  """
  sizes = scaled_sizes(config.disentanglement_scale)
  records = []
  for i, ok in enumerate(np.asarray(alive)):
    if not ok:
      records.append({PREFIX + name: None for name in SCORES})
      continue
    model = trained_lib.TrainedModel(family, stacked.index(params, i), config, step, i,
                                     stacked.index(model_state, i))
    result = evaluate_model(model, truth, sizes=sizes)
    records.append({PREFIX + name: value for name, value in result["scores"].items()})
  return records

