"""Checkpoints (vae_jax/checkpoints.py): damage caught, set aside and reported; full disks;
the config.json a run keeps beside them."""
import asyncio
import gc
import json
import os
import pathlib
import re
import shutil
import subprocess

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
import pytest

from conftest import array_files
from conftest import flip_bytes
from conftest import flip_middle_bytes
from conftest import latest_params
from conftest import same_params
from conftest import untimed
from conftest import vae_training
from vae_jax import checkpoints
from vae_jax import reporting
from vae_jax import parallel
from vae_jax import train
from vae_jax import train_state
from vae_jax.configs import tiny
from vae_jax.errors import UsageError
from vae_jax.families import vae as vae_family
import vae_jax


@pytest.mark.slow
def test_a_damaged_newest_checkpoint_is_set_aside_and_the_run_resumes_exactly(
    tiny_config, trained_workdir, copy_of, capsys):
  flip_bytes(copy_of / "checkpoints" / "250")
  capsys.readouterr()
  train.train_and_evaluate(tiny_config, copy_of, verbose=False)
  warnings = capsys.readouterr().err.strip().splitlines()
  assert len(warnings) == 2, warnings
  assert warnings[1] == (
      f"warning: {copy_of / 'metrics.jsonl'} records epoch 2, which the checkpoints do not "
      "hold (the run resumes after epoch 1); moved those rows to "
      f"{copy_of / reporting.DROPPED_FILE} and training them again")
  assert re.match(f"warning: checkpoint 250 in {copy_of / 'checkpoints'} is damaged \\(its file "
                  r"params/\S+ does not match the SHA-256 it was saved with\); moved it to ",
                  warnings[0]), warnings[0]
  assert warnings[0].endswith("resuming from step 125")
  assert (copy_of / "checkpoints.damaged" / "250" / "params").is_dir()
  # Trained again from step 125: the same parameters and records as before the damage.
  assert checkpoints.Checkpointer(copy_of).all_steps() == [125, 250]
  same_params(latest_params(trained_workdir), latest_params(copy_of))
  assert untimed(copy_of) == untimed(trained_workdir)


