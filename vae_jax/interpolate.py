"""`python -m vae_jax.interpolate`, an older name of `vae-jax interpolate` (`vae_jax.commands.interpolate`).

It is run, never imported: importing it raises ImportError, so that `vae_jax.interpolate` stays the function of that name.
"""
if __name__ != "__main__":
  raise ImportError("vae_jax.interpolate is a function; the command is vae_jax.commands.interpolate")

from vae_jax import cli  # pylint: disable=wrong-import-position
from vae_jax.commands import interpolate  # pylint: disable=wrong-import-position

cli.run_command(interpolate.main, getattr(interpolate, "INTERRUPTED", "stopped"))
