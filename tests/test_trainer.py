"""The training library: a step learns, resume is exact, divergence is caught."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import latest_params, stop_after_chunks, vae_training
from vae_jax import checkpoints
from vae_jax import data
from vae_jax import epoch
from vae_jax import reporting
from vae_jax import stacked
from vae_jax import train_state
from vae_jax import train
from vae_jax.configs import default
from vae_jax.errors import TrainingDiverged
from vae_jax.errors import UsageError
from vae_jax.families import base
from vae_jax.families import vae as vae_family
from vae_jax.families.vae import objective as vae_objective


def _one_model_state(model, config, key):
  del key  # Model i draws from key i.
  return vae_training(config, model)


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


def test_model_shapes_and_parameter_count_follow_the_config():
  config = default.get_config()
  model = vae_family.from_config(config, (28, 28, 1))
  params = vae_family.init_params(model, jax.random.key(0))
  assert base.parameter_count(params) == 652_824  # The tutorial's count.
  small = vae_family.from_config(config, (7, 5, 1))
  out, mean, logvar = small.apply({"params": vae_family.init_params(small, jax.random.key(0))},
                                  jnp.zeros((3, 7, 5, 1)), jax.random.key(1))
  assert out.shape == (3, 7, 5, 1) and mean.shape == logvar.shape == (3, 20)


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


def test_a_finished_run_is_left_alone(tiny_config, trained_workdir):
  before = {p: p.stat().st_mtime_ns for p in trained_workdir.rglob("*")}
  result = train.train_and_evaluate(tiny_config, trained_workdir, verbose=False)
  assert result.already_done and result.epochs_done == 2
  assert {p: p.stat().st_mtime_ns for p in trained_workdir.rglob("*")} == before


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


def test_a_checkpoint_of_another_shape_is_refused(tiny_config, trained_workdir):
  tiny_config.latents = 8
  tiny_config.num_epochs = 3
  with pytest.raises(UsageError, match="different model .*latents 4 vs 8"):
    train.train_and_evaluate(tiny_config, trained_workdir, verbose=False)


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
