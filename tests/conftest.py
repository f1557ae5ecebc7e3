"""Shared fixtures: keys, the tiny config, and workdirs trained once per session."""
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

# One persistent XLA cache for the session, this process and every command a test
# starts (set before jax is imported, which reads it then): most of a tiny run's
# ~10 s is compiling the same few programs, which a cached run loads in well
# under a second. Set JAX_COMPILATION_CACHE_DIR to keep a cache between sessions.
_CACHE_VARIABLES = ("JAX_COMPILATION_CACHE_DIR", "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS",
                    "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES")
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="vae_jax_tests_xla_cache_")
  os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
  os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "-1"

import jax  # pylint: disable=wrong-import-position
import numpy as np
import pytest

from vae_jax import epoch
from vae_jax import reporting
from vae_jax import train
from vae_jax.configs import tiny
import vae_jax

REPO = pathlib.Path(__file__).resolve().parents[1]


def pytest_collection_modifyitems(items):
  """Marks every test not marked `slow` as `fast`: `pytest -m fast` is the inner loop."""
  for item in items:
    if item.get_closest_marker("slow") is None:
      item.add_marker(pytest.mark.fast)


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
  train.train_and_evaluate(tiny.get_config(), workdir, verbose=False)
  return workdir


def run_module(module: str, *args: str, timeout: float = 300, env_extra: dict | None = None,
               **popen) -> subprocess.CompletedProcess:
  """Runs `python -m module args...` from the repository root; returns the result."""
  env = dict(os.environ, PYTHONUNBUFFERED="1", **(env_extra or {}))
  return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=timeout, **popen)


def latest_params(workdir):
  """The parameters of the latest checkpoint in `workdir`."""
  return vae_jax.load(workdir).params


class StopFlag:
  """A `should_stop` for `train_and_evaluate` that a test sets: a deterministic Ctrl-C."""

  def __init__(self):
    self.set = False

  def __call__(self) -> bool:
    return self.set


def stop_after_chunks(patch, chunks: int) -> StopFlag:
  """A stop flag that sets itself after `chunks` training chunks (pass it as `should_stop`)."""
  flag = StopFlag()
  run_chunk = epoch.Runner.run_chunk

  def counted(self, *args):
    nonlocal chunks
    chunks -= 1
    if chunks == 0:
      flag.set = True
    return run_chunk(self, *args)

  patch.setattr(epoch.Runner, "run_chunk", counted)
  return flag


@pytest.fixture(scope="session")
def compilation_cache() -> dict[str, str]:
  """Environment variables that give a subprocess the session's persistent XLA cache.

  A tiny training run spends most of its ~10 s compiling (the initialisers op by
  op, the epoch, the evaluation); with the programs cached, a rerun starts in ~3 s.
  The cache is the one set at the top of this file, which every pytest-xdist worker
  and every command a test starts shares: each program compiles once per session.
  """
  return {name: os.environ[name] for name in _CACHE_VARIABLES if name in os.environ}


def start_training(fault: str, *args: str, env: dict | None = None) -> subprocess.Popen:
  """Starts `vae-jax train ARGS` with `fault` injected (see tests/faults.py), its output piped."""
  env = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
  return subprocess.Popen([sys.executable, str(REPO / "tests" / "faults.py"), fault, *args],
                          cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)


def finish(process: subprocess.Popen, timeout: float = 180) -> tuple[int, str, str]:
  """(exit status, stdout, stderr) of `process`; killed if it runs past `timeout` seconds."""
  try:
    out, err = process.communicate(timeout=timeout)
  except subprocess.TimeoutExpired:
    process.kill()
    out, err = process.communicate()
    raise AssertionError(f"still running after {timeout} s; stderr: {err[-2000:]}") from None
  return process.returncode, out, err



