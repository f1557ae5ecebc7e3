"""Deprecated: `vae_jax.model` moved (removed in the next release).

The VAE module is `vae_jax.VAE` (`vae_jax.families.vae.model`), the networks are in
`vae_jax.networks`, and a config's VAE is built by its family (`vae_jax.schema.build_family`).
"""
import warnings

from vae_jax import networks
from vae_jax import objectives
from vae_jax.families import vae as _family
from vae_jax.families.vae import model as _model
from vae_jax.families.vae.model import LOGVAR_MAX  # noqa: F401
from vae_jax.families.vae.model import LOGVAR_MIN  # noqa: F401
from vae_jax.families.vae.model import VAE  # noqa: F401
from vae_jax.families.vae.model import given  # noqa: F401
from vae_jax.networks import ConvDecoder  # noqa: F401
from vae_jax.networks import ConvEncoder  # noqa: F401
from vae_jax.networks import MLPDecoder  # noqa: F401
from vae_jax.networks import MLPEncoder  # noqa: F401
from vae_jax.networks import linear  # noqa: F401
from vae_jax.objectives import reparameterize  # noqa: F401

warnings.warn("vae_jax.model moved: vae_jax.VAE, vae_jax.networks, vae_jax.families.vae",
              DeprecationWarning, stacklevel=2)


from_config = _family.from_config
init_params = _family.init_params


def describe(model: VAE, params) -> str:
  return _family.GaussianVAE(model).describe(params)


def signature(model: VAE) -> dict:
  return _family.signature(model)


def __getattr__(name: str):
  for where in (_model, networks, objectives, _family):
    if hasattr(where, name):
      return getattr(where, name)
  raise AttributeError(f"module 'vae_jax.model' has no attribute {name!r}")
