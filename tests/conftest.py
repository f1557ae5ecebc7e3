"""Shared fixtures: keys, the tiny config, and workdirs trained once per session."""
import os
import pathlib
import subprocess
import sys

import jax
import pytest

from vae_jax import checkpoints
from vae_jax import epoch
from vae_jax import trainer
from vae_jax.configs import tiny

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture
def key():
  return jax.random.key(0)


@pytest.fixture
def tiny_config():
  return tiny.get_config()


@pytest.fixture(scope="session")
def trained_workdir(tmp_path_factory):
  """A workdir trained for 2 epochs of mnist_sample with the tiny config."""
  workdir = tmp_path_factory.mktemp("tiny_run")
  trainer.train_and_evaluate(tiny.get_config(), workdir, verbose=False)
  return workdir


def run_module(module: str, *args: str, timeout: float = 300, env_extra: dict | None = None,
               **popen) -> subprocess.CompletedProcess:
  """Runs `python -m module args...` from the repository root; returns the result."""
  env = dict(os.environ, PYTHONUNBUFFERED="1", **(env_extra or {}))
  return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=timeout, **popen)


def latest_params(workdir):
  """The parameters of the latest checkpoint in `workdir`."""
  return checkpoints.load(workdir).params


def stop_after_chunks(patch, chunks: int) -> None:
  """Makes the run's stop flag set itself after `chunks` training chunks: a deterministic Ctrl-C."""
  flag = trainer._StopFlag()  # pylint: disable=protected-access
  run_chunk = epoch.Runner.run_chunk

  def counted(self, *args):
    nonlocal chunks
    chunks -= 1
    if chunks == 0:
      flag.signum = 2
    return run_chunk(self, *args)

  patch.setattr(trainer, "_StopFlag", lambda: flag)
  patch.setattr(epoch.Runner, "run_chunk", counted)
