"""Several models in one program: stacked, vmapped, swept, resumed, loaded and evaluated
one by one."""
import json

import jax
import numpy as np
import pytest

import vae_jax
from conftest import latest_params, run_module, stop_after_chunks
from vae_jax import reporting
from vae_jax import stacked
from vae_jax import sweep
from vae_jax import train
from vae_jax.configs import tiny
from vae_jax.errors import UsageError

# A batched matrix product (vmap over models) may sum in another order than the
# single-model one, so a stacked model matches its solo run only to rounding,
# which Adam can amplify for a few weights: we compare whole parameter arrays
# by relative L2 distance, with the tolerance and error model of test_parallel.
RELATIVE_L2_TOLERANCE = 1e-4


def _config(**overrides):
  config = tiny.get_config()
  config.num_epochs = 1
  config.update(overrides)
  return config


def _distance(a, b) -> float:
  """The largest relative L2 distance between corresponding parameter arrays."""
  return max(float(np.linalg.norm(np.asarray(x, np.float64) - np.asarray(y, np.float64))
                   / np.linalg.norm(np.asarray(y, np.float64)))
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


@pytest.fixture(scope="module")
def three_models(tmp_path_factory):
  """Seeds 0, 1, 2, each model shuffling the data in its own seed's order (vmapped)."""
  workdir = tmp_path_factory.mktemp("three_models")
  train.train_and_evaluate(_config(num_models=3, independent_data_order=True,
                                   model_mapping="vmap"), workdir, verbose=False)
  return workdir


def _params(workdir, i):
  return vae_jax.load(workdir, index=i).params


def test_sweeps_are_products_in_field_order():
  config = _config()
  config.sweep.beta, config.sweep.learning_rate = "0.5,4", "1e-3,3e-4,1e-4"
  models = sweep.model_settings(config)
  assert len(models) == 6
  assert [(m["learning_rate"], m["beta"]) for m in models[:3]] == [
      (1e-3, 0.5), (1e-3, 4.0), (3e-4, 0.5)]
  assert [m["seed"] for m in models] == [0, 1, 2, 3, 4, 5]  # seed + i unless swept.
  config.sweep.seed = "7,7"
  assert [m["seed"] for m in sweep.model_settings(config)][:4] == [7, 7, 7, 7]
  assert [m["seed"] for m in sweep.model_settings(_config(num_models=3))] == [0, 1, 2]


@pytest.mark.parametrize("field, values, message", [
    ("beta", "1,x", "sweep.beta: cannot read 'x' as float"),
    ("learning_rate", "1e-3,0", "learning_rate must be > 0"),
    ("kl_warmup_steps", "-5", "kl_warmup_steps must be >= 0"),
])
def test_bad_sweep_values_are_refused(field, values, message):
  config = _config()
  config.sweep[field] = values
  with pytest.raises(UsageError, match=message):
    sweep.model_settings(config)


def test_num_models_must_agree_with_the_sweep():
  config = _config(num_models=3)
  config.sweep.beta = "1,2"
  with pytest.raises(UsageError, match="num_models=3 disagrees with the sweep, which makes 2"):
    sweep.model_settings(config)


@pytest.mark.slow
@pytest.mark.parametrize("args, message", [
    (["--config.sweep.latents=2,4"], "sweep.latents: latents changes the parameter shapes"),
    (["--config.sweep.hidden=8,16"], "train them in separate runs"),
    (["--config.sweep.beta=1,x"], "sweep.beta: cannot read 'x'"),
])
def test_the_cli_refuses_bad_sweeps_in_one_line(tmp_path, args, message):
  result = run_module("vae_jax.train", f"--workdir={tmp_path / 'w'}", "--config=tiny", *args)
  assert result.returncode == 2 and message in result.stderr
  assert len(result.stderr.strip().splitlines()) == 1
  assert not (tmp_path / "w").exists()


@pytest.mark.slow
def test_each_stacked_model_is_its_solo_run(three_models, tmp_path):
  for seed in (0, 2):
    train.train_and_evaluate(_config(seed=seed), tmp_path / f"seed{seed}", verbose=False)
    solo = latest_params(tmp_path / f"seed{seed}")
    assert _distance(_params(three_models, seed), solo) < RELATIVE_L2_TOLERANCE, seed
  assert _distance(_params(three_models, 1), solo) > 0.1  # Another seed, another model.


@pytest.mark.slow
def test_models_mapped_one_after_another_are_their_solo_runs_bit_for_bit(tmp_path):
  """model_mapping=sequential (auto's choice on CPU) runs each model's single-model
  program in turn: model i is the run of seed i alone, to the last bit."""
  workdir = tmp_path / "two"
  train.train_and_evaluate(_config(num_models=2, independent_data_order=True,
                                   model_mapping="sequential"), workdir, verbose=False)
  assert json.loads((workdir / "config.json").read_text())["model_mapping"] == "sequential"
  train.train_and_evaluate(_config(seed=1), tmp_path / "seed1", verbose=False)
  solo = latest_params(tmp_path / "seed1")
  for got, want in zip(jax.tree.leaves(_params(workdir, 1)), jax.tree.leaves(solo)):
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
  solo_records = reporting.read_metrics(tmp_path / "seed1")
  stacked_records = [r for r in reporting.read_metrics(workdir) if r.get("model") == 1]
  assert [r["test_loss"] for r in stacked_records] == [r["test_loss"] for r in solo_records]


@pytest.mark.slow
def test_records_figures_and_tensorboard_per_model(three_models):
  records = reporting.read_metrics(three_models)
  assert [(r["epoch"], r["model"], r["seed"]) for r in records] == [(1, 0, 0), (1, 1, 1), (1, 2, 2)]
  assert len({r["test_loss"] for r in records}) == 3
  for i in range(3):
    assert (three_models / "images" / f"model_{i}" / "sample_1.png").is_file()
    assert list((three_models / "tensorboard" / f"model_{i}").glob("events.out.tfevents.*"))
  config = json.loads((three_models / "config.json").read_text())
  assert config["num_models"] == 3


@pytest.mark.slow
def test_the_epoch_line_shows_mean_and_spread(tmp_path, capsys):
  train.train_and_evaluate(_config(num_models=2), tmp_path)
  line = next(l for l in capsys.readouterr().out.splitlines() if l.startswith("epoch"))
  assert "test loss" in line and "±" in line and "(best" in line and "x 2 models" in line


@pytest.mark.slow
def test_a_diverging_model_is_frozen_and_the_others_go_on(tmp_path, capsys):
  config = _config(num_epochs=2)
  config.sweep.learning_rate = "1e-3,1e9"
  result = train.train_and_evaluate(config, tmp_path)
  assert not result.stopped and result.epochs_done == 2
  assert "warning: model 1" in capsys.readouterr().err
  records = reporting.read_metrics(tmp_path)
  good = [r for r in records if r["model"] == 0]
  bad = [r for r in records if r["model"] == 1]
  assert good[1]["test_loss"] < good[0]["test_loss"] and good[0]["train_loss"] is not None
  assert all(r["train_loss"] is None and r["diverged_at_step"] <= 125 for r in bad)
  alive = np.asarray(result.state.alive)
  assert alive.tolist() == [True, False]
  frozen = stacked.index(result.state.params, 1)
  assert all(np.isfinite(np.asarray(leaf)).all() for leaf in jax.tree.leaves(frozen))


@pytest.mark.slow
def test_every_model_diverging_stops_the_run(tmp_path):
  config = _config()
  config.sweep.learning_rate = "1e9,1e10"
  with pytest.raises(vae_jax.errors.TrainingDiverged, match="no checkpoint had been saved yet"):
    train.train_and_evaluate(config, tmp_path, verbose=False)


@pytest.mark.slow
def test_stacked_runs_resume_bit_exactly(tmp_path, monkeypatch):
  config = _config(num_epochs=2)
  config.sweep.beta = "1,2"
  train.train_and_evaluate(config, tmp_path / "straight", verbose=False)
  with monkeypatch.context() as patch:
    stop = stop_after_chunks(patch, 6)  # Inside epoch 2.
    train.train_and_evaluate(config, tmp_path / "resumed", verbose=False, should_stop=stop)
  train.train_and_evaluate(config, tmp_path / "resumed", verbose=False)
  jax.tree.map(np.testing.assert_array_equal, latest_params(tmp_path / "straight"),
               latest_params(tmp_path / "resumed"))


@pytest.mark.slow
def test_a_different_model_count_is_refused(three_models):
  with pytest.raises(UsageError, match="num_models 3 vs 2"):
    train.train_and_evaluate(_config(num_models=2, num_epochs=2), three_models, verbose=False)


@pytest.mark.slow
def test_load_and_evaluate_each_model(three_models, tmp_path):
  with pytest.raises(UsageError, match="model 3 out of range: .* holds 3 model"):
    vae_jax.load(three_models, index=3)
  out = tmp_path / "eval.json"
  result = run_module("vae_jax.evaluate", f"--workdir={three_models}", "--k=4",
                      "--num_examples=40", f"--out={out}")
  assert result.returncode == 0, result.stderr
  record = json.loads(out.read_text())
  assert record["num_models"] == 3 and [m["model"] for m in record["models"]] == [0, 1, 2]
  nlls = [m["nll"] for m in record["models"]]
  np.testing.assert_allclose(record["mean"]["nll"], np.mean(nlls))
  np.testing.assert_allclose(record["std"]["nll"], np.std(nlls, ddof=1))
  assert "3 models, mean ± standard deviation" in result.stdout
  single = run_module("vae_jax.evaluate", f"--workdir={three_models}", "--k=4",
                      "--num_examples=40", "--model=2", f"--out={out}")
  assert single.returncode == 0, single.stderr
  assert json.loads(out.read_text())["nll"] == nlls[2]
  sample = run_module("vae_jax", "sample", f"--workdir={three_models}", "--model=1", "--num=4")
  assert sample.returncode == 0, sample.stderr
  assert (three_models / "images" / "model_1" / "samples.png").is_file()


@pytest.mark.slow
def test_a_shared_data_order_is_model_0s(three_models, tmp_path):
  train.train_and_evaluate(_config(num_models=2), tmp_path, verbose=False)
  # Model 0 draws seed 0's order either way; model 1 follows it here, its own there.
  assert _distance(_params(tmp_path, 0), _params(three_models, 0)) < RELATIVE_L2_TOLERANCE
  assert _distance(_params(tmp_path, 1), _params(three_models, 1)) > 1e-3


@pytest.mark.slow
def test_bfloat16_trains_and_float32_is_unchanged(tmp_path, trained_workdir):
  train.train_and_evaluate(_config(num_epochs=2, compute_dtype="bfloat16"), tmp_path,
                             verbose=False)
  bf16 = reporting.read_metrics(tmp_path)
  assert bf16[1]["test_loss"] < bf16[0]["test_loss"]
  f32 = reporting.read_metrics(trained_workdir)
  # Different arithmetic, the same model: close but not equal to float32's run.
  assert bf16[1]["test_loss"] != f32[1]["test_loss"]
  assert abs(bf16[1]["test_loss"] - f32[1]["test_loss"]) < 0.05 * f32[1]["test_loss"]
  leaves = jax.tree.leaves(latest_params(tmp_path))
  assert all(leaf.dtype == np.float32 for leaf in leaves)  # Parameters stay float32.
