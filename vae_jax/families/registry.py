"""The families `--config.family=NAME` selects: one registration line each.

A family from outside the package registers with `register(MyFamily)` before its
first run; its config fields then join the config (`vae_jax.schema`).
"""
from vae_jax.errors import UsageError
from vae_jax.families import annealed
from vae_jax.families import base
from vae_jax.families import betatc
from vae_jax.families import dipvae
from vae_jax.families import factorvae
from vae_jax.families import vae
from vae_jax.families.discrete import fsq
from vae_jax.families.discrete import vqvae

FAMILIES: dict[str, type[base.Family]] = {family.name: family for family in (
    vae.GaussianVAE,
    vqvae.VQVAE,
    fsq.FSQVAE,
    betatc.BetaTCVAE, factorvae.FactorVAE, dipvae.DIPVAE, annealed.AnnealedVAE,
)}


def register(family: type[base.Family]) -> type[base.Family]:
  """Adds a family (a `base.Family` subclass with a `name`) to those a config can select."""
  if not family.name:
    raise ValueError(f"{family.__name__} has no name")
  FAMILIES[family.name] = family
  return family


def get(name: str) -> type[base.Family]:
  """The family registered as `name`.

  Raises:
    UsageError: no family of that name.
  """
  if name not in FAMILIES:
    raise UsageError(f"unknown family {name!r}; choose one of {', '.join(FAMILIES)}")
  return FAMILIES[name]


def every_class() -> list[type[base.Family]]:
  """Every registered family class and the classes of their later stages."""
  classes = []
  for family in FAMILIES.values():
    for cls in (family, *family.stages.values()):
      if cls not in classes:
        classes.append(cls)
  return classes
