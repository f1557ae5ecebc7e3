"""Loading a trained workdir (vae_jax/trained.py): which checkpoint, which model, and the
refusals and warnings on the way."""
import json
import re

import pytest

from conftest import flip_bytes
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


def test_another_optimizer_state_is_named_as_such_not_as_damage(tiny_config, copy_of):
  tiny_config.num_epochs, tiny_config.grad_clip_norm = 3, 1.0  # Adds a state to the chain.
  with pytest.raises(checkpoints.OtherLayout, match="checkpoint 250 holds other opt_state arrays"):
    train.train_and_evaluate(tiny_config, copy_of, verbose=False)
  assert checkpoints.Checkpointer(copy_of).all_steps() == [125, 250]
  assert not (copy_of / "checkpoints.damaged").exists()
