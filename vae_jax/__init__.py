"""vae_jax: variational autoencoders in JAX/Flax.

Train (what `python -m vae_jax.train --workdir=DIR` runs), with the config's
network or your own:

    from vae_jax import VAE, likelihoods, train_and_evaluate
    from vae_jax.configs import default
    train_and_evaluate(default.get_config(), "DIR")
    vae = VAE(encoder=MyEncoder(), decoder=MyDecoder(), image_shape=None, latents=16)
    train_and_evaluate(default.get_config(), "DIR2", model=vae)

Use a trained model:

    import jax, vae_jax
    model = vae_jax.load("DIR")                           # latest checkpoint
    model = vae_jax.load("DIR2", module=vae)              # a user-defined network
    mean, logvar = vae_jax.encode(model, images)          # (N, L) each
    digits = vae_jax.sample(model, jax.random.key(0), 64) # (64, H, W)
    rows = vae_jax.interpolate(model, zeros, sixes, num_steps=9)  # (P, 9, H, W)
"""
from vae_jax import likelihoods
from vae_jax.checkpoints import TrainedModel
from vae_jax.checkpoints import load
from vae_jax.errors import UsageError
from vae_jax.latent import decode
from vae_jax.latent import encode
from vae_jax.latent import interpolate
from vae_jax.latent import interpolate_latents
from vae_jax.latent import manifold
from vae_jax.latent import reconstruct
from vae_jax.latent import sample
from vae_jax.latent import traverse
from vae_jax.model import ConvDecoder
from vae_jax.model import ConvEncoder
from vae_jax.model import MLPDecoder
from vae_jax.model import MLPEncoder
from vae_jax.model import VAE
from vae_jax.commands import old_names as _old_names

_old_names.install()  # `python -m vae_jax.interpolate` (an older README's) says what it is now.


def __getattr__(name: str):
  # `vae_jax.train` is imported on first use, so that `python -m vae_jax.train` runs the
  # module as __main__ without importing it twice (runpy warns about that).
  if name == "train_and_evaluate":
    from vae_jax.train import train_and_evaluate  # pylint: disable=g-import-not-at-top
    return train_and_evaluate
  raise AttributeError(f"module 'vae_jax' has no attribute {name!r}")


__all__ = [
    "ConvDecoder", "ConvEncoder", "MLPDecoder", "MLPEncoder", "TrainedModel", "UsageError",
    "VAE", "decode", "encode", "interpolate", "interpolate_latents", "likelihoods", "load",
    "manifold", "reconstruct", "sample", "train_and_evaluate", "traverse",
]