def _truncate_arrays(step_dir):
  for path in array_files(step_dir):
    path.write_bytes(path.read_bytes()[:len(path.read_bytes()) // 2])


DAMAGE = {  # How: (what the manifest says, what orbax's read and the digests say without it).
    # Without the manifest, the flipped byte is caught by the digests, or by orbax's read
    # where it lands in a compressed chunk's header (where it lands varies from save to
    # save: orbax writes the arrays from several threads).
    "bytes flipped": (flip_bytes, "its file params/.* does not match the SHA-256",
                      "do not match their SHA-256 digest|FAILED_PRECONDITION: Error reading "
                      "\".*ZSTD_decompressStream\\(\\) failed"),
    "arrays truncated": (_truncate_arrays, r"its file params/.* has \d+ bytes, not the \d+",
                         "OUT_OF_RANGE"),
    "index checksum": (lambda d: flip_middle_bytes((d / "params" / "d").iterdir()),
                       "its file params/d/.* does not match the SHA-256",
                       "DATA_LOSS: .* CRC-32C checksum verification failed"),
    "array item deleted": (lambda d: shutil.rmtree(d / "opt_state"),
                           "its file opt_state/.* is missing", "opt_state"),
    "meta deleted": (lambda d: shutil.rmtree(d / "meta"), "its file meta/.* is missing",
                     "meta record is unreadable"),
    "meta not JSON": (lambda d: (d / "meta" / "metadata").write_text("{\"step\": 25"),
                      "its file meta/metadata has", "meta record is unreadable"),
    "meta of another step": (
        lambda d: (d / "meta" / "metadata").write_text(json.dumps(
            dict(json.loads((d / "meta" / "metadata").read_text()), step=7))),
        "its file meta/metadata", "its meta record says step 7"),
    "array metadata garbled": (lambda d: (d / "params" / "_METADATA").write_text("garbage"),
                               "its file params/_METADATA has", "Expecting value"),
    "manifest garbled": (lambda d: (d / checkpoints.MANIFEST).write_text("{"),
                         "its files.json is unreadable", None),
}


def _abstract_state(config):
  """The shapes, dtypes and placement of the tiny config's train state, as the trainer
  restores into them."""
  state = jax.eval_shape(lambda: vae_training(config, vae_family.from_config(
      config, (28, 28, 1)), total_steps=250)[0])
  return checkpoints.abstract_like(state, parallel.replicated(parallel.make_mesh()))


def _items(config) -> dict:
  """What the trainer restores: the state's params and opt_state (shapes, placement)."""
  abstract = _abstract_state(config)
  return {"params": abstract.params, "opt_state": abstract.opt_state}


def _restore(ckpt, config, step) -> train_state.TrainState:
  """The train state of checkpoint `step`: its arrays and the counters of its record."""
  items, meta = ckpt.restore(_items(config), step)
  counters = jax.tree.map(jnp.asarray, checkpoints.counters(meta, ("loss",)))
  return train_state.TrainState(params=items["params"], opt_state=items["opt_state"],
                                model_state={}, **counters)


@pytest.mark.parametrize("manifest", [True, False], ids=["manifest", "saved_before_manifests"])
@pytest.mark.parametrize("kind", sorted(DAMAGE))
def test_every_kind_of_damage_is_caught_by_restore_and_load(tiny_config, copy_of, kind, manifest):
  """With the files' manifest, damage is found before orbax reads anything; in a
  checkpoint saved before manifests, by orbax's read and the array digests."""
  damage, reason, reason_without = DAMAGE[kind]
  if not manifest:
    if reason_without is None:
      pytest.skip("damage to the manifest itself")
    for step in (125, 250):
      (copy_of / "checkpoints" / str(step) / checkpoints.MANIFEST).unlink()
    reason = reason_without
  damage(copy_of / "checkpoints" / "250")
  ckpt = checkpoints.Checkpointer(copy_of, create=False)
  with pytest.raises(checkpoints.DamagedCheckpoint, match=reason):
    _restore(ckpt, tiny_config, 250)
  assert _restore(ckpt, tiny_config, 125).steps_done == 125
  if kind != "array item deleted":  # Loading reads the params and the meta record only.
    with pytest.raises(UsageError, match=f"checkpoint 250 .* is damaged .*{reason}"):
      vae_jax.load(copy_of, step=250)
    assert vae_jax.load(copy_of).step == 125  # The newest intact one, with a warning.


def test_a_reader_leaves_a_save_in_progress_alone(copy_of):
  """Only the run holding the lock deletes the temporary folders of saves."""
  in_progress = copy_of / "checkpoints" / "375.orbax-checkpoint-tmp-1700000000"
  shutil.copytree(copy_of / "checkpoints" / "250", in_progress)
  assert vae_jax.load(copy_of).step == 250
  assert in_progress.is_dir()


def test_a_save_that_fails_for_another_reason_is_not_called_a_full_disk(copy_of, monkeypatch):
  ckpt = checkpoints.Checkpointer(copy_of)
  state = _restore(ckpt, tiny.get_config(), 250)
  assert ckpt.save(state, {}) is False  # Step 250 exists: kept as it is.

  def failing(*args, **kwargs):
    raise ValueError("the file system said no")

  monkeypatch.setattr(ckpt._manager, "save", failing)
  state = state.replace(step=jnp.asarray(state.step) + 1)
  with pytest.raises(ValueError, match="the file system said no"):
    ckpt.save(state, {})
  assert ckpt.all_steps() == [125, 250]


def test_a_step_damaged_again_is_set_aside_beside_the_first(copy_of, trained_workdir, capsys):
  ckpt = checkpoints.Checkpointer(copy_of)
  for _ in range(2):
    flip_bytes(copy_of / "checkpoints" / "250")
    assert ckpt.restore_newest(_items(tiny.get_config()), set_aside=True)[2] == 125
    shutil.copytree(trained_workdir / "checkpoints" / "250", copy_of / "checkpoints" / "250")
    ckpt = checkpoints.Checkpointer(copy_of)
  assert sorted(p.name for p in (copy_of / "checkpoints.damaged").iterdir()) == ["250", "250.1"]
  assert capsys.readouterr().err.count("is damaged") == 2


@pytest.mark.slow
@pytest.mark.parametrize("when", ["before", "while_writing"])
def test_a_full_disk_during_a_save_is_one_line_naming_the_space(copy_of, tmp_path, monkeypatch,
                                                                when):
  """In process, on a real file system too small for a checkpoint (see test_faults_cli
  for the command line). The space is checked before orbax starts; `while_writing`
  hides the shortage from that check, so that orbax's own write runs out of space."""
  small = tmp_path / "small"
  small.mkdir()
  if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs",
                                          str(small)], capture_output=True).returncode:
    pytest.skip("mounting a small file system needs root")
  try:
    state = _restore(checkpoints.Checkpointer(copy_of), tiny.get_config(), 250)
    ckpt = checkpoints.Checkpointer(small)
    free = shutil.disk_usage(small).free / 2**20
    needed = sum(x.nbytes for x in jax.tree.leaves((state.params, state.opt_state))) / 2**20
    if when == "while_writing":
      real = shutil.disk_usage
      checked = []  # The first look is the check before the write; it is told of 1 GiB.
      def disk_usage(path):
        usage = real(path)
        checked.append(path)
        return usage._replace(free=2**30) if len(checked) == 1 else usage
      monkeypatch.setattr(checkpoints.shutil, "disk_usage", disk_usage)
    with pytest.raises(UsageError) as error:
      ckpt.save(state, {})
    what = {"before": "nothing was written",
            "while_writing": "the partial checkpoint was removed"}[when]
    assert str(error.value) == (
        f"disk full while saving checkpoint 250 to {small / 'checkpoints'} (about "
        f"{needed:.1f} MiB needed, {free:.1f} MiB free); {what} and older checkpoints "
        "are intact")
    assert round(needed, 1) == 1.2 and list((small / "checkpoints").iterdir()) == []
  finally:
    subprocess.run(["umount", "-l", str(small)], check=False)


