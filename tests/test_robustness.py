"""What survives what, in process: damaged checkpoints, the workdir lock, torn metrics,
stops and resumes at chunk boundaries, divergence, and an epoch's independence from
its chunking. The same faults from the command line are in test_faults_cli.py."""
import asyncio
import gc
import json
import os
import re
import pathlib
import shutil
import socket
import subprocess
import time

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

import faults
import vae_jax
from conftest import StopFlag
from conftest import latest_params
from vae_jax import checkpoints
from vae_jax import epoch
from vae_jax import experiment
from vae_jax import evaluation
from vae_jax import lock
from vae_jax import parallel
from vae_jax import reporting
from vae_jax import train_state
from vae_jax import train
from vae_jax.configs import tiny
from vae_jax.errors import TrainingDiverged
from vae_jax.errors import UsageError
from vae_jax.families import vae as vae_family
from conftest import vae_training  # pylint: disable=wrong-import-order

# Fields of a metrics record that measure time, which no two runs share.
TIMING = {"epoch_seconds", "examples_per_second", "eval_seconds", "compile_seconds", "iwae_seconds"}


def _same_params(a, b) -> None:
  jax.tree.map(np.testing.assert_array_equal, a, b)


def _untimed(workdir) -> list[dict]:
  return [{k: v for k, v in r.items() if k not in TIMING} for r in reporting.read_metrics(workdir)]


@pytest.fixture
def copy_of(trained_workdir, tmp_path):
  """A fresh copy of the session's 2-epoch tiny run (checkpoints 125 and 250)."""
  workdir = tmp_path / "copy"
  shutil.copytree(trained_workdir, workdir)
  return workdir


def _flip_middle_bytes(paths) -> None:
  for path in paths:
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))


def _array_files(step_dir):
  """The files holding a checkpoint's params arrays (orbax's OCDBT data files)."""
  return sorted((step_dir / "params").glob("ocdbt.process_*/d/*"))


def _flip_bytes(step_dir) -> None:
  """Overwrites a byte in the middle of every params data file: they still parse, and
  only the digest shows the change."""
  _flip_middle_bytes(_array_files(step_dir))


# ----------------------------------------------------------------------------
# Chunking and resumes never change the result.


def test_the_chunking_of_an_epoch_never_changes_the_result(tiny_config, trained_workdir, tmp_path):
  """One chunk per epoch against the fixture's five: step s of an epoch must draw from
  the key of s, whatever chunk it falls in (a key folded with the index inside the
  chunk would only differ between chunkings)."""
  tiny_config.chunks_per_epoch = 1
  start = time.perf_counter()
  train.train_and_evaluate(tiny_config, tmp_path, verbose=False)
  seconds = time.perf_counter() - start
  _same_params(latest_params(trained_workdir), latest_params(tmp_path))
  a, b = reporting.read_metrics(trained_workdir), reporting.read_metrics(tmp_path)
  assert 0 < b[0]["compile_seconds"] < seconds and "compile_seconds" not in b[1]
  assert [r["test_loss"] for r in a] == [r["test_loss"] for r in b]
  # The train loss adds the chunks' float32 sums (each with relative rounding up to
  # ~5e-7), so 1 or 5 chunks may differ by ~1e-6; a chunk counted twice or missed, by 20 %.
  np.testing.assert_allclose([r["train_loss"] for r in a], [r["train_loss"] for r in b], rtol=1e-5)


class _Clock:
  """A `time` module whose perf_counter advances one second per call: each chunk of
  training then takes exactly one second, however fast the machine."""

  def __init__(self):
    self.now = 0.0

  def perf_counter(self) -> float:
    self.now += 1.0
    return self.now


def _stop_when(patch, when) -> StopFlag:
  """A stop flag (as SIGINT would set) that sets itself after the training chunk that
  brings the run to a global step for which `when(step)` holds."""
  flag = StopFlag()
  run_chunk = epoch.Runner.run_chunk

  def counted(self, state, batches, keys, settings, start):
    result = run_chunk(self, state, batches, keys, settings, start)
    if when(int(result[0].step[0])):
      flag.set = True
    return result

  patch.setattr(epoch.Runner, "run_chunk", counted)
  return flag


