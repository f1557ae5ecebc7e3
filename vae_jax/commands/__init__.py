"""The command-line tools: `vae-jax COMMAND [--flag=value ...]`, or `python -m vae_jax COMMAND`.

One module per command; each defines its absl flags when imported. absl
flags are global to a process, so `vae_jax.cli.main` imports only the
command it runs. The modules live in this subpackage so that their names do
not shadow the functions `vae_jax.sample` and `vae_jax.interpolate`.
"""

# Command name -> one line for the list that `vae-jax` prints. The module is
# the name with `_` for `-`; its docstring says more.
COMMANDS = {
    "train": "Train a VAE into a workdir; running it again resumes.",
    "train-prior": "Fit the prior over a VQ-VAE's or FSQ model's codes (its second stage).",
    "evaluate": "ELBO, IWAE log-likelihood, bits/dim and active units of a trained model.",
    "sample": "Decode draws from the prior into one grid of images.",
    "interpolate": "Decode the paths between test images of two digits.",
    "latent-map": "Plot the test set's posterior means (and the manifold of a 2-D latent space).",
    "explore": "Serve a page that decodes the latent space under the pointer (offline, local).",
    "traverse": "Decode each latent's traversal, the latents sorted by their KL.",
    "disentanglement": "Score every model of a run with the disentanglement metrics.",
}


def module_name(command: str) -> str:
  """The module that implements `command`, e.g. `vae_jax.commands.latent_map`."""
  return f"{__name__}.{command.replace('-', '_')}"
