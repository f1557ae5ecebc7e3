"""vae_jax: variational autoencoders in JAX/Flax.

Use a model trained with `python -m vae_jax.train --workdir=DIR`:

    import jax, vae_jax
    model = vae_jax.load("DIR")                           # latest checkpoint
    mean, logvar = vae_jax.encode(model, images)          # (N, L) each
    digits = vae_jax.sample(model, jax.random.key(0), 64) # (64, H, W)
    rows = vae_jax.interpolate(model, zeros, sixes, num_steps=9)  # (P, 9, H, W)
"""
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

__all__ = [
    "TrainedModel", "UsageError", "decode", "encode", "interpolate", "interpolate_latents",
    "load", "manifold", "reconstruct", "sample", "traverse",
]
