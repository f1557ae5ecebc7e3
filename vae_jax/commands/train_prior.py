"""Fits the prior over a discrete model's codes: `vae-jax train-prior --workdir=DIR`.

    vae-jax train --workdir=DIR --config.family=vqvae --config.model=conv
    vae-jax train-prior --workdir=DIR [--config.prior_layers=3 --config.num_epochs=10 ...]

The second training stage of a VQ-VAE or FSQ workdir: a causal transformer
over the raster order of each image's code grid, fitted by maximum likelihood
on the codes the trained (and then frozen) autoencoder gives the training
images (`vae_jax.families.discrete.prior`). It trains in `DIR/prior`, with
DIR's config.json and the `--config.FIELD=VALUE` given: the prior's own fields
(`prior_width`, `prior_layers`, `prior_heads`) and any other, such as
`num_epochs` or `learning_rate`, except those that fix the autoencoder's
shapes. Then `vae-jax sample` and `vae-jax evaluate` on DIR use it.

Running it again resumes (with a higher num_epochs, trains further); Ctrl-C
(SIGINT) or SIGTERM saves a checkpoint first. Refused in one line: a workdir
without a trained model, one of a family without a prior stage, one whose
autoencoder trained further since its prior was fitted. Exit status: 0 done,
1 the loss diverged, 2 bad input, 128 + signal when interrupted.
"""
import signal
import sys

from absl import flags

from vae_jax import cli
from vae_jax import train

STAGE = "prior"
_WORKDIR = flags.DEFINE_string("workdir", None, "A folder where `vae-jax train` trained a "
                               "vqvae or fsq model; the prior goes to WORKDIR/prior.",
                               required=True)
_CONFIG = cli.define_config_flag()
CONFIG_FIELDS_IN_HELP = True
INTERRUPTED = "nothing more was saved; rerun the same command to resume"


def given_fields(argv: list[str]) -> list[str]:
  """The config fields set on the command line (`--config.FIELD=VALUE` or `--config.FIELD
  VALUE`), in order.

  Exits with status 2 on a `--config=` (the config is WORKDIR's) or a `--config.sweep.FIELD`.
  """
  names = []
  for arg in argv:
    if arg == "--config" or arg.startswith("--config="):
      cli.fail("train-prior takes --config.FIELD=VALUE overrides of WORKDIR/config.json, "
               "not a --config")
    if arg.startswith("--config."):
      name = arg[len("--config."):].split("=", 1)[0]
      if "." in name:
        cli.fail(f"--config.{name}: the models of a later stage are those of WORKDIR; "
                 "it takes no sweep")
      names.append(name)
  return names


def main(argv):
  del argv  # cli.run_command refuses stray arguments.
  config = _CONFIG.value
  overrides = {name: config[name] for name in given_fields(sys.argv[1:])}
  request = cli.stop_request()
  with request.installed(), cli.errors_to_exit():
    result = train.train_stage(_WORKDIR.value, STAGE, overrides, should_stop=request)
  if result.stopped:
    sys.exit(128 + (request.signum or signal.SIGTERM))
  if request.signum is not None:  # After the last chunk: nothing more to save.
    cli.fail(f"interrupted by {signal.Signals(request.signum).name}; {INTERRUPTED}",
             128 + request.signum)
