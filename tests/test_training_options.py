"""Objective and optimizer options: beta, KL warm-up, free bits, AdamW, schedules, clipping."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import vae_jax
from conftest import latest_params, stop_after_chunks
from vae_jax import optim
from vae_jax import reporting
from vae_jax import train
from vae_jax.configs import default
from vae_jax.errors import UsageError


@pytest.mark.slow
def test_beta_trains_on_the_weighted_objective_and_reports_the_true_elbo(tmp_path, tiny_config):
  tiny_config.num_epochs, tiny_config.beta, tiny_config.kl_warmup_steps = 1, 4.0, 100
  vae_jax.train_and_evaluate(tiny_config, tmp_path, verbose=False)
  (record,) = reporting.read_metrics(tmp_path)
  assert record["kl_weight"] == 4.0  # 125 steps > 100 warm-up steps.
  assert record["train_objective"] != record["train_loss"]
  np.testing.assert_allclose(record["test_loss"], record["test_recon"] + record["test_kl"],
                             rtol=1e-6)  # The true ELBO: KL at weight 1.
  model = vae_jax.load(tmp_path)
  x = np.asarray(vae_jax.sample(model, jax.random.key(0), 8))
  assert x.shape == (8, 28, 28)




def _optimizer_config(**overrides):
  config = default.get_config()
  config.update(overrides)
  return config


def test_the_default_optimizer_is_adam_step_for_step():
  params = {"w": jnp.array([0.5, -1.0, 2.0])}
  grads = {"w": jnp.array([0.1, 0.2, -0.3])}
  ours, theirs = optim.make(_optimizer_config(), 1e-3, 100), optax.adam(1e-3)
  a, b = ours.init(params), theirs.init(params)
  for _ in range(3):
    (ua, a), (ub, b) = ours.update(grads, a, params), theirs.update(grads, b, params)
    np.testing.assert_array_equal(ua["w"], ub["w"])


def test_schedules_warm_up_then_decay():
  factor = optim.schedule_factor(_optimizer_config(lr_schedule="cosine", warmup_steps=10), 110)
  np.testing.assert_allclose([factor(0), factor(5), factor(10), factor(60), factor(110)],
                             [0.0, 0.5, 1.0, 0.5, 0.0], atol=1e-6)
  assert optim.schedule_factor(_optimizer_config(), 100) is None


def test_the_burda_schedule_is_the_iwae_papers_stages_over_3280_epochs():
  """Burda et al. 2015: for i = 0 .. 7, 3^i passes at 1e-3 * 10^(-i/7). With one step
  per epoch, epoch e (0-based) is in the stage whose cumulative epochs pass e."""
  factor = optim.schedule_factor(_optimizer_config(lr_schedule="burda"), 3280)
  stage_of = lambda e: next(i for i in range(8) if e < sum(3**j for j in range(i + 1)))
  epochs = [0, 1, 3, 4, 12, 13, 39, 40, 120, 121, 363, 364, 1092, 1093, 3279]
  np.testing.assert_allclose([float(factor(e)) for e in epochs],
                             [10 ** (-stage_of(e) / 7) for e in epochs], rtol=1e-6)
  assert [stage_of(e) for e in (0, 1, 4, 13, 40, 121, 364, 1093)] == list(range(8))
  half = optim.schedule_factor(_optimizer_config(lr_schedule="burda"), 1640)  # Shares kept.
  assert float(half(545)) == pytest.approx(10 ** (-6 / 7)) and float(half(547)) == pytest.approx(0.1)


def test_adam_eps_is_adams_epsilon():
  params, grads = {"w": jnp.zeros(2)}, {"w": jnp.array([1e-5, -2e-5])}
  ours, theirs = optim.make(_optimizer_config(adam_eps=1e-4), 1e-3, 10), optax.adam(1e-3, eps=1e-4)
  np.testing.assert_array_equal(ours.update(grads, ours.init(params), params)[0]["w"],
                                theirs.update(grads, theirs.init(params), params)[0]["w"])


def test_clipping_is_optax_clip_then_adam():
  config = _optimizer_config(grad_clip_norm=1.0)
  params = {"w": jnp.zeros(2)}
  grads = [{"w": jnp.array([300.0, 400.0])}, {"w": jnp.array([0.3, -0.4])},
           {"w": jnp.array([-30.0, 40.0])}]
  txs = {"ours": optim.make(config, 1e-3, 10),
         "clip+adam": optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-3)),
         "adam": optax.adam(1e-3)}
  states = {name: tx.init(params) for name, tx in txs.items()}
  updates = {name: [] for name in txs}
  for g in grads:
    for name, tx in txs.items():
      u, states[name] = tx.update(g, states[name], params)
      updates[name].append(u["w"])
  np.testing.assert_array_equal(np.array(updates["ours"]), np.array(updates["clip+adam"]))
  # Clipping changed Adam's second moments, hence the later steps.
  assert np.abs(np.array(updates["ours"][1:]) - np.array(updates["adam"][1:])).max() > 1e-4


@pytest.mark.parametrize("overrides, message", [
    ({"optimizer": "sgd"}, "unknown optimizer 'sgd'"),
    ({"lr_schedule": "step"}, "unknown lr_schedule 'step'"),
    ({"weight_decay": 1e-4}, "weight_decay needs --config.optimizer=adamw"),
    ({"grad_clip_norm": -1.0}, "grad_clip_norm must be >= 0"),
])
def test_bad_optimizer_settings_are_refused(overrides, message):
  with pytest.raises(UsageError, match=message):
    optim.check(_optimizer_config(**overrides))


@pytest.mark.slow
@pytest.mark.parametrize("overrides", [
    {"optimizer": "adamw", "weight_decay": 1e-2},
    {"lr_schedule": "cosine", "warmup_steps": 50},
    {"grad_clip_norm": 5.0},
])
def test_every_optimizer_setting_trains_and_loads(tmp_path, tiny_config, overrides):
  tiny_config.update(overrides)
  tiny_config.num_epochs = 1
  vae_jax.train_and_evaluate(tiny_config, tmp_path, verbose=False)
  assert np.isfinite(reporting.read_metrics(tmp_path)[0]["test_loss"])
  model = vae_jax.load(tmp_path)  # Reads the parameters alone: no optimizer involved.
  assert vae_jax.sample(model, jax.random.key(0), 2).shape == (2, 28, 28)


@pytest.mark.slow
def test_resume_mid_warm_up_and_schedule_is_bit_exact(tmp_path, tiny_config, monkeypatch):
  tiny_config.update({"lr_schedule": "cosine", "warmup_steps": 60, "kl_warmup_steps": 200,
                      "beta": 2.0, "free_bits": 0.1, "num_epochs": 2})
  train.train_and_evaluate(tiny_config, tmp_path / "straight", verbose=False)
  with monkeypatch.context() as patch:  # Stop at step 150: inside both warm-ups.
    stop = stop_after_chunks(patch, 6)
    result = train.train_and_evaluate(tiny_config, tmp_path / "resumed", verbose=False,
                                      should_stop=stop)
  assert result.stopped and result.state.steps_done == 150
  train.train_and_evaluate(tiny_config, tmp_path / "resumed", verbose=False)
  jax.tree.map(np.testing.assert_array_equal, latest_params(tmp_path / "straight"),
               latest_params(tmp_path / "resumed"))
  a, b = (reporting.read_metrics(tmp_path / d) for d in ("straight", "resumed"))
  assert [r["train_objective"] for r in a] == [r["train_objective"] for r in b]
  assert [r["kl_weight"] for r in a] == [1.25, 2.0]  # 125 / 200 * 2, then beta.


class _Spiky(vae_jax.VAE):
  """A VAE whose loss is 10,000 times larger on the one training image that starts with a
  white pixel: the step whose batch holds it has a gradient far above its running level."""

  def elbo_terms(self, x, key):
    terms = super().elbo_terms(x, key)
    spike = jnp.where(x[:, 0, 0, 0] > 0.99, 1e4, 1.0)
    return {**terms, "loss": terms["loss"] * spike, "recon": terms["recon"] * spike}


@pytest.mark.slow
def test_an_update_far_above_the_gradients_level_is_skipped_and_counted(tiny_config, tmp_path):
  rng = np.random.default_rng(0)
  images = (rng.random((2000, 8, 8, 1)) < 0.3).astype(np.uint8) * 200  # First pixels 0 or 200.
  images[1234, 0, 0, 0] = 255  # The one spiking example.
  np.savez(tmp_path / "data.npz", x_train=images, x_test=images[:100])
  tiny_config.update(data_dir=str(tmp_path / "data.npz"), num_epochs=2, skip_threshold=10.0)
  vae = _Spiky(vae_jax.MLPEncoder(16, 2), vae_jax.MLPDecoder(16, (8, 8, 1)), latents=2)
  result = train.train_and_evaluate(tiny_config, tmp_path / "run", module=vae, verbose=False)
  rows = reporting.read_metrics(tmp_path / "run")
  # 31 steps per epoch: epoch 2's spike comes after step 20, when skipping starts.
  assert rows[1]["skipped_updates"] == 1 and rows[0]["skipped_updates"] <= 1
  assert result.epochs_done == 2 and all(np.isfinite(r["test_loss"]) for r in rows)
  assert "skipped_updates" in reporting.scalars(rows[1])
