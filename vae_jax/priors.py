"""Deprecated: `vae_jax.priors` is now `vae_jax.families.vae.priors` (removed in the next release)."""
import warnings

from vae_jax.families.vae import priors as _moved
from vae_jax.families.vae.priors import *  # noqa: F403  pylint: disable=wildcard-import

warnings.warn("vae_jax.priors is now vae_jax.families.vae.priors", DeprecationWarning, stacklevel=2)


def __getattr__(name: str):
  return getattr(_moved, name)
