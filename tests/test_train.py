"""The training library: a step learns, resume is exact, divergence is caught."""
import json
import os
import shutil
import socket
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import faults
from conftest import StopFlag
from conftest import flip_bytes
from conftest import latest_params
from conftest import same_params
from conftest import stop_after_chunks
from conftest import untimed
from conftest import vae_training
from vae_jax import checkpoints
from vae_jax import data
from vae_jax import epoch
from vae_jax import evaluation
from vae_jax import lock
from vae_jax import reporting
from vae_jax import stacked
from vae_jax import train
from vae_jax import train_state
from vae_jax.configs import default
from vae_jax.errors import TrainingDiverged
from vae_jax.errors import UsageError
from vae_jax.families import base
from vae_jax.families import vae as vae_family
from vae_jax.families.vae import objective as vae_objective
import vae_jax


def _one_model_state(model, config, key):
  del key  # Model i draws from key i.
  return vae_training(config, model)


@pytest.mark.slow
def test_one_update_lowers_the_loss_on_a_fixed_batch(tiny_config, key):
  images = data.load(data.settings(tiny_config)).train.images[:64]
  model = vae_family.from_config(tiny_config, (28, 28, 1))
  state, step_config, settings = _one_model_state(model, tiny_config, key)
  x = data.to_unit_interval(jnp.asarray(images))
  step_key = jax.random.key(1)

  def loss(params):  # The same z draw before and after the step.
    z_key, _ = jax.random.split(step_key)
    return jnp.mean(vae_objective.negative_elbo(model, params, x, z_key)["loss"])

  one = stacked.index(state, 0)
  new, metrics = jax.jit(train_state.step_one, static_argnums=(0,))(
      step_config, one, jnp.asarray(images), step_key, stacked.index(settings, 0))
  # The jitted step and this eager loss are different programs: their sums over 784
  # pixels and 64 images may round differently on another CPU (a few 1e-7 relative).
  # A real mistake moves the loss far more: another z draw 8e-4, the loss after the
  # step 1e-2.
  np.testing.assert_allclose(metrics["loss"], loss(one.params), rtol=1e-4)
  assert loss(new.params) < loss(one.params)
  assert int(new.step) == 1 and bool(new.alive)


@pytest.mark.slow
def test_model_shapes_and_parameter_count_follow_the_config():
  config = default.get_config()
  model = vae_family.from_config(config, (28, 28, 1))
  params = vae_family.init_params(model, jax.random.key(0))
  assert base.parameter_count(params) == 652_824  # The tutorial's count.
  small = vae_family.from_config(config, (7, 5, 1))
  out, mean, logvar = small.apply({"params": vae_family.init_params(small, jax.random.key(0))},
                                  jnp.zeros((3, 7, 5, 1)), jax.random.key(1))
  assert out.shape == (3, 7, 5, 1) and mean.shape == logvar.shape == (3, 20)


@pytest.mark.slow
def test_resume_after_k_epochs_equals_the_uninterrupted_run(tiny_config, tmp_path):
  tiny_config.num_epochs = 3
  train.train_and_evaluate(tiny_config, tmp_path / "straight", verbose=False)
  tiny_config.num_epochs = 1
  train.train_and_evaluate(tiny_config, tmp_path / "resumed", verbose=False)
  tiny_config.num_epochs = 3
  result = train.train_and_evaluate(tiny_config, tmp_path / "resumed", verbose=False)
  assert result.epochs_done == 3
  straight, resumed = latest_params(tmp_path / "straight"), latest_params(tmp_path / "resumed")
  jax.tree.map(np.testing.assert_array_equal, straight, resumed)  # Bit-identical on CPU.
  a, b = reporting.read_metrics(tmp_path / "straight"), reporting.read_metrics(tmp_path / "resumed")
  assert [r["epoch"] for r in b] == [1, 2, 3]
  assert [r["test_loss"] for r in a] == [r["test_loss"] for r in b]
  assert [r["train_loss"] for r in a] == [r["train_loss"] for r in b]


