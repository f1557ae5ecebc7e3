"""Configs for `vae-jax train --config=NAME`: `default` (the seed) and `tiny` (a smoke run).

`--config` also takes the path of any Python file with a `get_config()`
returning an `ml_collections.ConfigDict`; `load` reads either.
"""
import importlib.machinery
import importlib.util
import pathlib
import types

import ml_collections

from vae_jax.errors import UsageError

FOLDER = pathlib.Path(__file__).parent


def names() -> list[str]:
  """The configs shipped in this folder, by name: `["default", "iwae_paper", "tiny", ...]`."""
  return sorted(p.stem for p in FOLDER.glob("*.py") if not p.stem.startswith("_"))


def path_of(name_or_path: str) -> pathlib.Path:
  """The file `--config=name_or_path` means: an existing file, else a shipped config.

  A shipped config is found by its name with or without `.py` (`tiny`,
  `tiny.py`) from any working directory.

  Raises:
    UsageError: it is neither.
  """
  path = pathlib.Path(name_or_path)
  if path.is_file():
    return path
  stem = name_or_path.removesuffix(".py")
  if stem in names():
    return FOLDER / f"{stem}.py"
  raise UsageError(f"cannot load config {name_or_path}: no such file, and no shipped config "
                   f"of that name ({', '.join(names())})")


def load(argument: str) -> ml_collections.ConfigDict:
  """The config `--config=argument` names: `NAME_OR_PATH` or `NAME_OR_PATH:ARG`.

  As in ml_collections, text after the first colon is passed to
  `get_config(ARG)`.

  Raises:
    UsageError: the file is missing, fails to run (a syntax error, an
      import), lacks `get_config`, or its `get_config` fails or returns
      something other than a ConfigDict. The message is one line naming the
      file and the reason.
  """
  name_or_path, *arg = argument.split(":", 1)
  path = path_of(name_or_path)
  get_config = _import(path).get_config
  try:
    config = get_config(*arg)
  except Exception as e:  # pylint: disable=broad-except
    raise UsageError(f"cannot load config {path}: get_config() raised {_describe(e)}") from e
  if not isinstance(config, ml_collections.ConfigDict):
    raise UsageError(f"cannot load config {path}: get_config() returned a "
                     f"{type(config).__name__}, not an ml_collections.ConfigDict")
  return config


def _import(path: pathlib.Path) -> types.ModuleType:
  """Runs the config file at `path` as a module that has a `get_config`."""
  loader = importlib.machinery.SourceFileLoader(f"vae_jax_config_{path.stem}", str(path))
  module = importlib.util.module_from_spec(importlib.util.spec_from_loader(loader.name, loader))
  try:
    loader.exec_module(module)
  except Exception as e:  # pylint: disable=broad-except
    raise UsageError(f"cannot load config {path}: {_describe(e)}") from e
  if not callable(getattr(module, "get_config", None)):
    raise UsageError(f"cannot load config {path}: it defines no get_config()")
  return module


def _describe(e: Exception) -> str:
  lines = str(e).strip().splitlines()
  return f"{type(e).__name__}: {lines[0]}" if lines else type(e).__name__
