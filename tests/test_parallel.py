"""Data parallelism: 4 simulated CPU devices, 2 processes on loopback, 1 device agree.

Each run is a subprocess, since the device count is fixed when jax starts.
Sharding the batch changes only the order in which the gradient's per-example
terms are summed, so parameters agree to float32 rounding amplified by 125
Adam steps: we allow 1e-4 absolute (the weights are of order 0.05-0.2).
"""
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from conftest import REPO, latest_params
from vae_jax import reporting
from vae_jax import trainer
from vae_jax.configs import tiny

TOLERANCE = 1e-4


def _train(workdir, devices: int, *args: str, process_id=None, port=None, wait=True):
  env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
  command = [sys.executable, "-m", "vae_jax.train", f"--workdir={workdir}",
             "--config=vae_jax/configs/tiny.py", "--config.num_epochs=1", *args]
  if process_id is not None:
    command += [f"--coordinator_address=localhost:{port}", "--num_processes=2",
                f"--process_id={process_id}"]
  process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
  if not wait:
    return process
  out, err = process.communicate(timeout=600)
  assert process.returncode == 0, err[-3000:]
  return out


def _assert_close(a, b):
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=0, atol=TOLERANCE), a, b)


@pytest.fixture(scope="session")
def one_device_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("one_device")
  config = tiny.get_config()
  config.num_epochs = 1
  trainer.train_and_evaluate(config, workdir, verbose=False)
  return workdir


@pytest.fixture(scope="session")
def four_device_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("four_devices")
  out = _train(workdir, 4)
  assert "on 4 cpu device(s)" in out
  return workdir


def test_four_devices_give_the_parameters_of_one(one_device_run, four_device_run):
  _assert_close(latest_params(one_device_run), latest_params(four_device_run))
  one, four = (reporting.read_metrics(w)[0] for w in (one_device_run, four_device_run))
  assert abs(one["test_loss"] - four["test_loss"]) < 1e-2


def test_two_processes_give_the_parameters_of_one(one_device_run, tmp_path):
  with socket.socket() as s:  # A free port for the coordinator.
    s.bind(("localhost", 0))
    port = s.getsockname()[1]
  workdir = tmp_path / "two_processes"
  processes = [_train(workdir, 2, process_id=i, port=port, wait=False) for i in range(2)]
  outputs = [p.communicate(timeout=600) for p in processes]
  for p, (_, err) in zip(processes, outputs):
    assert p.returncode == 0, err[-3000:]
  assert "on 4 cpu device(s)" in outputs[0][0]
  assert "epoch" in outputs[0][0] and "epoch" not in outputs[1][0]  # Only process 0 reports.
  assert len(reporting.read_metrics(workdir)) == 1
  _assert_close(latest_params(one_device_run), latest_params(workdir))


def test_a_four_device_checkpoint_continues_on_one_device(four_device_run, tmp_path):
  config = tiny.get_config()
  config.num_epochs = 2
  trainer.train_and_evaluate(config, tmp_path / "straight", verbose=False)
  result = trainer.train_and_evaluate(config, four_device_run, verbose=False)
  assert result.epochs_done == 2 and jax.device_count() == 1
  _assert_close(latest_params(tmp_path / "straight"), latest_params(four_device_run))


def test_batch_size_must_divide_over_the_devices(tmp_path):
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=3")
  result = subprocess.run(
      [sys.executable, "-m", "vae_jax.train", f"--workdir={tmp_path}",
       "--config=vae_jax/configs/tiny.py", "--config.eval_batch_size=501"],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert result.returncode == 2
  assert "batch_size=64 does not divide over 3 devices" in result.stderr
