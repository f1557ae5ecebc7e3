"""`python -m vae_jax.sample`, an older name of `vae-jax sample` (`vae_jax.commands.sample`).

It is run, never imported: importing it raises ImportError, so that `vae_jax.sample` stays the function of that name.
"""
if __name__ != "__main__":
  raise ImportError("vae_jax.sample is a function; the command is vae_jax.commands.sample")

from vae_jax import cli  # pylint: disable=wrong-import-position
from vae_jax.commands import sample  # pylint: disable=wrong-import-position

cli.run_command(sample.main, getattr(sample, "INTERRUPTED", "stopped"))
