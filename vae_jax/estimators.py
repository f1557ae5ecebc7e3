"""Deprecated: `vae_jax.estimators` is now `vae_jax.families.vae.estimators` (removed in the next release)."""
import warnings

from vae_jax.families.vae import estimators as _moved
from vae_jax.families.vae.estimators import *  # noqa: F403  pylint: disable=wildcard-import

warnings.warn("vae_jax.estimators is now vae_jax.families.vae.estimators", DeprecationWarning, stacklevel=2)


def __getattr__(name: str):
  return getattr(_moved, name)