def test_the_epoch_after_a_resume_reports_its_whole_time(tiny_config, trained_workdir, tmp_path,
                                                         monkeypatch):
  """Stopped 2 of 5 chunks into epoch 2 and resumed: epoch 2 took 5 chunk-seconds in all,
  and its speed is counted over all of them, not over the 3 after the resume."""
  monkeypatch.setattr(train, "time", _Clock())
  with monkeypatch.context() as patch:
    stop = _stop_when(patch, lambda step: step == 125 + 50)
    result = train.train_and_evaluate(tiny_config, tmp_path, verbose=False, should_stop=stop)
  assert result.stopped and result.epochs_done == 1
  train.train_and_evaluate(tiny_config, tmp_path, verbose=False)
  records = reporting.read_metrics(tmp_path)
  assert [r["epoch_seconds"] for r in records] == [5.0, 5.0]
  assert records[1]["examples_per_second"] == 125 * 64 / 5.0
  _same_params(latest_params(trained_workdir), latest_params(tmp_path))


def test_a_stop_during_evaluation_resumes_with_the_evaluation(tiny_config, trained_workdir,
                                                             tmp_path, monkeypatch):
  """Stopped between evaluation chunks after epoch 2: the checkpoint holds the whole
  epoch's training, and the resumed run evaluates it as the uninterrupted one did."""
  flag = StopFlag()
  stop = lambda: setattr(flag, "set", True)
  with monkeypatch.context() as patch:
    patch.setattr(evaluation, "over_chunks", faults.at_eval_chunk(evaluation.over_chunks, 2, 1, stop))
    result = train.train_and_evaluate(tiny_config, tmp_path, verbose=False, should_stop=flag)
  assert result.stopped and result.epochs_done == 1
  assert checkpoints.Checkpointer(tmp_path).all_steps() == [125, 250]
  assert len(reporting.read_metrics(tmp_path)) == 1
  train.train_and_evaluate(tiny_config, tmp_path, verbose=False)
  _same_params(latest_params(trained_workdir), latest_params(tmp_path))
  assert _untimed(tmp_path) == _untimed(trained_workdir)
  # The completed evaluation is recorded with the checkpoint: a rerun has nothing to do.
  assert train.train_and_evaluate(tiny_config, tmp_path, verbose=False).already_done


def _stop_inside(patch, owner, name: str, calls: int = 1) -> StopFlag:
  """A stop flag (as SIGTERM would set) that sets itself during the `calls`-th call of
  `owner.name`."""
  flag = StopFlag()
  original = getattr(owner, name)
  count = 0

  def stopping(*args, **kwargs):
    nonlocal count
    count += 1
    if count == calls:
      flag.set = True
    return original(*args, **kwargs)

  patch.setattr(owner, name, stopping)
  return flag


def test_a_stop_while_compiling_returns_before_training(tiny_config, tmp_path, monkeypatch):
  with monkeypatch.context() as patch:
    stop = _stop_inside(patch, epoch.Runner, "compile")
    result = train.train_and_evaluate(tiny_config, tmp_path, verbose=False, should_stop=stop)
  assert result.stopped and result.state.steps_done == 0
  assert not checkpoints.Checkpointer(tmp_path).all_steps()


def test_a_stop_while_writing_figures_ends_that_epoch_and_saves_it(tiny_config, tmp_path,
                                                                   monkeypatch):
  with monkeypatch.context() as patch:
    stop = _stop_inside(patch, train, "_write_figures")
    result = train.train_and_evaluate(tiny_config, tmp_path, verbose=False, should_stop=stop)
  assert result.stopped and result.epochs_done == 1
  assert checkpoints.Checkpointer(tmp_path).all_steps() == [125]
  assert [r["epoch"] for r in reporting.read_metrics(tmp_path)] == [1]


