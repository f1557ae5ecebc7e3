"""One writer per workdir: `WORKDIR/run.lock`, held for the whole training run.

The lock file holds its holder (host, pid, since when) and is `flock`ed
while held, so on one host a crashed holder's lock is released by the kernel:
the next run takes it over with a warning. A lock naming another host cannot
be checked from here and is refused with the way out. Readers (evaluation,
the latent tools) take no lock: orbax writes each checkpoint into a temporary
folder and renames it, so they never see a half-written one.
"""
import datetime
import fcntl
import json
import os
import pathlib
import socket
import sys

from vae_jax.errors import UsageError

LOCK_FILE = "run.lock"


class WorkdirLock:
  """An exclusive lock on a workdir: `with WorkdirLock(workdir): ...`."""

  def __init__(self, workdir):
    self.path = pathlib.Path(workdir) / LOCK_FILE
    self._fd = None

  def acquire(self) -> None:
    """Takes the lock.

    Raises:
      UsageError: another live run holds it (its host, pid and start named).
    """
    while True:
      fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
      try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
      except BlockingIOError:
        holder = _read(fd)
        os.close(fd)
        raise UsageError(f"workdir {self.path.parent} is in use by {_who(holder)}; wait for "
                         "that run to end, or stop it, or use another --workdir") from None
      # The holder before us may have unlinked the file after we opened it: retry on the new one.
      if _same_file(fd, self.path):
        break
      os.close(fd)
    holder = _read(fd)
    if holder and holder.get("host") != socket.gethostname():
      os.close(fd)
      raise UsageError(f"workdir {self.path.parent} is locked by {_who(holder)}, which cannot be "
                       f"checked from {socket.gethostname()}; if that run is gone, delete {self.path}")
    if holder:
      print(f"warning: taking over {self.path}, left by {_who(holder)}, which is no longer "
            "running", file=sys.stderr, flush=True)
    _write(fd, {"host": socket.gethostname(), "pid": os.getpid(),
                "since": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
                "command": " ".join(sys.argv)})
    self._fd = fd

  def check_free(self) -> None:
    """Raises UsageError, as `acquire`, when a live run holds the lock; takes nothing and
    creates nothing (a run checks this before it reads its data, then acquires).

    Raises:
      UsageError: another live run holds it.
    """
    try:
      fd = os.open(self.path, os.O_RDWR)
    except OSError:
      return  # No lock file (or none readable): acquire says what is wrong, if anything.
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      raise UsageError(f"workdir {self.path.parent} is in use by {_who(_read(fd))}; wait for "
                       "that run to end, or stop it, or use another --workdir") from None
    finally:
      os.close(fd)  # Closing lets go of a lock taken here.

  def release(self) -> None:
    """Removes the lock file and lets go of it."""
    if self._fd is None:
      return
    self.path.unlink(missing_ok=True)  # Before unlocking: no one may lock this file after us.
    os.close(self._fd)
    self._fd = None

  def __enter__(self) -> "WorkdirLock":
    self.acquire()
    return self

  def __exit__(self, *exc) -> None:
    self.release()


def _read(fd: int) -> dict:
  os.lseek(fd, 0, os.SEEK_SET)
  try:
    holder = json.loads(os.read(fd, 65536) or b"{}")
  except ValueError:
    return {"host": "?", "pid": "?", "since": "?"}
  return holder if isinstance(holder, dict) else {}


def _write(fd: int, holder: dict) -> None:
  os.ftruncate(fd, 0)
  os.lseek(fd, 0, os.SEEK_SET)
  os.write(fd, (json.dumps(holder) + "\n").encode())
  os.fsync(fd)


def _same_file(fd: int, path: pathlib.Path) -> bool:
  try:
    return os.stat(path).st_ino == os.fstat(fd).st_ino
  except FileNotFoundError:
    return False


def _who(holder: dict) -> str:
  return (f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')} "
          f"since {holder.get('since', '?')}")
