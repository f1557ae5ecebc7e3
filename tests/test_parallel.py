"""Data parallelism: 4 simulated CPU devices, 2 processes on loopback, 1 device agree.

Each run is a subprocess, since the device count is fixed when jax starts.

Error model. Sharding the batch changes only the order in which the gradient's
per-example terms are summed: each step's gradient differs by float32
rounding, about 1e-7 relative, and so do the parameters after it. Adam divides
each update by the running RMS of its gradient, so for the few weights whose
gradient is itself at the level of rounding the update's sign is decided by
rounding: such a weight can drift by up to the learning rate per step
(seen on an AVX-512 CPU: 2 of 50,176 weights 2.4e-4 apart after 250 steps,
while the rest agreed to 1e-7). An elementwise bound is therefore luck on
another CPU. What rounding cannot move is each parameter array as a whole:
its relative L2 distance was 5e-8 to 2e-7 between 1 and 4 devices over 2
epochs, and 1.6e-5 with those two outliers. We allow 1e-4, five times the
worst seen; a real mistake (a shard left out of the gradient, a wrong
all-reduce) moves whole arrays by 1e-2 or more. The test losses, averages
over 1,996 images, agree to 1e-6; we allow 1e-2 nats.
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

RELATIVE_L2_TOLERANCE = 1e-4


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
  """Each parameter array of `a` within RELATIVE_L2_TOLERANCE of `b`'s (module docstring)."""
  for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree.leaves(b)):
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    distance = np.linalg.norm(x - y) / np.linalg.norm(y)
    assert distance < RELATIVE_L2_TOLERANCE, (jax.tree_util.keystr(path), distance)


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
