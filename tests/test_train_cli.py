"""`python -m vae_jax.train` end to end: outputs, resume, signals, bad input."""
import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from conftest import REPO, latest_params, run_module
from vae_jax import checkpoints
from vae_jax import data
from vae_jax import images
from vae_jax import reporting
from vae_jax import train
from vae_jax.configs import tiny

pytestmark = pytest.mark.slow  # Every test here trains, or starts a process.

TINY = "--config=vae_jax/configs/tiny.py"
METRIC_KEYS = {"epoch", "train_loss", "test_loss", "test_recon", "test_kl", "epoch_seconds",
               "examples_per_second"}


def _tensorboard_events(folder):
  """The TensorBoard run in `folder`, read with the tensorboard package alone (no TensorFlow)."""
  from tensorboard.backend.event_processing import event_accumulator  # pylint: disable=g-import-not-at-top
  run = event_accumulator.EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0})
  return run.Reload()


def test_cli_trains_and_writes_every_output(tmp_path):
  workdir = tmp_path / "run"
  result = run_module("vae_jax.train", f"--workdir={workdir}", TINY)
  assert result.returncode == 0, result.stderr
  assert "epoch   1/2  test loss" in result.stdout and "epoch   2/2" in result.stdout
  assert f"images: {workdir / 'images'}" in result.stdout
  assert "compiled in" in result.stdout

  config = json.loads((workdir / "config.json").read_text())
  assert config["dataset"] == "mnist_sample" and config["image_shape"] == [28, 28, 1]
  records = reporting.read_metrics(workdir)
  assert [r["epoch"] for r in records] == [1, 2]
  for r in records:
    assert METRIC_KEYS <= r.keys()
    assert np.isclose(r["test_loss"], r["test_recon"] + r["test_kl"], rtol=1e-5)
  assert records[1]["test_loss"] < records[0]["test_loss"]
  assert checkpoints.Checkpointer(workdir).all_steps() == [125, 250]
  for epoch in (1, 2):
    recon = Image.open(workdir / "images" / f"reconstruction_{epoch}.png")
    sample = Image.open(workdir / "images" / f"sample_{epoch}.png")
    assert recon.size[::-1] == images.grid_size(2, 8, (28, 28))  # 8 over their reconstructions.
    assert sample.size[::-1] == images.grid_size(8, 8, (28, 28))  # 64 samples.
  _check_tensorboard(workdir / "tensorboard", records)


def _check_tensorboard(folder, records):
  """Scalars against the training step, exactly metrics.jsonl's; bookkeeping not charted;
  the figures and the config logged."""
  events = _tensorboard_events(folder)
  tags = events.Tags()
  assert set(tags["scalars"]) == set(reporting.scalars(records[0]))
  assert {"train_loss", "test_loss", "test_kl", "epoch_seconds"} <= set(tags["scalars"])
  assert not {"epoch", "step", "model", "iwae_k"} & set(tags["scalars"])
  for name in tags["scalars"]:
    logged = [(e.step, e.value) for e in events.Scalars(name)]
    expected = [(r["step"], r[name]) for r in records if name in r]
    assert [s for s, _ in logged] == [s for s, _ in expected] == [125, 250][:len(expected)]
    np.testing.assert_allclose([v for _, v in logged], [v for _, v in expected], rtol=1e-6)
  assert {"reconstruction", "sample"} <= set(tags["images"])
  assert [e.step for e in events.Images("sample")] == [125, 250]
  assert "config/text_summary" in tags["tensors"]
  assert b'"latents": 4' in events.Tensors("config/text_summary")[0].tensor_proto.string_val[0]
  from tensorboard.backend.event_processing import plugin_event_multiplexer  # pylint: disable=g-import-not-at-top
  runs = plugin_event_multiplexer.EventMultiplexer().AddRunsFromDirectory(str(folder))
  hparams = runs.Reload().PluginRunToTagToContent("hparams")["."]
  assert b"latents" in hparams["_hparams_/experiment"]  # The config as hyperparameters too.


def test_rerunning_a_finished_run_changes_nothing(trained_workdir):
  before = {p: p.stat().st_mtime_ns for p in trained_workdir.rglob("*")}
  result = run_module("vae_jax.train", f"--workdir={trained_workdir}", TINY)
  assert result.returncode == 0, result.stderr
  assert "already trained for 2 epochs" in result.stdout and "nothing to do" in result.stdout
  assert {p: p.stat().st_mtime_ns for p in trained_workdir.rglob("*")} == before


