"""vae_jax: variational autoencoders in JAX/Flax.

Train (what `python -m vae_jax.train --workdir=DIR` runs), with the config's
network or your own (any encoder, decoder, likelihood, prior or posterior):

    import vae_jax
    from vae_jax.configs import default
    vae_jax.train_and_evaluate(default.get_config(), "DIR")
    vae = vae_jax.VAE(encoder=MyEncoder(), decoder=MyDecoder(), latents=16)
    vae_jax.train_and_evaluate(default.get_config(), "DIR2", module=vae)

Use a trained model:

    import jax, vae_jax
    model = vae_jax.load("DIR")                           # latest checkpoint
    model = vae_jax.load("DIR2", module=vae)              # a user-defined network
    test = vae_jax.data.load(model.config).test           # its test split, uint8 (N, H, W, C)
    mean, logvar = vae_jax.encode(model, test.images)     # (N, L) each
    digits = vae_jax.sample(model, jax.random.key(0), 64) # (64, H, W), z from the model's prior
    zeros, sixes = test.images[test.labels == 0][:5], test.images[test.labels == 6][:5]
    rows = vae_jax.interpolate(model, zeros, sixes, num_steps=9)  # (5, 9, H, W)
    print(vae_jax.evaluate(model, test.images[:100], k=100, key=jax.random.key(0)))
"""
import typing

from vae_jax import data
from vae_jax import disentanglement
from vae_jax import evaluation
from vae_jax import likelihoods
from vae_jax import schema
from vae_jax import stopping
from vae_jax.errors import UsageError
from vae_jax.evaluation import evaluate
from vae_jax.latent import decode
from vae_jax.latent import encode
from vae_jax.latent import interpolate
from vae_jax.latent import interpolate_latents
from vae_jax.latent import interpolate_top
from vae_jax.latent import kl_per_latent
from vae_jax.latent import manifold
from vae_jax.latent import reconstruct
from vae_jax.latent import reconstruct_keeping
from vae_jax.latent import sample
from vae_jax.latent import traverse
from vae_jax.latent import traversals
from vae_jax.families.vae.model import VAE
from vae_jax.networks import ConvDecoder
from vae_jax.networks import ConvEncoder
from vae_jax.networks import MLPDecoder
from vae_jax.networks import MLPEncoder
from vae_jax.trained import TrainedModel
from vae_jax.trained import load

if typing.TYPE_CHECKING:  # Type checkers and the API reference see it; runtime: below.
  from vae_jax.train import train_and_evaluate


def __getattr__(name: str):
  # The training driver is imported on first use: loading, evaluating and exploring a
  # trained model (all the rest of this API) import no optimizer and no training code.
  if name == "train_and_evaluate":
    from vae_jax.train import train_and_evaluate  # pylint: disable=g-import-not-at-top
    return train_and_evaluate
  raise AttributeError(f"module 'vae_jax' has no attribute {name!r}")


__all__ = [
    "ConvDecoder", "ConvEncoder", "MLPDecoder", "MLPEncoder", "TrainedModel", "UsageError",
    "VAE", "data", "decode", "disentanglement", "encode", "evaluate", "evaluation", "interpolate",
    "interpolate_latents", "interpolate_top", "kl_per_latent", "likelihoods", "load", "manifold", "reconstruct",
    "reconstruct_keeping", "sample", "schema", "stopping", "train_and_evaluate", "traversals",
    "traverse",
]
