"""The exceptions the command-line tools turn into a one-line message and an exit status."""


class UsageError(ValueError):
  """Bad input from the user: a config value, a data folder, a workdir.

  The message is one line saying what is wrong and what to do. The CLIs print
  it and exit with status 2; library users can catch it as a ValueError.
  """


class TrainingDiverged(RuntimeError):
  """Every model's loss became NaN or infinite; the last good checkpoint is kept (exit 1)."""


class Interrupted(Exception):
  """SIGINT or SIGTERM arrived during a phase that stops between chunks (e.g. evaluation).

  Attributes:
    phase: what was running.
  """

  def __init__(self, phase: str):
    super().__init__(f"interrupted during {phase}")
    self.phase = phase


def counted(n: int, noun: str, plural: str | None = None) -> str:
  """`n noun` with the noun's plural where n is not 1: `1 image`, `8,004 images`."""
  return f"{n:,} {noun if n == 1 else plural or noun + 's'}"


def value_range(low, high) -> str:
  """`low .. high`, or the one value when they are equal (`got 11`, not `got 11 .. 11`)."""
  return f"{low}" if low == high else f"{low} .. {high}"