def vae_training(config, module, num_models: int = 1, total_steps: int = 100, **family):
  """A Gaussian VAE's training parts for `module` under `config`, as a run builds them:
  (the initial state of `num_models` stacked models, seeds 0 .. N-1; the step; the
  per-model settings). `family`: the family's fields to replace (e.g. weighted=True)."""
  import dataclasses  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from vae_jax import fields, optim, schema, train_state  # pylint: disable=g-import-not-at-top
  from vae_jax.families import vae as vae_family  # pylint: disable=g-import-not-at-top
  models = [{n: config[n] for n in schema.sweepable()}] * num_models
  settings = fields.settings_of(vae_family.Settings, config)
  built = dataclasses.replace(vae_family.GaussianVAE.build(settings, models, module), **family)
  step = train_state.Step(built, optim.optimizer_config(config), total_steps=total_steps,
                          binarize=config.binarize == "dynamic",
                          skip_threshold=config.skip_threshold)
  hyper = train_state.hyper_arrays(models, ("learning_rate", "beta", "kl_warmup_steps",
                                            "free_bits"))
  keys = jnp.stack([jax.random.key(i) for i in range(num_models)])
  state = jax.jit(train_state.create, static_argnums=(0,))(step, keys, hyper)
  return state, step, hyper


_BASE_FLAGS: set[str] | None = None


def _forget_commands() -> None:
  """Removes the flags and modules of the commands imported so far (absl flags are global
  to a process: two commands both define --workdir)."""
  global _BASE_FLAGS
  from absl import flags  # pylint: disable=g-import-not-at-top
  if _BASE_FLAGS is None:
    _BASE_FLAGS = set(flags.FLAGS)
  for name in set(flags.FLAGS) - _BASE_FLAGS:
    delattr(flags.FLAGS, name)
  for name in [m for m in sys.modules if m.startswith("vae_jax.commands.")]:
    del sys.modules[name]


def vae_jax_in_process(*args: str) -> tuple[int, str, str]:
  """Runs `vae-jax ARGS` in this process: (exit status, stdout, stderr). For commands that
  end early (bad input): no interpreter and jax to start, as a subprocess would."""
  import contextlib  # pylint: disable=g-import-not-at-top
  import io  # pylint: disable=g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top
  from vae_jax import cli  # pylint: disable=g-import-not-at-top
  _forget_commands()
  argv, out, err, status = sys.argv, io.StringIO(), io.StringIO(), 0
  try:
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
      cli.main(["vae-jax", *args])
  except SystemExit as e:
    status = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
  finally:
    sys.argv = argv
    flags.FLAGS.unparse_flags()
    _forget_commands()
  return status, out.getvalue(), err.getvalue()


def small_vae(likelihood="bernoulli"):
  """A 4x4-pixel VAE (16 hidden units, 3 latents) and its parameters."""
  from vae_jax.families import vae as vae_family  # pylint: disable=g-import-not-at-top
  config = tiny.get_config()
  config.hidden, config.latents, config.likelihood = 16, 3, likelihood
  module = vae_family.from_config(config, (4, 4, 1))
  # Jitted: run op by op, the initialisers compile dozens of small programs.
  return module, jax.jit(vae_family.init_params, static_argnums=0)(module, jax.random.key(3))


# Fields of a metrics record that measure time, which no two runs share.
TIMING = {"epoch_seconds", "examples_per_second", "eval_seconds", "compile_seconds", "iwae_seconds"}


def same_params(a, b) -> None:
  jax.tree.map(np.testing.assert_array_equal, a, b)


def untimed(workdir) -> list[dict]:
  return [{k: v for k, v in r.items() if k not in TIMING} for r in reporting.read_metrics(workdir)]


@pytest.fixture
def copy_of(trained_workdir, tmp_path):
  """A fresh copy of the session's 2-epoch tiny run (checkpoints 125 and 250)."""
  workdir = tmp_path / "copy"
  shutil.copytree(trained_workdir, workdir)
  return workdir


def flip_middle_bytes(paths) -> None:
  for path in paths:
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))


def array_files(step_dir):
  """The files holding a checkpoint's params arrays (orbax's OCDBT data files)."""
  return sorted((step_dir / "params").glob("ocdbt.process_*/d/*"))


def flip_bytes(step_dir) -> None:
  """Overwrites a byte in the middle of every params data file: they still parse, and
  only the digest shows the change."""
  flip_middle_bytes(array_files(step_dir))
