"""A tiny config for tests and smoke runs: 2 epochs of `mnist_sample`, small MLP.

    vae-jax train --workdir=/tmp/vae_tiny --config=tiny

Takes a few seconds on a laptop CPU, most of it compilation.
"""
import ml_collections

from vae_jax.configs import default


def get_config() -> ml_collections.ConfigDict:
  """Returns the default config shrunk to run in seconds."""
  config = default.get_config()
  config.dataset = "mnist_sample"
  config.hidden = 64
  config.latents = 4
  config.num_epochs = 2
  config.batch_size = 64
  config.eval_batch_size = 500
  config.eval_iwae_k = 16
  config.chunks_per_epoch = 4
  return config
