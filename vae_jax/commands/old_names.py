"""`python -m vae_jax.sample|interpolate|latent_map`: commands of an older README.

The commands live in `vae_jax.commands` (a module `vae_jax.sample` would shadow
the function `vae_jax.sample`), so without this Python would answer "No module
named vae_jax.interpolate". A finder for those three names alone gives a module
that, run as a program, says in one line what to run instead and exits 2;
imported, it does not exist, as before.
"""
import importlib.abc
import importlib.machinery
import sys

OLD = {"vae_jax.sample": "sample", "vae_jax.interpolate": "interpolate",
       "vae_jax.latent_map": "latent-map"}
_CODE = """
if __name__ != "__main__":
  raise ImportError("No module named {name!r}; the command is vae_jax.commands.{module}")
import sys
print("error: python -m {name} is now `vae-jax {command}` (or `python -m vae_jax {command}`), "
      "with the same flags", file=sys.stderr)
sys.exit(2)
"""


class _Loader(importlib.abc.InspectLoader):
  """What runpy asks of a module it runs: its code."""

  def get_source(self, fullname: str) -> str:
    command = OLD[fullname]
    return _CODE.format(name=fullname, command=command, module=command.replace("-", "_"))

  def is_package(self, fullname: str) -> bool:
    return False


class _Finder(importlib.abc.MetaPathFinder):

  def find_spec(self, fullname, path=None, target=None):
    del path, target
    return importlib.machinery.ModuleSpec(fullname, _Loader()) if fullname in OLD else None


def install() -> None:
  """Adds the finder once (last, so that a real module of such a name would win)."""
  if not any(isinstance(f, _Finder) for f in sys.meta_path):
    sys.meta_path.append(_Finder())