def _start_and_signal(workdir, signum, *args):
  """Starts training, sends `signum` once epoch 1 is reported; returns (rc, stdout)."""
  process = subprocess.Popen(
      [sys.executable, "-m", "vae_jax.train", f"--workdir={workdir}", TINY, *args],
      cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  lines = []
  for line in process.stdout:
    lines.append(line)
    if line.startswith("epoch   1/"):
      process.send_signal(signum)
      break
  out, err = process.communicate(timeout=300)
  return process.returncode, "".join(lines) + out, err


def test_sigint_saves_a_checkpoint_and_the_rerun_resumes_exactly(tmp_path):
  epochs = "--config.num_epochs=10"
  rc, out, err = _start_and_signal(tmp_path / "cut", signal.SIGINT, epochs)
  assert rc == 128 + signal.SIGINT, err
  assert "checkpoint saved at step" in out and "Rerun the same command to resume" in out
  saved = checkpoints.Checkpointer(tmp_path / "cut").latest_step()
  assert 125 <= saved < 10 * 125
  resumed = run_module("vae_jax.train", f"--workdir={tmp_path / 'cut'}", TINY, epochs)
  assert resumed.returncode == 0, resumed.stderr
  config = tiny.get_config()
  config.num_epochs = 10
  train.train_and_evaluate(config, tmp_path / "whole", verbose=False)
  import jax  # pylint: disable=g-import-not-at-top
  jax.tree.map(np.testing.assert_array_equal, latest_params(tmp_path / "whole"),
               latest_params(tmp_path / "cut"))
  assert [r["epoch"] for r in reporting.read_metrics(tmp_path / "cut")] == list(range(1, 11))


def test_sigterm_saves_a_checkpoint(tmp_path):
  rc, out, _ = _start_and_signal(tmp_path, signal.SIGTERM, "--config.num_epochs=10")
  assert rc == 128 + signal.SIGTERM
  assert checkpoints.Checkpointer(tmp_path).latest_step() >= 125
  assert "interrupted during training" in out


def _idx_folder(tmp_path, breakage):
  folder = tmp_path / "idx"
  shutil.copytree(data.SAMPLE_DIR, folder)
  breakage(folder)
  return str(folder)


def _bad_magic(folder):
  path = folder / "t10k-images-idx3-ubyte.gz"
  path.write_bytes(gzip.compress(b"\x1f\x8b\x08\x00" + gzip.decompress(path.read_bytes())[4:]))


def _truncate(folder):
  path = folder / "train-images-idx3-ubyte.gz"
  path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes())[:100_000]))


