"""Loading a trained workdir (vae_jax/trained.py): which checkpoint, which model, and the
refusals and warnings on the way; an edited config.json refused in one line by every
command that reads a workdir, naming config.json, the field and the value, with nothing
changed."""
import hashlib
import json
import pathlib
import re
import shutil

import pytest

from conftest import flip_bytes
from conftest import vae_jax_in_process
from vae_jax import checkpoints
from vae_jax import train
from vae_jax.errors import UsageError
import vae_jax


def test_load_refuses_a_model_index_out_of_range_and_reads_older_configs(copy_of):
  with pytest.raises(UsageError, match=r"no checkpoint at step 7 in .* \(steps: 125, 250\)"):
    vae_jax.load(copy_of, step=7)
  with pytest.raises(UsageError, match=r"model 1 out of range: .* holds 1 model\(s\) \(0 .. 0\)"):
    vae_jax.load(copy_of, index=1)
  config = json.loads((copy_of / "config.json").read_text())
  del config["num_models"]  # As written before runs could stack models.
  (copy_of / "config.json").write_text(json.dumps(config))
  assert vae_jax.load(copy_of).step == 250


def test_an_unreadable_config_json_is_named(copy_of):
  (copy_of / "config.json").write_text('{"latents": 4,')
  with pytest.raises(UsageError, match=r"config.json: unreadable config \(Expecting"):
    vae_jax.load(copy_of)


def test_load_warns_about_a_damaged_newest_checkpoint_and_takes_the_one_before(copy_of, capsys):
  flip_bytes(copy_of / "checkpoints" / "250")
  capsys.readouterr()
  model = vae_jax.load(copy_of)
  assert model.step == 125
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and re.fullmatch(
      f"warning: checkpoint 250 in {copy_of / 'checkpoints'} is damaged \\(its file params/\\S+ "
      r"does not match the SHA-256 it was saved with\); using step 125, the newest intact one",
      err[0]), err
  assert (copy_of / "checkpoints" / "250").is_dir()  # A reader moves nothing.


@pytest.mark.slow
def test_when_every_checkpoint_is_damaged_the_message_says_so(tiny_config, copy_of):
  for step in (125, 250):
    flip_bytes(copy_of / "checkpoints" / str(step))
  tiny_config.num_epochs = 3
  with pytest.raises(UsageError) as error:
    train.train_and_evaluate(tiny_config, copy_of, verbose=False)
  message = str(error.value)
  assert "every checkpoint in" in message and "step 250: its file params/" in message
  assert "corrupt or incomplete, not those of another model" in message
  assert "backup" in message and "\n" not in message
  assert checkpoints.Checkpointer(copy_of).all_steps() == [125, 250]  # Nothing moved.
  with pytest.raises(UsageError, match="every checkpoint .* is damaged"):
    vae_jax.load(copy_of)


@pytest.mark.slow
def test_another_optimizer_state_is_named_as_such_not_as_damage(tiny_config, copy_of):
  tiny_config.num_epochs, tiny_config.grad_clip_norm = 3, 1.0  # Adds a state to the chain.
  with pytest.raises(checkpoints.OtherLayout, match="checkpoint 250 holds other opt_state arrays"):
    train.train_and_evaluate(tiny_config, copy_of, verbose=False)
  assert checkpoints.Checkpointer(copy_of).all_steps() == [125, 250]
  assert not (copy_of / "checkpoints.damaged").exists()


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
                            ": no latents, which fixes the parameter shapes (was the file "),
    "missing network field": ("hidden", REMOVE,
                              ": no hidden, which fixes the parameter shapes (was the file "),
    "unknown choice": ("prior", "weird",
                       ": unknown prior 'weird'; choose one of normal, mog, vamp"),
    "wrong shape": ("image_shape", [28, 28],
                    ": image_shape must be 3 positive integers (H, W, C), got [28, 28]"),
    "other shapes than the checkpoint": ("latents", 5, (" describes other parameter shapes "
                                                        "than the checkpoints hold (3 differ: ")),
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
      says_here = (f"error: workdir {workdir} holds a checkpoint of a different model "
                   "(latents 5 vs 4)")
    else:
      says_here = f"error: {workdir / 'config.json'}{says}"
    assert err.startswith(says_here), (command, err)
    assert _snapshot(workdir) == before, command


def test_load_refuses_an_edited_config_json(trained_workdir, tmp_path):
  workdir = _edited(trained_workdir, tmp_path / "run", "latents", REMOVE)
  with pytest.raises(UsageError, match="config.json: no latents, which fixes the parameter"):
    vae_jax.load(workdir)