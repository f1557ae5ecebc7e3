"""Scores a run's models with the disentanglement metrics: `vae-jax disentanglement --workdir=DIR`.

    vae-jax disentanglement --workdir=DIR [--model=I] [--seed=0] [--scale=1]
        [--dci_estimator=hist_gradient_boosting|gradient_boosting] [--step=N] [--out=FILE]

Every model of the run (or `--model`) is scored by the BetaVAE and FactorVAE scores, MIG, SAP,
DCI, modularity and explicitness (`vae_jax.disentanglement`, disentanglement_lib's
definitions and sizes), its encoder means as the representation, against the factors of the
data it was trained on (shapes2d, or the dSprites file); data without known factors is
refused. Prints a table and writes `DIR/disentanglement.json` (or `--out`): per model, the
mean and standard deviation over the models, the scikit-learn version, the sizes, DCI's
estimator. The same seed gives the same numbers. About 20 CPU-seconds per model for the
metrics, plus encoding about 3 million observations. `vae_jax.disentanglement_eval.
evaluate_workdir` is the same from Python. Exit status: 0 done, 2 bad input (one line).
"""
from absl import flags

from vae_jax import cli
from vae_jax import disentanglement
from vae_jax import disentanglement_eval

_WORKDIR, _STEP, _OUT, _MODEL = cli.define_trained_model_flags(
    f"Where to write the JSON; default WORKDIR/{disentanglement_eval.FILE_NAME}.",
    "Which of the run's models (0-based); default all.", model_default=None)
_SEED = flags.DEFINE_integer("seed", disentanglement_eval.SEED,
                             "Seeds every sampled point and classifier.")
_SCALE = flags.DEFINE_float("scale", 1.0, "Share of disentanglement_lib's numbers of points "
                            "(1: theirs; less is quicker and noisier).")
_DCI = flags.DEFINE_enum("dci_estimator", "hist_gradient_boosting",
                         list(disentanglement.DCI_ESTIMATORS),
                         "DCI's classifier: histogram trees (fast) or scikit-learn's "
                         "GradientBoostingClassifier (disentanglement_lib's, minutes per model).")


def main(argv):
  del argv  # cli.run_command refuses stray arguments.
  with cli.errors_to_exit():
    result = disentanglement_eval.evaluate_workdir(
        _WORKDIR.value, index=_MODEL.value, step=_STEP.value, seed=_SEED.value,
        sizes=disentanglement_eval.scaled_sizes(_SCALE.value), dci_estimator=_DCI.value,
        out=_OUT.value, say=lambda line: print(line, flush=True))
  print(disentanglement_eval.format_table(result))
  print(f"wrote {_OUT.value or f'{_WORKDIR.value}/{disentanglement_eval.FILE_NAME}'}")