BAD_INPUTS = {
    "unknown dataset": (["--config.dataset=cifar10"], "unknown dataset 'cifar10'"),
    "missing data_dir": (["--config.dataset=mnist", "--config.data_dir=/no/such/dir"],
                         "is not a folder"),
    "incomplete data_dir": (
        ["--config.dataset=mnist", "--config.data_dir={incomplete}"], "lacks train-labels"),
    "not IDX": (["--config.dataset=mnist", "--config.data_dir={bad_magic}"], "not an IDX file"),
    "truncated IDX": (["--config.dataset=mnist", "--config.data_dir={truncated}"], "truncated"),
    "latents <= 0": (["--config.latents=0"], "latents must be > 0"),
    "batch_size <= 0": (["--config.batch_size=0"], "batch_size must be > 0"),
    "batch_size too large": (["--config.batch_size=9000"], "larger than the training set"),
    "learning_rate <= 0": (["--config.learning_rate=-0.1"], "learning_rate must be > 0"),
    "num_epochs 0": (["--config.num_epochs=0"], "num_epochs must be > 0, got 0"),
    "unknown field": (["--config.latent=3"],
                      """unknown config field: 'latent' Did you mean "latents" instead"""),
    "bad value": (["--config.latents=abc"],
                  "--config.latents=abc: invalid literal for int() with base 10: 'abc'\n"),
    "missing config file": (["--config=/no/such/config.py"],
                            "cannot load config /no/such/config.py: no such file"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_exits_2_with_one_line(tmp_path, case):
  args, message = BAD_INPUTS[case]
  folders = {
      "incomplete": lambda: _idx_folder(
          tmp_path, lambda f: (f / "train-labels-idx1-ubyte.gz").unlink()),
      "bad_magic": lambda: _idx_folder(tmp_path, _bad_magic),
      "truncated": lambda: _idx_folder(tmp_path, _truncate),
  }
  args = [a.format(**{k: f() for k, f in folders.items() if "{" + k + "}" in a}) for a in args]
  workdir = tmp_path / "work"
  result = run_module("vae_jax.train", f"--workdir={workdir}", TINY, *args)
  assert result.returncode == 2, (result.stdout, result.stderr)
  assert message in result.stderr
  assert "Traceback" not in result.stderr
  assert len(result.stderr.strip().splitlines()) == 1, result.stderr
  assert not workdir.exists() or not any(workdir.iterdir())


def test_missing_workdir_flag_exits_2():
  result = run_module("vae_jax.train", TINY)
  assert result.returncode == 2 and "--workdir must have a value" in result.stderr


def test_a_workdir_of_another_model_shape_is_refused_and_kept(trained_workdir):
  before = {p: p.stat().st_mtime_ns for p in trained_workdir.rglob("*")}
  result = run_module("vae_jax.train", f"--workdir={trained_workdir}", TINY,
                      "--config.hidden=32", "--config.num_epochs=3")
  assert result.returncode == 2
  assert "holds a checkpoint of a different model (hidden 64 vs 32)" in result.stderr
  assert {p: p.stat().st_mtime_ns for p in trained_workdir.rglob("*")} == before


def _offline_env(tmp_path) -> dict:
  """A fresh machine's empty download cache and home folder."""
  return {"VAE_JAX_CACHE": str(tmp_path / "cache"), "HOME": str(tmp_path / "home")}


def test_the_default_command_offline_trains_on_the_shipped_digits(tmp_path):
  """The README's main command on a machine without network: one line, then mnist_sample.

  Prints when its lines came: the offline line, and the line that training starts.
  """
  workdir = tmp_path / "w"
  start = time.perf_counter()
  process = subprocess.Popen(
      [sys.executable, "-m", "vae_jax.train", f"--workdir={workdir}", "--config.num_epochs=1"],
      cwd=REPO, env={**os.environ, **_offline_env(tmp_path), "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, text=True)
  lines = [(time.perf_counter() - start, line) for line in process.stdout]
  stderr = process.stderr.read()
  assert process.wait(timeout=300) == 0, stderr
  assert lines[0][1] == f"reading the data (mnist, or the shipped digits offline) for {workdir} ...\n"
  if not lines[1][1].startswith("offline ("):
    pytest.skip("this machine can download MNIST")
  said_at, said = lines[1]
  started_at = next(t for t, line in lines if "compiled in" in line)
  print(f"first line after {lines[0][0]:.2f} s, offline line after {said_at:.2f} s, training "
        f"started after {started_at:.2f} s")
  assert "training on mnist_sample" in said and "full MNIST" in said
  assert "--config.data_dir" in said and said_at < 10 and "Traceback" not in stderr
  assert lines[2][1].startswith("compiling the training step (8,004 training images of "
                                "mnist_sample read)")
  assert "training images of mnist_sample" in lines[3][1]
  assert json.loads((workdir / "config.json").read_text())["dataset"] == "mnist_sample"
  assert not (tmp_path / "cache").exists()  # No download left a trace.


def test_an_explicit_mnist_offline_exits_2_fast_and_writes_nothing(tmp_path):
  """`--config.dataset=mnist` asks for full MNIST: offline that is one line, not the digits."""
  start = time.perf_counter()
  result = run_module("vae_jax.train", f"--workdir={tmp_path / 'w'}", "--config.dataset=mnist",
                      env_extra=_offline_env(tmp_path))
  seconds = time.perf_counter() - start
  if result.returncode == 0:
    pytest.skip("this machine can download MNIST")
  assert result.returncode == 2, result.stderr
  assert "--config.dataset=mnist_sample" in result.stderr and "--config.data_dir" in result.stderr
  assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
  assert seconds < 10, seconds
  assert sorted(p.name for p in tmp_path.iterdir()) == []  # No workdir, no cache, no home files.


def _no_network(*args, **kwargs):
  raise data.download.Offline("cannot download mnist: no mirror reachable", "no network")


def test_a_resumed_default_run_keeps_its_data_whatever_the_network(tmp_path, monkeypatch):
  """Started offline on mnist_sample, the default command resumes on it, not on full MNIST."""
  workdir = tmp_path / "w"
  config = tiny.get_config()
  config.dataset, config.num_epochs = "", 1
  monkeypatch.setattr(data.download, "fetch", _no_network)
  train.train_and_evaluate(config, workdir, verbose=False)
  assert json.loads((workdir / "config.json").read_text())["dataset"] == "mnist_sample"
  monkeypatch.setattr(data.download, "fetch", pytest.fail)  # Online now: must not be asked.
  config.num_epochs = 2
  train.train_and_evaluate(config, workdir, verbose=False)
  assert [r["epoch"] for r in reporting.read_metrics(workdir)] == [1, 2]



def test_without_a_dataset_name_the_results_carry_the_datas_name(tmp_path, capsys):
  """data_dir and no dataset: config.json, the start line and eval.json name the folder."""
  folder = tmp_path / "pen_strokes"
  shutil.copytree(data.SAMPLE_DIR, folder)
  labels = folder / "t10k-labels-idx1-ubyte.gz"
  content = bytearray(gzip.decompress(labels.read_bytes()))
  content[-1] = (content[-1] + 1) % 10  # No longer the shipped files' checksums.
  labels.write_bytes(gzip.compress(bytes(content)))
  config = tiny.get_config()
  config.dataset, config.data_dir, config.num_epochs = "", str(folder), 1
  train.train_and_evaluate(config, tmp_path / "w")
  assert "8,004 training images of pen_strokes" in capsys.readouterr().out
  assert json.loads((tmp_path / "w" / "config.json").read_text())["dataset"] == "pen_strokes"
  result = run_module("vae_jax", "evaluate", f"--workdir={tmp_path / 'w'}", "--k=2",
                      "--num_examples=20")
  assert result.returncode == 0, result.stderr
  assert json.loads((tmp_path / "w" / "eval.json").read_text())["dataset"] == "pen_strokes"
