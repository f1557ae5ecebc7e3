"""`python -m vae_jax.latent_map`, an older name of `vae-jax latent-map` (`vae_jax.commands.latent_map`).

It is run, never imported: importing it raises ImportError, as the other commands' old names do.
"""
if __name__ != "__main__":
  raise ImportError("vae_jax.latent_map is a function; the command is vae_jax.commands.latent_map")

from vae_jax import cli  # pylint: disable=wrong-import-position
from vae_jax.commands import latent_map  # pylint: disable=wrong-import-position

cli.run_command(latent_map.main, getattr(latent_map, "INTERRUPTED", "stopped"))
