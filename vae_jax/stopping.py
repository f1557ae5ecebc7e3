"""Stopping a run between chunks: one signal handler, one check.

`train_and_evaluate(..., should_stop=f)` calls `f()` between chunks of
training, of the per-epoch evaluation and of the IWAE bound (through one
`Stopper`, which agrees over the processes of a run); when it answers True the
run saves a checkpoint and returns with `stopped` set. The command line
installs one handler for SIGINT and SIGTERM (`StopRequest.installed`) and
passes it as `should_stop`; a notebook can do the same, or pass any callable
(a time limit, a file that appears, a preemption notice).

    with stopping.StopRequest().installed() as request:
      result = vae_jax.train_and_evaluate(config, workdir, should_stop=request)
"""
import contextlib
import signal
import threading
from typing import Callable

from vae_jax import parallel


class Terminated(KeyboardInterrupt):
  """SIGTERM where nobody stops between chunks: raised like Ctrl-C's KeyboardInterrupt."""


class StopRequest:
  """Set by SIGINT or SIGTERM; calling it says whether one came.

  Until something calls it (training polls it from compilation on), a signal
  acts as usual: SIGINT raises KeyboardInterrupt and SIGTERM `Terminated`, so
  that start-up ends at once. From the first call on, the first signal only
  sets the request and the run stops at its next chunk boundary; a second one
  raises again.

  Attributes:
    signum: the first signal that came while polled, or None.
  """

  def __init__(self):
    self.signum: int | None = None
    self.polled = False

  def __call__(self) -> bool:
    self.polled = True
    return self.signum is not None

  def handle(self, signum, frame) -> None:
    del frame
    if self.polled and self.signum is None:
      self.signum = signum
      return
    raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()

  @contextlib.contextmanager
  def installed(self):
    """Handles SIGINT and SIGTERM while inside; outside the main thread (where Python
    allows no handlers) it never sets, and signals act as usual."""
    if threading.current_thread() is not threading.main_thread():
      yield self
      return
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for s in previous:
      signal.signal(s, self.handle)
    try:
      yield self
    finally:
      for s, h in previous.items():
        signal.signal(s, h)


class Stopper:
  """The one check between chunks: the run's `should_stop`, agreed over processes.

  In a run of several processes every check is a collective, so all of them
  stop at the same chunk, wherever the signal arrived. Once true it stays true.
  """

  def __init__(self, should_stop: Callable[[], bool] | None):
    self._should_stop = should_stop
    self.stopped = False

  def __call__(self) -> bool:
    if not self.stopped:
      asked = bool(self._should_stop()) if self._should_stop is not None else False
      self.stopped = parallel.any_process(asked)
    return self.stopped
