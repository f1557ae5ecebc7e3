"""What the command-line tools share: config flags and turning errors into exit codes.

Bad input (a `UsageError`, a bad flag) prints one line on stderr and exits
with status 2; a diverged training run exits with status 1.
"""
import contextlib
import pathlib
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from vae_jax.errors import TrainingDiverged
from vae_jax.errors import UsageError

DEFAULT_CONFIG = str(pathlib.Path(__file__).parent / "configs" / "default.py")
USAGE_ERROR = 2


def fail(message: str, status: int = USAGE_ERROR):
  """Prints `error: message` on stderr and exits with `status`."""
  print(f"error: {message}", file=sys.stderr, flush=True)
  sys.exit(status)


def define_config_flag(name: str = "config"):
  """`--config=FILE` (default: configs/default.py) with `--config.FIELD=VALUE` overrides.

  ml_collections applies the overrides found in sys.argv while defining the
  flag, so an unknown field fails here: it becomes a one-line error.
  """
  try:
    return config_flags.DEFINE_config_file(
        name, DEFAULT_CONFIG, "Config file; fields can be overridden as --config.FIELD=VALUE.",
        lock_config=True)
  except (AttributeError, KeyError) as e:
    fail(f"unknown config field: {_first_line(e)}")


def config_value(flag) -> object:
  """The parsed config; a config file that failed to load becomes a usage error."""
  config = flag.value
  try:
    config.to_dict()
  except Exception as e:  # pylint: disable=broad-except
    fail(f"cannot load --config: {_first_line(e)}")
  return config


@contextlib.contextmanager
def errors_to_exit():
  """Turns UsageError into exit status 2 and a diverged run into exit status 1."""
  try:
    yield
  except UsageError as e:
    fail(str(e))
  except TrainingDiverged as e:
    fail(str(e), status=1)


def define_trained_model_flags(out_help: str = "Output folder; default WORKDIR/images."):
  """`--workdir` (required), `--step` and `--out`: the flags of the tools that read a trained model.

  Returns:
    The three flag holders.
  """
  workdir = flags.DEFINE_string("workdir", None, "A folder written by vae_jax.train.",
                                required=True)
  step = flags.DEFINE_integer("step", None, "Checkpoint step; default the latest.", lower_bound=0)
  out = flags.DEFINE_string("out", None, out_help)
  return workdir, step, out


def run(main) -> None:
  """absl's app.run, with flag errors and stray arguments as one line and exit status 2."""

  def checked_main(argv):
    if len(argv) > 1:
      fail(f"unexpected arguments: {' '.join(argv[1:])}")
    return main(argv)

  app.run(checked_main, flags_parser=_parse_flags)


def _parse_flags(argv):
  try:
    argv = flags.FLAGS(argv)
  except flags.Error as e:
    fail(_first_line(e))
  except (AttributeError, KeyError) as e:  # An override of a field the --config file lacks.
    fail(f"unknown config field: {_first_line(e)}")
  if not flags.FLAGS["verbosity"].present:
    # orbax and jax log every checkpoint step at INFO; --verbosity=0 shows them.
    logging.set_verbosity(logging.WARNING)
  return argv


def _first_line(e: Exception) -> str:
  text = str(e).strip().strip("'\"").replace("\\'", "'").replace("\\n", " ")
  return text.splitlines()[0] if text else type(e).__name__
