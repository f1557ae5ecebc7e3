"""The workdir lock (vae_jax/lock.py): one trainer per workdir, stale locks taken over."""
import json
import os
import socket

import pytest

from vae_jax import lock
from vae_jax.errors import UsageError


def test_a_lock_left_by_a_dead_process_is_taken_over_with_a_warning(tmp_path, capsys):
  dead = {"host": socket.gethostname(), "pid": 999_999_999, "since": "2026-01-01T00:00:00+00:00"}
  (tmp_path / lock.LOCK_FILE).write_text(json.dumps(dead))
  with lock.WorkdirLock(tmp_path):
    holder = json.loads((tmp_path / lock.LOCK_FILE).read_text())
    assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
  assert capsys.readouterr().err.strip() == (
      f"warning: taking over {tmp_path / lock.LOCK_FILE}, left by pid 999999999 on host "
      f"{socket.gethostname()} since 2026-01-01T00:00:00+00:00, which is no longer running")
  assert not (tmp_path / lock.LOCK_FILE).exists()


def test_a_lock_of_another_host_is_refused_with_the_way_out(tmp_path):
  (tmp_path / lock.LOCK_FILE).write_text(json.dumps({"host": "elsewhere", "pid": 1, "since": "x"}))
  with pytest.raises(UsageError, match=r"locked by pid 1 on host elsewhere since x, which cannot "
                     r"be checked from .*; if that run is gone, delete .*run.lock"):
    lock.WorkdirLock(tmp_path).acquire()
