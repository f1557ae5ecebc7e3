"""`vae-jax train` with one fault injected at a chosen point, for the crash and preemption tests.

    python tests/faults.py FAULT [train flags ...]

FAULT says what happens to this process, and where:

  kill-after-step:S        SIGKILL after the training chunk that ends at global step S
  kill-in-save:S           SIGKILL inside the save of checkpoint S: its temporary
                           folder exists, its files are partly written
  pause-in-save:S:FILE     inside the save of checkpoint S, create FILE and wait (to be
                           killed from outside)
  kill-in-metrics:E        write the first half of epoch E's metrics.jsonl lines, then SIGKILL
  SIGNAL-after-step:S      send itself SIGNAL (sigterm or sigint) after the chunk ending at S
  SIGNAL-in-eval:N:C       send itself SIGNAL during chunk C (0-based) of the N-th (1-based)
                           evaluation pass of this process
  SIGNAL-in-startup        send itself SIGNAL as the run, holding the workdir's lock,
                           reads config.json to restore
  none                     no fault

Signals are sent by the process to itself at the point named, so where they land
does not depend on timing; the real handlers receive them.
"""
import os
import signal
import sys
import time


def _kill(signum: int = signal.SIGKILL) -> None:
  """Sends `signum` to this process; a handled one runs its handler before this returns."""
  os.kill(os.getpid(), signum)
  if signum == signal.SIGKILL:
    time.sleep(60)  # Not reached: SIGKILL to oneself ends the process before kill returns.


def _after_step(step: int, act) -> None:
  from vae_jax import epoch  # pylint: disable=g-import-not-at-top
  run_chunk = epoch.Runner.run_chunk

  def patched(self, *args):
    state, metrics = run_chunk(self, *args)
    if int(state.step[0]) == step:
      act()
    return state, metrics

  epoch.Runner.run_chunk = patched


def _in_save(step: int, act) -> None:
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  async_save = ocp.JsonCheckpointHandler.async_save

  async def patched(self, directory, item=None, args=None):
    if args is not None and isinstance(args.item, dict) and args.item.get("step") == step:
      act()
    return await async_save(self, directory, item, args)

  ocp.JsonCheckpointHandler.async_save = patched


def _pause(path: str) -> None:
  open(path, "w").close()
  time.sleep(600)


def _in_metrics(epoch_number: int) -> None:
  from vae_jax import reporting  # pylint: disable=g-import-not-at-top
  write_metrics = reporting.Reporter.write_metrics

  def patched(self, records, *args, **kwargs):
    if records[0]["epoch"] == epoch_number:
      text = "".join(__import__("json").dumps(r) + "\n" for r in records)
      with open(self.metrics_path, "a") as f:
        f.write(text[:len(text) // 2])
      _kill()
    return write_metrics(self, records, *args, **kwargs)

  reporting.Reporter.write_metrics = patched


def at_eval_chunk(over_chunks, n: int, chunk: int, act):
  """`vae_jax.evaluation.over_chunks` that calls `act()` before chunk `chunk` (0-based)
  of its `n`-th (1-based) pass; also for the in-process tests."""
  passes = 0

  def patched(statistic, chunks, **kwargs):
    nonlocal passes
    passes += 1

    def acting(images, c):
      if int(c) == chunk:
        act()
      return statistic(images, c)

    return over_chunks(acting if passes == n else statistic, chunks, **kwargs)

  return patched


def _in_eval(n: int, chunk: int, signum: int) -> None:
  from vae_jax import evaluation  # pylint: disable=g-import-not-at-top
  evaluation.over_chunks = at_eval_chunk(evaluation.over_chunks, n, chunk, lambda: _kill(signum))


def _in_startup(signum: int) -> None:
  from vae_jax import checkpoints  # pylint: disable=g-import-not-at-top
  read_config = checkpoints.read_config

  def patched(workdir, *args, **kwargs):
    _kill(signum)
    return read_config(workdir, *args, **kwargs)

  checkpoints.read_config = patched


def inject(fault: str) -> None:
  """Patches the library so that `fault` happens (see the module docstring)."""
  kind, *args = fault.split(":")
  if kind == "none":
    return
  if kind == "kill-after-step":
    return _after_step(int(args[0]), _kill)
  if kind == "kill-in-save":
    return _in_save(int(args[0]), _kill)
  if kind == "pause-in-save":
    return _in_save(int(args[0]), lambda: _pause(args[1]))
  if kind == "kill-in-metrics":
    return _in_metrics(int(args[0]))
  name, _, where = kind.partition("-")
  signum = {"sigterm": signal.SIGTERM, "sigint": signal.SIGINT}[name]
  if where == "after-step":
    return _after_step(int(args[0]), lambda: _kill(signum))
  if where == "in-eval":
    return _in_eval(int(args[0]), int(args[1]), signum)
  if where == "in-startup":
    return _in_startup(signum)
  raise ValueError(f"unknown fault {fault!r}")


if __name__ == "__main__":
  fault, *flags = sys.argv[1:]
  sys.argv = ["vae_jax.train", *flags]  # The command's flags are read from sys.argv at import.
  inject(fault)
  from vae_jax import cli  # pylint: disable=g-import-not-at-top
  from vae_jax.commands import train  # pylint: disable=g-import-not-at-top
  cli.run_command(train.main, train.INTERRUPTED)
