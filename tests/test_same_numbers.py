"""The core's refactors change no numbers: test losses as recorded before them.

`tests/data/same_numbers.json` holds `test_loss`, `test_recon` and `test_kl` of
three runs (one MLP, with its IWAE bound, a 3-model learning-rate sweep, the
conv model), recorded
at commit dbeae5b, before the core was reorganised around one config schema:

    python tests/test_same_numbers.py --record   # rewrites the file (on purpose only)

float32 results differ in the last bits between CPUs (AVX2 and AVX-512 pick
other kernels and summation orders), so the values must match bit for bit on
the CPU they were recorded on, and elsewhere within 1e-4 relative: the spread
of reordered float32 sums over two short epochs is far below that (about
1e-6 relative), while any change to the maths (a key, a term, an order of
updates) moves the losses by far more.
"""
import json
import pathlib
import platform
import sys
import tempfile

import jax
import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
RECORD = REPO / "tests" / "data" / "same_numbers.json"
KEYS = ("test_loss", "test_recon", "test_kl", "test_iwae_nll")
CASES = {
    "mlp": {"eval_iwae_every": 1},
    # Recorded vmapped, before model_mapping existed (its value for older configs).
    "lr_sweep": {"sweep.learning_rate": "1e-3,3e-4,2e-3", "model_mapping": "vmap"},
    "conv": {"model": "conv", "conv_features": (8, 16), "latents": 4, "num_epochs": 1},
}


def cpu() -> str:
  """The CPU's model name and vector extensions: where float32 results may differ."""
  text = pathlib.Path("/proc/cpuinfo").read_text() if pathlib.Path("/proc/cpuinfo").exists() else ""
  model = next((l.split(":", 1)[1].strip() for l in text.splitlines() if l.startswith("model name")),
               platform.processor())
  avx512 = "avx512f" in text
  return f"{model}; {'AVX-512' if avx512 else 'no AVX-512'}"


def run_case(name: str) -> list[dict]:
  """Trains case `name` on the tiny config; returns its metrics rows' test losses."""
  from vae_jax import reporting  # pylint: disable=g-import-not-at-top
  from vae_jax import train_and_evaluate  # pylint: disable=g-import-not-at-top
  from vae_jax.configs import tiny  # pylint: disable=g-import-not-at-top
  config = tiny.get_config()
  for field, value in CASES[name].items():
    if field.startswith("sweep."):
      config.sweep[field.split(".", 1)[1]] = value
    else:
      config[field] = value
  with tempfile.TemporaryDirectory() as workdir:
    train_and_evaluate(config, workdir, verbose=False)
    rows = reporting.read_metrics(workdir)
  return [{"epoch": r["epoch"], "model": r["model"], **{k: r[k] for k in KEYS if k in r}}
          for r in rows]


@pytest.mark.parametrize("name", list(CASES))
def test_test_losses_are_those_recorded_before_the_refactor(name):
  recorded = json.loads(RECORD.read_text())
  expected, got = recorded["cases"][name], run_case(name)
  assert [(r["epoch"], r["model"]) for r in got] == [(r["epoch"], r["model"]) for r in expected]
  assert [sorted(r) for r in got] == [sorted(r) for r in expected]
  want = np.array([[r.get(k, 0.0) for k in KEYS] for r in expected])
  have = np.array([[r.get(k, 0.0) for k in KEYS] for r in got])
  if recorded["cpu"] == cpu():
    np.testing.assert_array_equal(have, want)
  else:
    np.testing.assert_allclose(have, want, rtol=1e-4)


if __name__ == "__main__":
  if sys.argv[1:] != ["--record"]:
    sys.exit("usage: python tests/test_same_numbers.py --record")
  import subprocess  # pylint: disable=g-import-not-at-top
  commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                          text=True, check=True).stdout.strip()
  RECORD.write_text(json.dumps({"recorded_with": f"commit {commit}, tests/test_same_numbers.py",
                                "cpu": cpu(), "cases": {n: run_case(n) for n in CASES}},
                               indent=1) + "\n")
  print(RECORD.read_text())


def test_a_workdir_of_the_version_before_resumes_with_the_same_numbers(tmp_path, trained_workdir):
  """tests/data/workdir_dbeae5b (see its README) resumed by this version ends as a run of
  this version from scratch: the same test losses and parameters."""
  import shutil  # pylint: disable=g-import-not-at-top
  from vae_jax import checkpoints, reporting, train  # pylint: disable=g-import-not-at-top
  from vae_jax.configs import tiny  # pylint: disable=g-import-not-at-top
  workdir = tmp_path / "old"
  shutil.copytree(REPO / "tests" / "data" / "workdir_dbeae5b", workdir,
                  ignore=shutil.ignore_patterns("README.md"))
  train.train_and_evaluate(tiny.get_config(), workdir, verbose=False)
  resumed, fresh = reporting.read_metrics(workdir), reporting.read_metrics(trained_workdir)
  have = np.array([[r[k] for k in KEYS[:3]] for r in resumed])
  want = np.array([[r[k] for k in KEYS[:3]] for r in fresh])
  same_cpu = json.loads(RECORD.read_text())["cpu"] == cpu()
  params = [jax.tree.leaves(checkpoints.load(w).params) for w in (workdir, trained_workdir)]
  if same_cpu:
    np.testing.assert_array_equal(have, want)
    for a, b in zip(*params):
      np.testing.assert_array_equal(a, b)
  else:  # The first 50 steps ran on the recording CPU: float32 rounding differs elsewhere.
    np.testing.assert_allclose(have, want, rtol=1e-4)
