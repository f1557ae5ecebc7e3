"""The `vae-jax` command and what its tools share: flags, --help, errors as exit codes.

    vae-jax COMMAND [--flag=value ...]      # or: python -m vae_jax COMMAND ...
    vae-jax COMMAND --help                  # the command's flags
    vae-jax [--help]                        # the commands (without --help: exit status 2)

Bad input (a `UsageError`, a bad flag, an unknown command, a file that cannot
be read or written, a batch too large for the device's memory) prints one line
on stderr and exits with status 2; a diverged training run exits with status 1;
SIGINT (Ctrl-C) or SIGTERM where the command does not handle it prints one line
and exits with 128 + the signal's number; --help prints on stdout and exits
with status 0.
"""
import contextlib
import importlib
import inspect
import itertools
import signal
import sys
from collections.abc import Sequence

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from vae_jax import commands
from vae_jax import configs
from vae_jax import schema
from vae_jax import stopping
from vae_jax import sweep
from vae_jax.errors import TrainingDiverged
from vae_jax.errors import UsageError

USAGE_ERROR = 2
_HELP = {"-h", "-?", "-help", "--help", "-helpshort", "--helpshort"}
_FULL_HELP = {"-helpfull", "--helpfull"}

# The helpers below define flags for the command module that calls them:
# absl credits a flag to the module that defines it and --help shows only the
# command module's flags, so without this --workdir and --config would be
# missing from every tool's --help.
flags.disclaim_key_flags()


def main(argv: Sequence[str] | None = None, prog: str = "vae-jax") -> None:
  """Runs `prog COMMAND [flags]`; without a command (or with --help), lists the commands.

  Only the chosen command's module is imported: each defines its flags at
  import, and absl flags are global to the process.

  Args:
    argv: the command line, program name first; default `sys.argv`.
    prog: how the list and errors name the program.
  """
  argv = list(sys.argv if argv is None else argv)
  if len(argv) < 2:  # No command: the list, as a usage error.
    print(_command_list(prog), file=sys.stderr, flush=True)
    sys.exit(USAGE_ERROR)
  if argv[1] in _HELP | _FULL_HELP:
    print(_command_list(prog))
    return
  if argv[1] not in commands.COMMANDS:
    fail(f"unknown command {argv[1]!r}; {prog} runs one of: {', '.join(commands.COMMANDS)}")
  # ml_collections reads the --config.FIELD=VALUE overrides from sys.argv itself.
  sys.argv = [argv[0], *argv[2:]]
  command = importlib.import_module(commands.module_name(argv[1]))
  run_command(command.main, getattr(command, "INTERRUPTED", "stopped"))


def _command_list(prog: str) -> str:
  width = max(map(len, commands.COMMANDS))
  return "\n".join([
      f"usage: {prog} COMMAND [--flag=value ...]", "", "commands:",
      *(f"  {name:<{width}}  {text}" for name, text in commands.COMMANDS.items()),
      "", f"{prog} COMMAND --help lists the flags of a command.",
  ])


def fail(message: str, status: int = USAGE_ERROR):
  """Prints `error: message` on stderr and exits with `status`."""
  print(f"error: {message}", file=sys.stderr, flush=True)
  sys.exit(status)


def define_config_flag(name: str = "config"):
  """`--config=NAME|FILE` (default: `default`) with `--config.FIELD=VALUE` overrides.

  The value is a config shipped in vae_jax/configs by name (`tiny` or
  `tiny.py`) or the path of a file with a `get_config()`; see `configs.load`.
  ml_collections applies the overrides found in sys.argv while defining the
  flag, so an unknown field fails here: it becomes a one-line error.
  """
  _refuse_unknown_sweeps(name)
  holder = config_flags.DEFINE_config_file(
      name, None, f"A config by name ({', '.join(configs.names())}) or the path of a config "
      "file; fields can be overridden as --config.FIELD=VALUE.")
  # ml_collections reads a path relative to the working directory, and defers
  # load errors to the first use of the config; this parser looks shipped
  # configs up by name and fails at once, naming the file and the reason.
  flags.FLAGS[name].parser = _ConfigParser()
  try:
    flags.FLAGS.set_default(name, "default")
  except _ConfigLoadError as e:
    fail(str(e))
  except (AttributeError, KeyError) as e:
    fail(f"unknown config field: {_first_line(e)}")
  return holder


def _refuse_unknown_sweeps(name: str) -> None:
  """Fails on `--config.sweep.FIELD=...` for a field that cannot be swept, saying why
  (locked configs would only say the field is unknown)."""
  prefix = f"--{name}.sweep."
  for arg in sys.argv[1:]:
    if arg.startswith(prefix):
      field = arg[len(prefix):].split("=", 1)[0]
      if field not in schema.sweepable():
        fail(sweep.refusal(field))


class _ConfigLoadError(Exception):
  """A --config that cannot be loaded; not a ValueError, so absl does not reword it."""


class _ConfigParser(flags.ArgumentParser):
  """Parses `--config=NAME|FILE[:ARG]` with `configs.load` and locks the config."""

  def parse(self, argument):
    try:
      config = configs.load(argument)
    except UsageError as e:
      raise _ConfigLoadError(str(e)) from None
    config.lock()  # An override of a field the config lacks is an error.
    return config

  def flag_type(self):
    return "config"


@contextlib.contextmanager
def errors_to_exit():
  """Turns UsageError into exit status 2 and a diverged run into exit status 1."""
  try:
    yield
  except UsageError as e:
    fail(str(e))
  except TrainingDiverged as e:
    fail(str(e), status=1)


