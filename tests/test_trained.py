"""Loading a workdir (`vae_jax.trained`): an edited config.json is refused in one line by every
command that reads a workdir, naming config.json, the field and the value, with nothing changed."""
import hashlib
import json
import pathlib
import shutil

import pytest

from conftest import vae_jax_in_process
from vae_jax.errors import UsageError
import vae_jax

# Each command that opens a workdir, with the flags that keep it short.
COMMANDS = {
    "evaluate": ["--k=2", "--num_examples=10"],
    "sample": [],
    "interpolate": [],
    "latent-map": [],
    "explore": ["--port=0"],
    "train": ["--config=tiny"],  # Resuming the workdir.
}

# name: (field, the value written (REMOVE: the field deleted), what the line says after
# "DIR/config.json").
REMOVE = object()
EDITS = {
    "wrong type": ("latents", "twenty", ": latents must be an integer, got 'twenty'"),
    "wrong type of a shape": ("image_shape", "abc",
                              ": image_shape must be a list of integers, got 'abc'"),
    "a float for an integer": ("hidden", 64.5, ": hidden must be an integer, got 64.5"),
    "missing shape field": ("latents", REMOVE,
                            ": no latents, which fixes the parameter shapes (was the file edited?)"),
    "missing network field": ("hidden", REMOVE,
                              ": no hidden, which fixes the parameter shapes (was the file edited?)"),
    "unknown choice": ("prior", "weird", ": unknown prior 'weird'; choose one of normal, mog, vamp"),
    "wrong shape": ("image_shape", [28, 28],
                    ": image_shape must be 3 positive integers (H, W, C), got [28, 28]"),
    "other shapes than the checkpoint": ("latents", 5, " describes other parameter shapes than "
                                         "the checkpoints hold (3 differ: "),
}


def _snapshot(folder: pathlib.Path) -> dict[str, str]:
  return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
          for p in sorted(folder.rglob("*")) if p.is_file()}


def _edited(source: pathlib.Path, target: pathlib.Path, field, value) -> pathlib.Path:
  shutil.copytree(source, target)
  values = json.loads((target / "config.json").read_text())
  if value is REMOVE:
    del values[field]
  else:
    values[field] = value
  (target / "config.json").write_text(json.dumps(values))
  return target


@pytest.mark.parametrize("edit", EDITS)
def test_an_edited_config_json_is_one_line_from_every_command(trained_workdir, tmp_path, edit):
  field, value, says = EDITS[edit]
  workdir = _edited(trained_workdir, tmp_path / "run", field, value)
  before = _snapshot(workdir)
  for command, extra in COMMANDS.items():
    status, _, err = vae_jax_in_process(command, f"--workdir={workdir}", *extra)
    assert (status, err.count("\n")) == (2, 1), (command, status, err)
    if command == "train" and field == "latents" and value == 5:  # The config given disagrees.
      says_here = f"error: workdir {workdir} holds a checkpoint of a different model (latents 5 vs 4)"
    else:
      says_here = f"error: {workdir / 'config.json'}{says}"
    assert err.startswith(says_here), (command, err)
    assert _snapshot(workdir) == before, command


def test_load_refuses_an_edited_config_json(trained_workdir, tmp_path):
  workdir = _edited(trained_workdir, tmp_path / "run", "latents", REMOVE)
  with pytest.raises(UsageError, match="config.json: no latents, which fixes the parameter"):
    vae_jax.load(workdir)