@pytest.mark.slow
def test_stop_inside_an_epoch_saves_and_resumes_exactly(tiny_config, tmp_path, monkeypatch):
  train.train_and_evaluate(tiny_config, tmp_path / "straight", verbose=False)
  steps_per_epoch = 8004 // tiny_config.batch_size
  chunk = epoch.chunk_size(steps_per_epoch, tiny_config.chunks_per_epoch)
  with monkeypatch.context() as patch:  # Epoch 1 and two chunks of epoch 2.
    stop = stop_after_chunks(patch, steps_per_epoch // chunk + 2)
    result = train.train_and_evaluate(tiny_config, tmp_path / "stopped", verbose=False,
                                      should_stop=stop)
  assert result.stopped and result.epochs_done == 1
  ckpt = checkpoints.Checkpointer(tmp_path / "stopped")
  assert ckpt.latest_step() == steps_per_epoch + 2 * chunk  # Inside epoch 2.
  assert len(reporting.read_metrics(tmp_path / "stopped")) == 1
  train.train_and_evaluate(tiny_config, tmp_path / "stopped", verbose=False)
  jax.tree.map(np.testing.assert_array_equal, latest_params(tmp_path / "straight"),
               latest_params(tmp_path / "stopped"))
  a, b = (reporting.read_metrics(tmp_path / d) for d in ("straight", "stopped"))
  assert [r["train_loss"] for r in a] == [r["train_loss"] for r in b]


@pytest.mark.slow
def test_a_finished_run_is_left_alone(tiny_config, trained_workdir):
  before = {p: p.stat().st_mtime_ns for p in trained_workdir.rglob("*")}
  result = train.train_and_evaluate(tiny_config, trained_workdir, verbose=False)
  assert result.already_done and result.epochs_done == 2
  assert {p: p.stat().st_mtime_ns for p in trained_workdir.rglob("*")} == before


@pytest.mark.slow
def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tiny_config, tmp_path):
  tiny_config.num_epochs = 1
  train.train_and_evaluate(tiny_config, tmp_path, verbose=False)
  good = latest_params(tmp_path)
  tiny_config.num_epochs = 3
  tiny_config.learning_rate = 1e9
  with pytest.raises(TrainingDiverged, match="non-finite loss in epoch 2"):
    train.train_and_evaluate(tiny_config, tmp_path, verbose=False)
  assert checkpoints.Checkpointer(tmp_path).all_steps() == [125]
  jax.tree.map(np.testing.assert_array_equal, good, latest_params(tmp_path))


@pytest.mark.slow
def test_a_checkpoint_of_another_shape_is_refused(tiny_config, trained_workdir):
  tiny_config.latents = 8
  tiny_config.num_epochs = 3
  with pytest.raises(UsageError, match="different model .*latents 4 vs 8"):
    train.train_and_evaluate(tiny_config, trained_workdir, verbose=False)


@pytest.mark.slow
@pytest.mark.parametrize("field, value, message", [
    ("latents", 0, "latents must be > 0"),
    ("batch_size", -1, "batch_size must be > 0"),
    ("learning_rate", 0.0, "learning_rate must be > 0"),
    ("num_epochs", -1, "num_epochs must be > 0"),
    ("num_epochs", 0, "num_epochs must be > 0, got 0"),
    ("binarize", "static", "unknown binarize 'static'; choose one of none, dynamic"),
    ("batch_size", 10_000, "larger than the training set"),
])
def test_invalid_values_raise_usage_errors(tiny_config, tmp_path, field, value, message):
  tiny_config[field] = value
  with pytest.raises(UsageError, match=message):
    train.train_and_evaluate(tiny_config, tmp_path, verbose=False)
  assert not any(tmp_path.iterdir())  # Nothing written.


def test_chunk_size_divides_the_epoch():
  assert epoch.chunk_size(468, 10) == 52  # 9 chunks
  assert epoch.chunk_size(125, 4) == 25
  for steps in range(1, 200):
    assert steps % epoch.chunk_size(steps, 10) == 0


@pytest.mark.slow
def test_the_chunking_of_an_epoch_never_changes_the_result(tiny_config, trained_workdir, tmp_path):
  """One chunk per epoch against the fixture's five: step s of an epoch must draw from
  the key of s, whatever chunk it falls in (a key folded with the index inside the
  chunk would only differ between chunkings)."""
  tiny_config.chunks_per_epoch = 1
  start = time.perf_counter()
  train.train_and_evaluate(tiny_config, tmp_path, verbose=False)
  seconds = time.perf_counter() - start
  same_params(latest_params(trained_workdir), latest_params(tmp_path))
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


