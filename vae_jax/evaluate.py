"""`python -m vae_jax.evaluate --workdir=DIR`: `vae-jax evaluate`, in vae_jax.commands.evaluate."""
from vae_jax import cli
from vae_jax.commands import evaluate

if __name__ == "__main__":
  cli.run_command(evaluate.main)
