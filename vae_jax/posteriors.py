"""Deprecated: `vae_jax.posteriors` is now `vae_jax.families.vae.posteriors` (removed in the next release)."""
import warnings

from vae_jax.families.vae import posteriors as _moved
from vae_jax.families.vae.posteriors import *  # noqa: F403  pylint: disable=wildcard-import

warnings.warn("vae_jax.posteriors is now vae_jax.families.vae.posteriors", DeprecationWarning, stacklevel=2)


def __getattr__(name: str):
  return getattr(_moved, name)
