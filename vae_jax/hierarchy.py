"""Deprecated: `vae_jax.hierarchy` is now `vae_jax.families.vae.hierarchy` (removed in the next release)."""
import warnings

from vae_jax.families.vae import hierarchy as _moved
from vae_jax.families.vae.hierarchy import *  # noqa: F403  pylint: disable=wildcard-import

warnings.warn("vae_jax.hierarchy is now vae_jax.families.vae.hierarchy", DeprecationWarning, stacklevel=2)


def __getattr__(name: str):
  return getattr(_moved, name)
