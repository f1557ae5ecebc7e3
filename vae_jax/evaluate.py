"""`python -m vae_jax.evaluate`, an older name of `vae-jax evaluate` (`vae_jax.commands.evaluate`).

It is run, never imported: importing it raises ImportError, so that `vae_jax.evaluate` stays the function of that name.
"""
if __name__ != "__main__":
  raise ImportError("vae_jax.evaluate is a function; the command is vae_jax.commands.evaluate")

from vae_jax import cli  # pylint: disable=wrong-import-position
from vae_jax.commands import evaluate  # pylint: disable=wrong-import-position

cli.run_command(evaluate.main, getattr(evaluate, "INTERRUPTED", "stopped"))
