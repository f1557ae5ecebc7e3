"""The classic MNIST VAE of the PyTorch tutorial: 784-400-20 MLP, Adam 1e-3, batch 128.

    python -m vae_jax.train --workdir=/tmp/vae

trains on full MNIST, downloaded once; on a machine without network (and no
copy cached) on the 8,004 real digits shipped with the package
(`mnist_sample`), saying so in one line. `--config.data_dir=DIR` reads IDX
files, a .npz file or a folder of PNG/JPEG images from DIR. Every field can be overridden
as `--config.FIELD=VALUE`; the fields, their defaults and what they mean are
declared once, in `vae_jax/schema.py` (`vae-jax train --help` lists them).
"""
import ml_collections

from vae_jax import schema


def get_config() -> ml_collections.ConfigDict:
  """Returns the default config (the PyTorch tutorial's settings)."""
  return schema.default_config()