def test_a_stop_during_the_iwae_bound_resumes_with_it(tiny_config, tmp_path, monkeypatch):
  tiny_config.num_epochs, tiny_config.eval_iwae_every, tiny_config.eval_iwae_k = 1, 1, 4
  tiny_config.iwae_example_chunk = 500  # 4 chunks of the test set.
  train.train_and_evaluate(tiny_config, tmp_path / "whole", verbose=False)
  with monkeypatch.context() as patch:  # Stops after the IWAE bound's second chunk of 4.
    stop = _stop_inside(patch, evaluation, "bound_statistics", calls=2)
    result = train.train_and_evaluate(tiny_config, tmp_path / "cut", verbose=False,
                                      should_stop=stop)
  assert result.stopped and result.epochs_done == 0
  assert checkpoints.Checkpointer(tmp_path / "cut").all_steps() == [125]
  train.train_and_evaluate(tiny_config, tmp_path / "cut", verbose=False)
  assert _untimed(tmp_path / "cut") == _untimed(tmp_path / "whole")
  assert "test_iwae_nll" in reporting.read_metrics(tmp_path / "cut")[0]


# ----------------------------------------------------------------------------
# Damaged checkpoints.


def test_a_damaged_newest_checkpoint_is_set_aside_and_the_run_resumes_exactly(
    tiny_config, trained_workdir, copy_of, capsys):
  _flip_bytes(copy_of / "checkpoints" / "250")
  capsys.readouterr()
  train.train_and_evaluate(tiny_config, copy_of, verbose=False)
  warnings = capsys.readouterr().err.strip().splitlines()
  assert len(warnings) == 1, warnings
  assert re.match(f"warning: checkpoint 250 in {copy_of / 'checkpoints'} is damaged \\(its file "
                  r"params/\S+ does not match the SHA-256 it was saved with\); moved it to ",
                  warnings[0]), warnings[0]
  assert warnings[0].endswith("resuming from step 125")
  assert (copy_of / "checkpoints.damaged" / "250" / "params").is_dir()
  # Trained again from step 125: the same parameters and records as before the damage.
  assert checkpoints.Checkpointer(copy_of).all_steps() == [125, 250]
  _same_params(latest_params(trained_workdir), latest_params(copy_of))
  assert _untimed(copy_of) == _untimed(trained_workdir)


