"""Trains a VAE: `python -m vae_jax.train --workdir=DIR [--config.FIELD=VALUE ...]`.

Running the same command on a workdir resumes from its latest checkpoint;
Ctrl-C (SIGINT) or SIGTERM saves a checkpoint first. Exit status: 0 done,
1 the loss diverged, 2 bad input, 128 + signal when interrupted.
"""
import sys

from absl import flags

from vae_jax import cli
from vae_jax import trainer

_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Folder for config.json, checkpoints, metrics.jsonl, images.", required=True)
_CONFIG = cli.define_config_flag()


def main(argv):
  if len(argv) > 1:
    cli.fail(f"unexpected arguments: {' '.join(argv[1:])}")
  config = cli.config_value(_CONFIG)
  with cli.errors_to_exit():
    result = trainer.train_and_evaluate(config, _WORKDIR.value)
  if result.interrupted_by is not None:
    sys.exit(128 + result.interrupted_by)


if __name__ == "__main__":
  cli.run(main)
