"""The disentanglement metrics of trained models: `vae-jax disentanglement`, its Python function,
the per-epoch scores in metrics.jsonl, and the latent API (traversals sorted by KL, the
explorer) for the new families.

One tiny beta-TCVAE run of 2 models (tc_beta 1 and 6) on a 256-image shapes2d subset,
scoring itself after its epoch, is shared by every test here; the metrics run at 1% of
disentanglement_lib's numbers of points (their exactness is tests/test_disentanglement.py's).
"""
import json
import threading
import urllib.request

import numpy as np
import pytest

import vae_jax
from conftest import run_module
from vae_jax import disentanglement
from vae_jax import disentanglement_eval as de
from vae_jax import explorer
from vae_jax import latent
from vae_jax import reporting
from vae_jax import train
from vae_jax.configs import tiny
from vae_jax.errors import UsageError

pytestmark = pytest.mark.slow  # Every test here trains, or starts a process.

SIZES = de.scaled_sizes(0.01)


@pytest.fixture(scope="module", autouse=True)
def few_trees():
  """DCI with 5 boosting rounds, not 100: the same computation in training and in the
  function, at a twentieth of the cost (DCI's values are tests/test_disentanglement.py's)."""
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(disentanglement, "DCI_TREES", 5)
    yield


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("betatc_run")
  config = tiny.get_config()
  config.update(family="betatc", dataset="shapes2d", train_subset=256, test_fraction=0.001,
                num_epochs=1, hidden=16, latents=4, eval_iwae_k=2, disentanglement_every=1,
                disentanglement_scale=0.01)
  config.sweep = {"tc_beta": "1,6"}
  train.train_and_evaluate(config, workdir, verbose=False)
  return workdir


@pytest.fixture(scope="module")
def result(run, tmp_path_factory):
  return de.evaluate_workdir(run, sizes=SIZES)


def test_the_json_holds_each_model_and_the_mean_and_sd_over_models(run, result):
  saved = json.loads((run / de.FILE_NAME).read_text())
  assert saved == json.loads(json.dumps(result))
  assert saved["family"] == "betatc" and saved["dataset"] == "shapes2d"
  assert saved["factor_sizes"] == [3, 6, 40, 32, 32] and saved["num_models"] == 2
  assert [(m["model"], m["tc_beta"], m["seed"]) for m in saved["models"]] == [(0, 1.0, 0),
                                                                               (1, 6.0, 1)]
  for name in de.SCORES:
    values = np.array([m["scores"][name] for m in saved["models"]])
    assert saved["mean"][name] == pytest.approx(values.mean())
    assert saved["std"][name] == pytest.approx(values.std(ddof=1))
    assert all(0 <= v <= 1 for v in values), name
  # The headline scores are the metrics' held-out numbers.
  m = saved["models"][1]
  assert m["scores"]["mig"] == m["metrics"]["mig"]
  assert m["scores"]["factor_vae"] == m["metrics"]["factor_vae"]["eval_accuracy"]
  table = de.format_table(result).splitlines()
  assert len(table) == 2 + 2 + 2 and table[-2].startswith(" mean") and "MIG" in table[1]


def test_a_run_scores_its_models_into_metrics_jsonl_with_the_commands_numbers(run, result):
  """The scores computed in training (from the state) and by the function (from the
  checkpoint), separately, with the same seed and sizes: the same numbers."""
  last = {r["model"]: r for r in reporting.read_metrics(run) if r["epoch"] == 1}
  assert sorted(last) == [0, 1]
  for m in result["models"]:
    record = last[m["model"]]
    assert {n: record[de.PREFIX + n] for n in de.SCORES} == m["scores"]
    # And the family's decomposition every epoch.
    assert {"train_mi", "train_tc", "train_dim_kl"} <= set(record)


def test_a_workdir_without_factors_is_refused_in_one_line(trained_workdir):
  with pytest.raises(UsageError, match="factors"):
    de.evaluate_workdir(trained_workdir, sizes=SIZES, out=False)
  done = run_module("vae_jax", "disentanglement", f"--workdir={trained_workdir}")
  assert done.returncode == 2, done.stderr
  lines = done.stderr.strip().splitlines()
  assert len(lines) == 1 and "factors" in lines[0], done.stderr


def test_traversals_are_sorted_by_kl_and_are_traverse_rows(run):
  model = vae_jax.load(run, index=1)
  x = np.asarray(de.ground_truth(model.config).images(
      np.array([[0, 0, 0, 5, 5], [2, 5, 10, 20, 20], [1, 3, 20, 16, 8]])))
  values = np.linspace(-2, 2, 5)
  rows, order, kl = vae_jax.traversals(model, x, values)
  mean, logvar = (np.asarray(a, np.float64) for a in vae_jax.encode(model, x))
  want = (0.5 * (mean ** 2 + np.exp(logvar) - logvar - 1)).mean(0)
  np.testing.assert_allclose(kl, want, rtol=1e-5, atol=1e-7)
  assert list(order) == sorted(range(4), key=lambda d: -want[d])
  assert rows.shape == (3, 4, 5, 64, 64)
  for j, d in enumerate(order):
    np.testing.assert_array_equal(rows[:, j], np.asarray(latent.traverse(model, x, int(d),
                                                                         values)))


def test_the_traverse_command_writes_one_grid_per_image(run, tmp_path):
  done = run_module("vae_jax", "traverse", f"--workdir={run}", "--index=0,1", "--steps=5",
                    f"--out={tmp_path}")
  assert done.returncode == 0, done.stderr
  assert "latents by KL" in done.stdout
  from PIL import Image  # pylint: disable=g-import-not-at-top
  for i in (0, 1):
    with Image.open(tmp_path / f"traversals_{i}.png") as image:
      assert image.size[0] > image.size[1]  # 5 values wide, 4 latents high.


def test_the_explorer_decodes_for_these_families(run):
  model = vae_jax.load(run)
  server = explorer.serve(model, port=0, max_points=50)
  thread = threading.Thread(target=server.serve_forever, daemon=True)
  thread.start()
  try:
    url = explorer.address(server)
    codes = np.random.default_rng(0).normal(size=(2, 4)).astype(np.float32)
    request = urllib.request.Request(url + "decode", data=json.dumps(
        {"codes": codes.tolist()}).encode(), method="POST")
    with urllib.request.urlopen(request, timeout=60) as response:
      reply = json.loads(response.read())
    assert reply["shape"] == [64, 64, 1] and len(reply["images"]) == 2
    with urllib.request.urlopen(url + "state", timeout=60) as response:
      state = json.loads(response.read())
    assert np.asarray(state["means"]).shape == (50, 4) and state["dataset"] == "shapes2d"
  finally:
    server.shutdown()
    server.server_close()

