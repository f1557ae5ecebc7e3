"""`python -m vae_jax.train --workdir=DIR [...]`: `vae-jax train` (vae_jax.commands.train)."""
from vae_jax import cli
from vae_jax.commands import train

cli.run_command(train.main, train.INTERRUPTED)