def define_trained_model_flags(out_help: str = "Output folder; default WORKDIR/images.",
                               model_help: str = "Which of the run's models (0-based).",
                               model_default: int | None = 0):
  """`--workdir` (required), `--step`, `--out` and `--model`: the flags of the tools that
  read a trained model.

  Returns:
    The four flag holders.
  """
  workdir = flags.DEFINE_string("workdir", None, "A folder written by `vae-jax train`.",
                                required=True)
  step = flags.DEFINE_integer("step", None, "Checkpoint step; default the latest.", lower_bound=0)
  out = flags.DEFINE_string("out", None, out_help)
  model = flags.DEFINE_integer("model", model_default, model_help, lower_bound=0)
  return workdir, step, out, model


_STOP_REQUEST = stopping.StopRequest()  # The process's one SIGINT/SIGTERM handler.


def stop_request() -> stopping.StopRequest:
  """What SIGINT and SIGTERM set while a command runs under `run`: a command that
  can stop between chunks passes it on as `should_stop`."""
  return _STOP_REQUEST


def run_command(main, interrupted: str = "stopped") -> None:
  """absl's app.run for a command's `main`: --help on stdout with exit status 0,
  flag errors and stray arguments as one line with exit status 2, SIGINT and
  SIGTERM (unless the command handles them) as one line with 128 + the signal,
  and a file that cannot be read or written as one line with exit status 2.

  Args:
    main: the command's `main(argv)`.
    interrupted: what the line on SIGINT or SIGTERM says after "interrupted by SIG...; ".
  """
  command = sys.modules[main.__module__]

  def parse_flags(argv):
    _print_help_if_asked(argv, command)
    return _parse_flags(argv)

  def checked_main(argv):
    if len(argv) > 1:
      fail(f"unexpected arguments: {' '.join(argv[1:])}")
    return main(argv)

  # Unhandled, SIGTERM would kill the process at once: no finally block would run
  # (the workdir's lock would stay behind) and nothing would be said. Until a
  # command polls the request, both signals raise (KeyboardInterrupt, Terminated).
  try:
    with _STOP_REQUEST.installed():
      app.run(checked_main, flags_parser=parse_flags)
  except KeyboardInterrupt as e:
    signum = signal.SIGTERM if isinstance(e, stopping.Terminated) else signal.SIGINT
    fail(f"interrupted by {signum.name}; {interrupted}", status=128 + signum)
  except OSError as e:  # A read-only folder, a full disk, ...: the user's to fix.
    fail(f"{e.filename}: {e.strerror}" if e.filename and e.strerror else _first_line(e))
  except jax.errors.JaxRuntimeError as e:
    if not str(e).startswith("RESOURCE_EXHAUSTED"):
      raise  # A bug (ours or XLA's): its traceback is what a report needs.
    fail(out_of_memory(e))


def out_of_memory(e: Exception) -> str:
  """One line for XLA's out-of-memory error: what ran out, and the flags that use less."""
  what = _first_line(e).removeprefix("RESOURCE_EXHAUSTED: ").rstrip(".")
  return (f"out of device memory ({what}); "
          "use smaller batches or chunks (--config.batch_size, --config.eval_batch_size, "
          "--config.iwae_example_chunk, --config.iwae_sample_chunk; for evaluate "
          "--example_chunk, --sample_chunk) or fewer --config.num_models")


def _print_help_if_asked(argv: Sequence[str], command) -> None:
  """Prints `command`'s docstring and flags and exits 0 if argv asks for help.

  absl's own --help shows the flags of `__main__` (none, for `vae-jax`) and
  exits with status 1, so the help flags are answered here, before parsing.
  """
  asked = set(itertools.takewhile(lambda arg: arg != "--", argv[1:]))
  if not asked & (_HELP | _FULL_HELP):
    return
  full = bool(asked & _FULL_HELP)
  flag_help = flags.FLAGS.get_help() if full else flags.FLAGS.module_help(command.__name__)
  print(inspect.cleandoc(command.__doc__ or ""))
  print(f"\nflags:{flag_help}")
  if getattr(command, "CONFIG_FIELDS_IN_HELP", False):
    print(f"\nconfig fields (--config.FIELD=VALUE, defaults shown):{schema.describe()}")
  if not full:
    print("\n--helpfull lists the flags of every module (logging, absl, ...).")
  sys.exit(0)


def _parse_flags(argv):
  try:
    argv = flags.FLAGS(argv)
  except _ConfigLoadError as e:
    fail(str(e))
  except flags.Error as e:
    fail(_first_line(e))
  except (AttributeError, KeyError) as e:  # An override of a field the --config file lacks.
    fail(f"unknown config field: {_first_line(e)}")
  if not flags.FLAGS["verbosity"].present:
    # orbax and jax log every checkpoint step at INFO; --verbosity=0 shows them.
    logging.set_verbosity(logging.WARNING)
  return argv


def _first_line(e: Exception) -> str:
  """The message of `e` on one line.

  ml_collections raises an unknown config field as an AttributeError
  wrapping a KeyError, whose str() is the repr of its message; the message
  itself is used, its "Did you mean" line joined to the first.
  """
  while len(e.args) == 1 and isinstance(e.args[0], Exception):
    e = e.args[0]
  text = e.args[0] if isinstance(e, KeyError) and len(e.args) == 1 else e
  return " ".join(str(text).split()) or type(e).__name__
