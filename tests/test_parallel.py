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

from conftest import REPO, finish, latest_params, start_training, untimed
from vae_jax import checkpoints
from vae_jax import reporting
from vae_jax import train
from vae_jax.configs import tiny

pytestmark = pytest.mark.slow  # Every test here trains, or starts a process.

RELATIVE_L2_TOLERANCE = 1e-4


def _train(workdir, devices: int, *args: str):
  env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
  command = [sys.executable, "-m", "vae_jax.train", f"--workdir={workdir}",
             "--config=vae_jax/configs/tiny.py", "--config.num_epochs=1", *args]
  process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
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
  train.train_and_evaluate(config, workdir, verbose=False)
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


def _two_processes(workdir, *args: str, faults=("none", "none"), env=None) -> list[tuple]:
  """Runs 2 processes of 2 CPU devices each on loopback, process i with `faults[i]`
  (tests/faults.py); returns their (exit status, stdout, stderr). Neither outlives the call."""
  with socket.socket() as s:  # A free port for the coordinator.
    s.bind(("localhost", 0))
    port = s.getsockname()[1]
  env = dict(env or {}, XLA_FLAGS="--xla_force_host_platform_device_count=2")
  processes = [start_training(
      fault, f"--workdir={workdir}", "--config=tiny", "--config.num_epochs=1", *args,
      f"--coordinator_address=localhost:{port}", "--num_processes=2", f"--process_id={i}",
      env=env) for i, fault in enumerate(faults)]
  try:
    return [finish(p, timeout=300) for p in processes]
  finally:
    for p in processes:  # One that failed may leave the other waiting in a collective.
      if p.poll() is None:
        p.kill()
        p.communicate()


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory, compilation_cache):
  workdir = tmp_path_factory.mktemp("two_processes")
  results = _two_processes(workdir, env=compilation_cache)
  for code, _, err in results:
    assert code == 0, err[-3000:]
  return workdir, [out for _, out, _ in results]


def test_two_processes_give_the_parameters_of_one(one_device_run, two_process_run):
  workdir, outputs = two_process_run
  assert "on 4 cpu device(s)" in outputs[0]
  assert "epoch" in outputs[0] and "epoch" not in outputs[1]  # Only process 0 reports.
  assert len(reporting.read_metrics(workdir)) == 1
  _assert_close(latest_params(one_device_run), latest_params(workdir))


def test_sigterm_to_one_of_two_processes_stops_both_at_one_step_and_resumes_exactly(
    two_process_run, tmp_path, compilation_cache):
  """Process 1 alone gets SIGTERM, mid-epoch and then mid-evaluation: both processes
  stop at the same chunk boundary, save one checkpoint together and exit with 143; the
  rerun ends with the uninterrupted run's parameters and metrics, bit for bit."""
  workdir = tmp_path / "preempted"
  codes = lambda results: [code for code, _, _ in results]
  results = _two_processes(workdir, faults=("none", "sigterm-after-step:50"), env=compilation_cache)
  assert codes(results) == [143, 143], results[0][2][-3000:]
  assert ("interrupted during training in epoch 1 (50 of 125 steps done); checkpoint saved at "
          "step 50") in results[0][1]
  assert checkpoints.Checkpointer(workdir, create=False).all_steps() == [50]

  results = _two_processes(workdir, faults=("none", "sigterm-in-eval:1:1"), env=compilation_cache)
  assert codes(results) == [143, 143], results[0][2][-3000:]
  assert "interrupted during evaluation in epoch 1" in results[0][1]
  assert checkpoints.Checkpointer(workdir, create=False).all_steps() == [50, 125]
  assert not reporting.read_metrics(workdir)

  results = _two_processes(workdir, env=compilation_cache)
  assert codes(results) == [0, 0], results[0][2][-3000:]
  uninterrupted = two_process_run[0]
  jax.tree.map(np.testing.assert_array_equal, latest_params(uninterrupted), latest_params(workdir))
  assert untimed(workdir) == untimed(uninterrupted)


def test_a_four_device_checkpoint_continues_on_one_device(four_device_run, tmp_path):
  config = tiny.get_config()
  config.num_epochs = 2
  train.train_and_evaluate(config, tmp_path / "straight", verbose=False)
  result = train.train_and_evaluate(config, four_device_run, verbose=False)
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