@pytest.mark.parametrize("content, says", [("[]", "a JSON list"), ("{}", "an empty object"),
                                           ('{"latents": 4}', "an object without image_shape")])
def test_config_json_that_is_not_a_runs_is_described(tmp_path, content, says):
  (tmp_path / "config.json").write_text(content)
  with pytest.raises(UsageError, match=f"is not the config.json of a vae_jax run \\(it holds {says}\\)"):
    checkpoints.read_config(tmp_path)


def test_a_model_is_the_same_with_or_without_a_recorded_num_models(copy_of):
  saved = checkpoints.read_config(copy_of)
  older = checkpoints.read_config(copy_of)
  del older["num_models"]
  checkpoints.check_same_model(older, saved, copy_of)
  checkpoints.check_same_model(saved, older, copy_of)
  saved.num_models = 2
  with pytest.raises(UsageError, match="num_models 2 vs 1"):
    checkpoints.check_same_model(saved, older, copy_of)
  with pytest.raises(UsageError, match="num_models 1 vs 2"):
    checkpoints.check_same_model(older, saved, copy_of)


def test_asyncio_reports_of_orbax_failures_are_held_back_and_others_kept(caplog):
  """After a failed save, asyncio reports orbax's unawaited futures ("Task exception
  was never retrieved") when they are collected, sometimes after the one-line error
  (1 CI run in 2 had 6 more lines): those are dropped, any other task's are kept."""
  def raiser(folder: pathlib.Path, name: str):
    namespace = {}
    exec(compile(f"def fail():\n  raise ValueError('{name}')\n", str(folder / "fake.py"), "exec"),
         namespace)
    return namespace["fail"]

  def leak(fail):
    async def task():
      fail()

    async def main():
      asyncio.get_running_loop().create_task(task())  # Never awaited.
      await asyncio.sleep(0.01)

    loop = asyncio.new_event_loop()
    loop.run_until_complete(main())
    loop.close()
    gc.collect()

  with caplog.at_level("ERROR", logger="asyncio"), checkpoints._orbax_reports_held_back():
    leak(raiser(pathlib.Path(ocp.__file__).parent, "from orbax"))
    leak(raiser(pathlib.Path(__file__).parent, "from elsewhere"))
  reported = "\n".join(str(r.exc_info[1]) for r in caplog.records if r.exc_info)
  assert "from elsewhere" in reported and "from orbax" not in reported, reported
