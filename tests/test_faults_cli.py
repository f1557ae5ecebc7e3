"""One line and a clear exit status for every fault, from the command line: a locked, file,
read-only or full workdir, a broken config.json, damaged checkpoints, an empty test
split, Ctrl-C or SIGTERM before training starts."""
import contextlib
import gzip
import os
import shutil
import signal
import socket
import struct
import subprocess

import pytest

import vae_jax
from conftest import finish
from conftest import run_module
from conftest import start_training
from conftest import flip_bytes
from test_checkpoints import _truncate_arrays
from vae_jax import checkpoints
from vae_jax import data
from vae_jax import lock

pytestmark = pytest.mark.slow  # Every test here trains, or starts a process.


def _one_error_line(stderr: str) -> str:
  lines = stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: "), stderr[-3000:]
  return lines[0]


def _train(workdir, *flags, env=None) -> tuple[int, str, str]:
  return finish(start_training("none", f"--workdir={workdir}", "--config=tiny", *flags, env=env))


def _files(folder) -> dict:
  return {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _mount_tmpfs(path, options: str) -> None:
  path.mkdir(exist_ok=True)
  if os.geteuid() != 0:
    pytest.skip("mounting a small file system needs root")
  result = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                          capture_output=True, text=True)
  if result.returncode:
    pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")


@contextlib.contextmanager
def _tmpfs(path, options: str, content=None, read_only: bool = False):
  """A tmpfs at `path` holding a copy of `content`, made read-only after the copy if asked."""
  _mount_tmpfs(path, options)
  try:
    if content is not None:
      shutil.copytree(content, path, dirs_exist_ok=True)
    if read_only:
      subprocess.run(["mount", "-o", "remount,ro", str(path)], check=True)
    yield path
  finally:
    subprocess.run(["umount", "-l", str(path)], check=False)


def test_a_locked_workdir_exits_2_at_once_naming_the_holder(tmp_path):
  with lock.WorkdirLock(tmp_path):
    code, out, err = _train(tmp_path)
  assert code == 2
  line = _one_error_line(err)
  assert f"workdir {tmp_path} is in use by pid {os.getpid()} on host {socket.gethostname()} " \
         "since 20" in line
  assert "compiled" not in out and os.listdir(tmp_path) == []


def test_a_workdir_that_is_a_file_exits_2(tmp_path):
  (tmp_path / "file").write_text("x")
  code, _, err = _train(tmp_path / "file")
  assert code == 2 and "is a file, not a folder" in _one_error_line(err)


@pytest.mark.parametrize("content, says", [("[]", "it holds a JSON list"),
                                           ("{}", "it holds an empty object")])
def test_a_config_json_that_is_not_a_runs_exits_2(tmp_path, content, says):
  (tmp_path / "config.json").write_text(content)
  code, _, err = _train(tmp_path)
  line = _one_error_line(err)
  assert code == 2 and says in line and "not the config.json of a vae_jax run" in line
  assert "different model" not in line
  assert _files(tmp_path) == {tmp_path / "config.json": content.encode()}


def _idx(magic: int, shape: tuple) -> bytes:
  return gzip.compress(struct.pack(f">I{len(shape)}I", magic, *shape))


