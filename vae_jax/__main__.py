"""`python -m vae_jax COMMAND [--flag=value ...]`: the same as the `vae-jax` command."""
from vae_jax import cli

if __name__ == "__main__":
  cli.main(prog="python -m vae_jax")