@pytest.mark.slow
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
  same_params(latest_params(trained_workdir), latest_params(tmp_path))


@pytest.mark.slow
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
  same_params(latest_params(trained_workdir), latest_params(tmp_path))
  assert untimed(tmp_path) == untimed(trained_workdir)
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


@pytest.mark.slow
def test_a_stop_while_compiling_returns_before_training(tiny_config, tmp_path, monkeypatch):
  with monkeypatch.context() as patch:
    stop = _stop_inside(patch, epoch.Runner, "compile")
    result = train.train_and_evaluate(tiny_config, tmp_path, verbose=False, should_stop=stop)
  assert result.stopped and result.state.steps_done == 0
  assert not checkpoints.Checkpointer(tmp_path).all_steps()


@pytest.mark.slow
def test_a_stop_while_writing_figures_ends_that_epoch_and_saves_it(tiny_config, tmp_path,
                                                                   monkeypatch):
  with monkeypatch.context() as patch:
    stop = _stop_inside(patch, train, "_write_figures")
    result = train.train_and_evaluate(tiny_config, tmp_path, verbose=False, should_stop=stop)
  assert result.stopped and result.epochs_done == 1
  assert checkpoints.Checkpointer(tmp_path).all_steps() == [125]
  assert [r["epoch"] for r in reporting.read_metrics(tmp_path)] == [1]


@pytest.mark.slow
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
  assert untimed(tmp_path / "cut") == untimed(tmp_path / "whole")
  assert "test_iwae_nll" in reporting.read_metrics(tmp_path / "cut")[0]


@pytest.mark.slow
def test_divergence_on_a_fresh_workdir_says_that_nothing_was_saved(tiny_config, tmp_path):
  tiny_config.learning_rate = 1e9
  with pytest.raises(TrainingDiverged) as error:
    train.train_and_evaluate(tiny_config, tmp_path, verbose=False)
  assert "no checkpoint had been saved yet" in str(error.value)
  assert "None" not in str(error.value)
  assert not (tmp_path / "config.json").exists()
  assert not checkpoints.Checkpointer(tmp_path).all_steps()


@pytest.mark.slow
def test_divergence_after_a_damaged_resume_names_the_verified_checkpoint(tiny_config, copy_of):
  """Resumed past a damaged checkpoint 250, the run diverges: the message names 125,
  the checkpoint it verified, which is kept; config.json is not rewritten."""
  flip_bytes(copy_of / "checkpoints" / "250")
  config_before = (copy_of / "config.json").read_bytes()
  tiny_config.learning_rate, tiny_config.num_epochs = 1e9, 3
  with pytest.raises(TrainingDiverged, match=r"last good checkpoint kept \(step 125\)"):
    train.train_and_evaluate(tiny_config, copy_of, verbose=False)
  assert checkpoints.Checkpointer(copy_of).all_steps() == [125]
  assert vae_jax.load(copy_of).step == 125  # It verifies.
  assert (copy_of / "config.json").read_bytes() == config_before


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_a_busy_workdir_is_refused_before_the_data_is_read(tiny_config, trained_workdir,
                                                           monkeypatch):
  monkeypatch.setattr(train.data, "load", lambda *a, **k: pytest.fail("read the data"))
  busy = f"workdir {trained_workdir} is in use by pid {os.getpid()} on host " \
         f"{socket.gethostname()} since 20"
  with lock.WorkdirLock(trained_workdir), pytest.raises(UsageError, match=busy):
    train.train_and_evaluate(tiny_config, trained_workdir, verbose=False)


@pytest.mark.slow
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


def test_a_finite_loss_above_1e30_is_a_warning_once(tmp_path, capsys):
  from vae_jax import reporting  # pylint: disable=g-import-not-at-top
  reporter = reporting.Reporter(tmp_path)
  fine = [{"model": 0, "train_loss": 90.0, "test_loss": 1e29}]
  assert not train._warn_of_huge_losses(fine, 0, reporter)
  huge = [{"model": 0, "train_loss": 2.5e31, "test_loss": None}]
  assert train._warn_of_huge_losses(huge, 3, reporter)
  assert capsys.readouterr().err == (
      "warning: train_loss is 2.5e+31 after epoch 4: finite, but the model is diverging; try "
      "a lower --config.learning_rate\n")