def _truncate_arrays(step_dir):
  for path in _array_files(step_dir):
    path.write_bytes(path.read_bytes()[:len(path.read_bytes()) // 2])


DAMAGE = {  # How: (what the manifest says, what orbax's read and the digests say without it).
    "bytes flipped": (_flip_bytes, "its file params/.* does not match the SHA-256",
                      "do not match their SHA-256 digest"),
    "arrays truncated": (_truncate_arrays, r"its file params/.* has \d+ bytes, not the \d+",
                         "OUT_OF_RANGE"),
    "index checksum": (lambda d: _flip_middle_bytes((d / "params" / "d").iterdir()),
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
    _flip_bytes(copy_of / "checkpoints" / "250")
    assert ckpt.restore_newest(_items(tiny.get_config()), set_aside=True)[2] == 125
    shutil.copytree(trained_workdir / "checkpoints" / "250", copy_of / "checkpoints" / "250")
    ckpt = checkpoints.Checkpointer(copy_of)
  assert sorted(p.name for p in (copy_of / "checkpoints.damaged").iterdir()) == ["250", "250.1"]
  assert capsys.readouterr().err.count("is damaged") == 2


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


def test_the_keys_of_each_epoch_and_stream_are_their_own(tiny_config):
  """fold_in(fold_in(seed key, stream), epoch): a key that ignored the epoch would
  replay epoch 1's order and noise forever, and every run would agree with itself."""
  tiny_config.num_models, tiny_config.independent_data_order = 2, True
  keys = experiment.KeyStreams.of(tiny_config)
  data_of = lambda keys: [jax.random.key_data(k).tolist() for k in keys]
  streams = experiment.KeyStreams
  for stream, epoch_number in ((streams.TRAIN, 0), (streams.EVALUATION, 3)):
    expected = [jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), stream), epoch_number)
                for seed in (0, 1)]
    assert data_of(keys.stream(stream, epoch_number)) == data_of(expected)
  assert data_of(keys.evaluation(3)) == data_of(keys.stream(streams.EVALUATION, 3))
  shuffle, steps = keys.epoch(0)
  assert shuffle.shape == steps.shape == (2,)
  assert data_of(keys.epoch(1)[1]) != data_of(steps)
  tiny_config.independent_data_order = False  # One order, model 0's, for all.
  assert data_of(experiment.KeyStreams.of(tiny_config).epoch(0)[0]) == data_of(shuffle[:1])
  numbers = (streams.INIT, streams.TRAIN, streams.EVALUATION, streams.FIGURES, streams.IWAE,
             evaluation.TEST_BINARIZE_STREAM)
  assert len(set(numbers)) == len(numbers)


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
  _flip_bytes(copy_of / "checkpoints" / "250")
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
    _flip_bytes(copy_of / "checkpoints" / str(step))
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


# ----------------------------------------------------------------------------
# Divergence: the message names only a checkpoint it has verified.


def test_divergence_on_a_fresh_workdir_says_that_nothing_was_saved(tiny_config, tmp_path):
  tiny_config.learning_rate = 1e9
  with pytest.raises(TrainingDiverged) as error:
    train.train_and_evaluate(tiny_config, tmp_path, verbose=False)
  assert "no checkpoint had been saved yet" in str(error.value)
  assert "None" not in str(error.value)
  assert not (tmp_path / "config.json").exists()
  assert not checkpoints.Checkpointer(tmp_path).all_steps()


def test_divergence_after_a_damaged_resume_names_the_verified_checkpoint(tiny_config, copy_of):
  """Resumed past a damaged checkpoint 250, the run diverges: the message names 125,
  the checkpoint it verified, which is kept; config.json is not rewritten."""
  _flip_bytes(copy_of / "checkpoints" / "250")
  config_before = (copy_of / "config.json").read_bytes()
  tiny_config.learning_rate, tiny_config.num_epochs = 1e9, 3
  with pytest.raises(TrainingDiverged, match=r"last good checkpoint kept \(step 125\)"):
    train.train_and_evaluate(tiny_config, copy_of, verbose=False)
  assert checkpoints.Checkpointer(copy_of).all_steps() == [125]
  assert vae_jax.load(copy_of).step == 125  # It verifies.
  assert (copy_of / "config.json").read_bytes() == config_before


# ----------------------------------------------------------------------------
# The lock and the order of checks.


def test_a_lock_left_by_a_dead_process_is_taken_over_with_a_warning(tmp_path, capsys):
  dead = {"host": socket.gethostname(), "pid": 999_999_999, "since": "2026-01-01T00:00:00+00:00"}
  (tmp_path / lock.LOCK_FILE).write_text(json.dumps(dead))
  with lock.WorkdirLock(tmp_path):
    holder = json.loads((tmp_path / lock.LOCK_FILE).read_text())
    assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
  assert capsys.readouterr().err.strip() == (
      f"warning: taking over {tmp_path / lock.LOCK_FILE}, left by pid 999999999 on host "
      f"{socket.gethostname()} since 2026-01-01T00:00:00+00:00, which is no longer running")
  assert not (tmp_path / lock.LOCK_FILE).exists()


def test_a_lock_of_another_host_is_refused_with_the_way_out(tmp_path):
  (tmp_path / lock.LOCK_FILE).write_text(json.dumps({"host": "elsewhere", "pid": 1, "since": "x"}))
  with pytest.raises(UsageError, match=r"locked by pid 1 on host elsewhere since x, which cannot "
                     r"be checked from .*; if that run is gone, delete .*run.lock"):
    lock.WorkdirLock(tmp_path).acquire()


def test_a_held_lock_stops_training_but_not_readers(tiny_config, trained_workdir):
  tiny_config.num_epochs = 3
  before = {p: p.stat().st_mtime_ns for p in trained_workdir.rglob("*")}
  with lock.WorkdirLock(trained_workdir):
    with pytest.raises(UsageError, match=f"in use by pid {os.getpid()} on host "
                       f"{socket.gethostname()} since 20"):
      train.train_and_evaluate(tiny_config, trained_workdir, verbose=False)
    assert vae_jax.load(trained_workdir).step == 250  # Readers take no lock.
    after = {p: p.stat().st_mtime_ns for p in trained_workdir.rglob("*") if p.name != lock.LOCK_FILE}
  assert after == before


def test_a_busy_workdir_is_refused_before_the_data_is_read(tiny_config, trained_workdir,
                                                           monkeypatch):
  monkeypatch.setattr(train.data, "load", lambda *a, **k: pytest.fail("read the data"))
  with lock.WorkdirLock(trained_workdir):
    with pytest.raises(UsageError, match=f"workdir {trained_workdir} is in use by pid "
                       f"{os.getpid()} on host {socket.gethostname()} since 20"):
      train.train_and_evaluate(tiny_config, trained_workdir, verbose=False)


@pytest.mark.parametrize("obstacle", ["locked", "another model"])
def test_nothing_is_rewritten_before_the_lock_and_the_checkpoint_are_checked(
    tiny_config, copy_of, obstacle):
  """A torn metrics line is only dropped by a run that will go on."""
  with open(copy_of / reporting.METRICS_FILE, "a") as f:
    f.write('{"epoch": 3, "train_loss": 1')
  tiny_config.num_epochs = 3
  if obstacle == "another model":
    tiny_config.latents = 8
  before = {p: p.read_bytes() for p in copy_of.rglob("*") if p.is_file()}
  holder = lock.WorkdirLock(copy_of)
  if obstacle == "locked":
    holder.acquire()
  try:
    with pytest.raises(UsageError):
      train.train_and_evaluate(tiny_config, copy_of, verbose=False)
  finally:
    holder.release()
  assert {p: p.read_bytes() for p in copy_of.rglob("*") if p.is_file()} == before


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


def test_a_checkpoint_folder_removed_while_training_is_created_again_and_saved(
    tiny_config, tmp_path, monkeypatch, capsys):
  """checkpoints/ and config.json removed before the save of epoch 2: the run creates them
  again, saves and says what was lost; the rerun resumes from that checkpoint."""
  tiny_config.train_subset, tiny_config.num_epochs = 640, 2  # 10 steps per epoch.
  workdir = tmp_path / "run"
  write_metrics = reporting.Reporter.write_metrics

  def removing(self, records, *args):  # Just before the save of epoch 2.
    if records[0]["epoch"] == 2:
      shutil.rmtree(workdir / "checkpoints")
      (workdir / "config.json").unlink()
    return write_metrics(self, records, *args)

  monkeypatch.setattr(reporting.Reporter, "write_metrics", removing)
  train.train_and_evaluate(tiny_config, workdir, verbose=False)
  err = capsys.readouterr().err
  assert (f"warning: {workdir / 'checkpoints'} was removed while the run trained (its "
          "checkpoints of steps 10 are lost); created it again to save step 20") in err
  assert f"warning: {workdir / 'config.json'} was removed while the run trained" in err
  assert checkpoints.Checkpointer(workdir, create=False).all_steps() == [20]
  assert vae_jax.load(workdir).step == 20
  monkeypatch.setattr(reporting.Reporter, "write_metrics", write_metrics)
  assert train.train_and_evaluate(tiny_config, workdir, verbose=False).already_done

  # Removed after the run: the rerun trains from scratch, and keeps the rows it replaces.
  before = reporting.read_metrics(workdir)
  shutil.rmtree(workdir / "checkpoints")
  tiny_config.num_epochs = 1
  train.train_and_evaluate(tiny_config, workdir, verbose=False)
  err = capsys.readouterr().err
  assert (f"warning: {workdir / 'metrics.jsonl'} records epochs 1-2, which the checkpoints "
          "do not hold (no checkpoint holds any epoch (was checkpoints/ removed?)); moved those "
          f"rows to {workdir / reporting.DROPPED_FILE}") in err
  aside = [json.loads(line) for line in (workdir / reporting.DROPPED_FILE).read_text().splitlines()]
  assert aside == before
  assert [r["epoch"] for r in reporting.read_metrics(workdir)] == [1]