def test_an_empty_test_split_exits_2(tmp_path):
  folder = tmp_path / "idx"
  shutil.copytree(data.SAMPLE_DIR, folder)
  (folder / "t10k-images-idx3-ubyte.gz").write_bytes(_idx(0x803, (0, 28, 28)))
  (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(_idx(0x801, (0,)))
  code, _, err = _train(tmp_path / "work", "--config.dataset=mnist", f"--config.data_dir={folder}")
  line = _one_error_line(err)
  assert code == 2 and ("no images" in line or "0 images" in line or "empty" in line), line
  assert not (tmp_path / "work").exists() or not any((tmp_path / "work").iterdir())


@contextlib.contextmanager
def _read_only_folder(path, content=None):
  """`path` holding a copy of `content`, read-only: a read-only tmpfs for root (whom
  permissions do not stop), folders without write permission for anyone else."""
  if os.geteuid() == 0:
    with _tmpfs(path, "size=16m", content, read_only=True):
      yield path
    return
  if content is None:
    path.mkdir()
  else:
    shutil.copytree(content, path)
  folders = [path, *(p for p in path.rglob("*") if p.is_dir())]
  for folder in folders:
    folder.chmod(0o555)
  try:
    yield path
  finally:
    for folder in folders:
      folder.chmod(0o755)


def test_a_read_only_workdir_exits_2_for_training_and_evaluation(trained_workdir, tmp_path):
  with _read_only_folder(tmp_path / "empty") as empty:
    code, _, err = _train(empty)
    assert code == 2 and f"cannot write to --workdir {empty}: " in _one_error_line(err)
  with _read_only_folder(tmp_path / "trained", trained_workdir) as trained:
    result = run_module("vae_jax.evaluate", f"--workdir={trained}", "--k=2", "--num_examples=4")
    assert result.returncode == 2
    assert _one_error_line(result.stderr).startswith(f"error: {trained / 'eval.json'}: ")


def test_a_full_disk_during_a_save_exits_2_naming_the_space_and_keeps_the_older_checkpoints(
    trained_workdir, tmp_path, compilation_cache):
  """The workdir on a file system that holds epoch 1's outputs and half of epoch 2's
  checkpoint: the save of checkpoint 250 runs out of space."""
  checkpoint = sum(p.stat().st_size for p in (trained_workdir / "checkpoints" / "250").rglob("*"))
  everything = sum(p.stat().st_size for p in trained_workdir.rglob("*"))
  size_kib = (everything - checkpoint // 2) // 1024 + 64  # Plus tmpfs's page rounding.
  with _tmpfs(tmp_path / "small", f"size={size_kib}k") as small:
    code, out, err = _train(small / "run", env=compilation_cache)
    assert code == 2 and "epoch   1/2" in out, err[-3000:]
    line = _one_error_line(err)
    assert line.startswith(f"error: disk full while saving checkpoint 250 to {small / 'run'}"
                           "/checkpoints (about 1.2 MiB needed, ")
    assert line.endswith("nothing was written and older checkpoints are intact")
    assert sorted(p.name for p in (small / "run" / "checkpoints").iterdir()) == ["125"]
    assert vae_jax.load(small / "run").step == 125  # It verifies.


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_before_training_starts_is_one_line_and_128_plus_the_signal(tmp_path, signum):
  """The signal comes while the run restores (the workdir locked): the lock is released."""
  name = signal.Signals(signum).name.lower()
  code, out, err = finish(start_training(f"{name}-in-startup", f"--workdir={tmp_path}",
                                         "--config=tiny"))
  assert code == 128 + signum
  assert _one_error_line(err) == (f"error: interrupted by {signal.Signals(signum).name}; nothing "
                                  "more was saved; rerun the same command to resume")
  assert not (tmp_path / lock.LOCK_FILE).exists()


def test_when_every_checkpoint_is_damaged_training_and_evaluation_exit_2_saying_so(
    trained_workdir, tmp_path):
  """First the newest checkpoint alone is truncated: evaluation warns in one line (orbax's
  reports of the failed read held back) and evaluates the one before."""
  workdir = tmp_path / "damaged"
  shutil.copytree(trained_workdir, workdir)
  _truncate_arrays(workdir / "checkpoints" / "250")
  result = run_module("vae_jax.evaluate", f"--workdir={workdir}", "--k=2", "--num_examples=4")
  assert result.returncode == 0, result.stderr[-3000:]
  warning, = result.stderr.strip().splitlines()
  assert warning.startswith("warning: checkpoint 250 in ") and "using step 125" in warning
  flip_bytes(workdir / "checkpoints" / "125")
  code, _, err = _train(workdir, "--config.num_epochs=3")
  line = _one_error_line(err)
  assert code == 2 and "every checkpoint in" in line and "is damaged" in line
  assert "not those of another model" in line
  result = run_module("vae_jax.evaluate", f"--workdir={workdir}", "--k=2")
  line = _one_error_line(result.stderr)
  assert result.returncode == 2 and "every checkpoint in" in line and "is damaged" in line
  assert checkpoints.Checkpointer(workdir, create=False).all_steps() == [125, 250]
