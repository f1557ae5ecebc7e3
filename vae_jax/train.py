"""`python -m vae_jax.train --workdir=DIR`: `vae-jax train`, in vae_jax.commands.train."""
from vae_jax import cli
from vae_jax.commands import train

if __name__ == "__main__":
  cli.run(train.main, train.INTERRUPTED)
