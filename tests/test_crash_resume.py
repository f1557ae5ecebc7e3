"""Crash and resume: a training process killed with SIGKILL at several points (inside a
checkpoint save, inside a training chunk, while writing metrics.jsonl), rerun each time,
ends with the parameters and metrics of the uninterrupted run, bit for bit."""
import signal
import time

import pytest
import jax
import numpy as np

import vae_jax
from conftest import finish
from conftest import latest_params
from conftest import start_training
from conftest import untimed
from vae_jax import checkpoints
from vae_jax import lock
from vae_jax import reporting

pytestmark = pytest.mark.slow  # Every test here trains, or starts a process.

def _temporary_folders(workdir) -> list:
  return [p for p in (workdir / "checkpoints").iterdir() if not p.name.isdigit()]


def _wait_for(path, process, timeout: float = 120) -> None:
  deadline = time.monotonic() + timeout
  while not path.exists():
    assert process.poll() is None, process.communicate()[1][-2000:]
    assert time.monotonic() < deadline, f"{path} did not appear"
    time.sleep(0.05)


def test_killed_at_several_points_and_rerun_ends_as_the_uninterrupted_run(
    trained_workdir, tmp_path, compilation_cache):
  """The same 2 epochs of the tiny config as `trained_workdir` (checkpoints 125 and 250)."""
  workdir, marker = tmp_path / "run", tmp_path / "in_save"
  flags = (f"--workdir={workdir}", "--config=tiny")
  run = lambda fault: finish(start_training(fault, *flags, env=compilation_cache))

  # 1. SIGKILL inside the save of checkpoint 250. Meanwhile a reader, which takes no
  #    lock, sees the complete checkpoint 125 and not the half-written 250.
  process = start_training(f"pause-in-save:250:{marker}", *flags, env=compilation_cache)
  _wait_for(marker, process)
  assert _temporary_folders(workdir)  # The save of 250 is under way...
  assert vae_jax.load(workdir).step == 125  # ...and invisible.
  process.send_signal(signal.SIGKILL)
  assert finish(process)[0] == -signal.SIGKILL
  assert checkpoints.Checkpointer(workdir, create=False).all_steps() == [125]
  assert [r["epoch"] for r in reporting.read_metrics(workdir)] == [1, 2]  # Epoch 2 is not saved.

  # 2. SIGKILL inside a training chunk of epoch 2. The rerun takes the dead run's lock
  #    over, removes its half-written save and goes on from 125.
  code, _, err = run("kill-after-step:175")
  assert code == -signal.SIGKILL
  assert f"warning: taking over {workdir / lock.LOCK_FILE}, left by pid {process.pid}" in err
  assert not _temporary_folders(workdir)

  # 3. SIGKILL while writing epoch 2's line of metrics.jsonl: half a line is left.
  code, _, err = run("kill-in-metrics:2")
  assert code == -signal.SIGKILL
  assert not (workdir / reporting.METRICS_FILE).read_text().endswith("\n")

  # 4. The rerun drops the torn line with a warning and finishes.
  code, out, err = run("none")
  assert code == 0, err
  assert "dropped a torn last line" in err and "epoch   2/2" in out
  assert checkpoints.Checkpointer(workdir, create=False).all_steps() == [125, 250]
  jax.tree.map(np.testing.assert_array_equal, latest_params(trained_workdir),
               latest_params(workdir))
  assert untimed(workdir) == untimed(trained_workdir)
  assert not (workdir / lock.LOCK_FILE).exists()
