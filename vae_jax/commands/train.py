"""Trains a VAE: `vae-jax train --workdir=DIR [--config=tiny] [--config.FIELD=VALUE ...]`.

`python -m vae_jax.train` is the same command. `--config` names a shipped
config (`default`, `tiny`) or a config file; every field can be overridden.

Running the same command on a workdir resumes from its latest checkpoint;
Ctrl-C (SIGINT) or SIGTERM saves a checkpoint first. Exit status: 0 done,
1 the loss diverged, 2 bad input, 128 + signal when interrupted.
"""
import signal
import sys

from absl import flags

from vae_jax import cli
from vae_jax import parallel
from vae_jax import train

_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Folder for config.json, checkpoints, metrics.jsonl, images.", required=True)
_CONFIG = cli.define_config_flag()
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None,
    "host:port of process 0 for a multi-process run; SLURM, Open MPI and multi-host "
    "TPU slices are detected without it.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes in the run.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index, 0-based.")
CONFIG_FIELDS_IN_HELP = True  # --help lists every field of vae_jax.schema.
# The line after a signal that the trainer does not turn into a checkpoint (one
# before training starts, or a second one): it has saved nothing more.
INTERRUPTED = "nothing more was saved; rerun the same command to resume"


def main(argv):
  del argv  # cli.run_command refuses stray arguments.
  config = _CONFIG.value
  parallel.initialize_distributed(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  request = cli.stop_request()
  # jax.distributed installs a SIGTERM handler of its own (its preemption notifier),
  # which would swallow the signal: the request's goes back on top for the run.
  with request.installed(), cli.errors_to_exit():
    result = train.train_and_evaluate(config, _WORKDIR.value, should_stop=request)
  if result.stopped:  # Another process of the run may have had the signal.
    sys.exit(128 + (request.signum or signal.SIGTERM))
  if request.signum is not None:  # After the last chunk: nothing more to save.
    cli.fail(f"interrupted by {signal.Signals(request.signum).name}; {INTERRUPTED}",
             128 + request.signum)

