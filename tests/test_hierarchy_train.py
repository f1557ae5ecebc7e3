"""A two-layer hierarchy trained, evaluated and reloaded end to end on 300 real digits
(its maths: tests/test_hierarchy.py), and the combinations it refuses."""
import flax.linen as nn
import jax
import numpy as np
import pytest

import vae_jax
from vae_jax.families import vae as vae_family
from vae_jax import data
from vae_jax import experiment
from vae_jax.families.vae import hierarchy
from vae_jax import reporting
from vae_jax import train
from vae_jax.errors import UsageError
from conftest import run_module
from vae_jax.families.vae import objective as vae_objective


@pytest.fixture
def few_digits(tmp_path):
  """300 training and 100 test digits of mnist_sample as one .npz."""
  x = data.load_idx_dir(data.SAMPLE_DIR).test.images[:400, ..., 0]
  path = tmp_path / "digits.npz"
  np.savez(path, x_train=x[:300], x_test=x[300:])
  return path


@pytest.mark.slow
def test_two_layers_train_evaluate_sample_and_reload(tiny_config, tmp_path, few_digits):
  # KL warm-up, free bits and update skipping all act on the hierarchy's terms.
  tiny_config.update(data_dir=str(few_digits), stochastic_layers=2, hidden=16, latents=4,
                     num_epochs=1, batch_size=50, eval_batch_size=100, chunks_per_epoch=1,
                     binarize="dynamic", kl_warmup_steps=3, free_bits=0.05, skip_threshold=50.0)
  workdir = tmp_path / "work"
  train.train_and_evaluate(tiny_config, workdir, verbose=False)
  row = reporting.read_metrics(workdir)[-1]
  assert len(row["test_kl_per_layer"]) == 2 and min(row["test_kl_per_layer"]) >= 0
  assert sum(row["test_kl_per_layer"]) == pytest.approx(row["test_kl"], rel=1e-5)
  assert row["test_loss"] == pytest.approx(row["test_recon"] + row["test_kl"], rel=1e-6)
  assert row["skipped_updates"] == 0
  assert 0 < row["kl_weight"] <= 1
  model = vae_jax.load(workdir)  # Rebuilt from config.json alone.
  assert isinstance(model.module, hierarchy.HierarchicalVAE)
  assert model.module.layer_latents == (4, 2) and "topdown" in model.params
  key = jax.random.key(0)
  assert vae_jax.sample(model, key, 3, temperature=0.7).shape == (3, 28, 28)
  x = data.load(model.config).test.images[:20]
  assert vae_jax.reconstruct_keeping(model, x[:5], key, 1).shape == (5, 28, 28)
  paths = vae_jax.interpolate_top(model, x[:2], x[2:4], num_steps=5)
  assert paths.shape == (2, 5, 28, 28)
  np.testing.assert_array_equal(paths, vae_jax.interpolate_top(model, x[:2], x[2:4], num_steps=5))
  result = vae_jax.evaluate(model, x, k=8, key=key, progress=False)
  assert len(result["kl_per_layer"]) == 2 and result["kl_per_dimension"] is None
  assert len(result["active_units_per_layer"]) == 2
  assert result["active_units_per_layer"][0] == result["active_units"]  # Both of z_1.
  assert result["nll"] <= -result["elbo"] + 1e-3


@pytest.mark.parametrize("fields, message", [
    ({"hidden_layers": 2}, "stochastic_layers=2 is built for hidden_layers=1 only"),
    ({"model": "conv", "prior": "mog"}, "stochastic_layers=2 is built for prior=normal only"),
    ({"prior": "vamp"}, "stochastic_layers=2 is built for prior=normal only"),
    ({"posterior": "iaf"}, "stochastic_layers=2 is built for posterior=gaussian only"),
    ({"layer_latents": (4, 2, 1)}, "layer_latents must give 2 positive sizes"),
    ({"layer_latents": (8, 2)}, "the first equal to latents=4"),
    ({"objective": "iwae", "train_samples": 3, "gradient_estimator": "dreg"},
     "gradient_estimator=dreg is not built for stochastic_layers > 1"),
])
def test_combinations_without_a_meaning_are_refused(tiny_config, fields, message):
  tiny_config.update(stochastic_layers=2, **fields)
  with pytest.raises(UsageError, match=message):
    experiment.check_config(tiny_config)


@pytest.mark.slow
def test_the_command_refuses_a_hierarchy_with_another_prior_in_one_line(tmp_path):
  result = run_module("vae_jax.train", f"--workdir={tmp_path}", "--config=vae_jax/configs/tiny.py",
                      "--config.model=conv", "--config.stochastic_layers=2", "--config.prior=mog")
  assert result.returncode == 2, result.stderr
  assert len(result.stderr.strip().splitlines()) == 1 and "prior=normal only" in result.stderr


@pytest.mark.slow
def test_a_conv_hierarchy_trains_evaluates_samples_and_reloads(tiny_config, tmp_path, few_digits):
  """model=conv, two layers of residual cells: one epoch of 300 digits, then the API
  (the cells' maths: tests/test_conv_hierarchy.py)."""
  tiny_config.update(data_dir=str(few_digits), model="conv", conv_features=(8, 16),
                     stochastic_layers=2, latents=4, num_epochs=1, batch_size=50,
                     eval_batch_size=100, chunks_per_epoch=1, binarize="dynamic")
  workdir = tmp_path / "work"
  train.train_and_evaluate(tiny_config, workdir, verbose=False)
  row = reporting.read_metrics(workdir)[-1]
  assert len(row["test_kl_per_layer"]) == 2 and min(row["test_kl_per_layer"]) >= 0
  assert sum(row["test_kl_per_layer"]) == pytest.approx(row["test_kl"], rel=1e-5)
  model = vae_jax.load(workdir)  # Rebuilt from config.json alone.
  assert isinstance(model.module.topdown, hierarchy.ConvTopDown)
  assert model.config.residual_blocks == 1 and "cell1_0" in model.params["topdown"]
  key = jax.random.key(0)
  assert vae_jax.sample(model, key, 3, temperature=0.5).shape == (3, 28, 28)
  x = data.load(model.config).test.images[:10]
  result = vae_jax.evaluate(model, x, k=4, key=key, progress=False)
  assert len(result["kl_per_layer"]) == 2 and result["nll"] <= -result["elbo"] + 1e-3


class ConvLadder(nn.Module):
  """A user's bottom-up network: two stride-2 convolutions, then one dense feature per layer."""

  layers: int

  @nn.compact
  def __call__(self, x):
    for features in (8, 16):
      x = nn.relu(nn.Conv(features, (3, 3), strides=2)(x))
    d = nn.relu(nn.Dense(32)(x.reshape(*x.shape[:-3], -1)))
    out = [d]
    for _ in range(self.layers - 1):
      d = nn.relu(nn.Dense(24)(d))
      out.append(d)
    return tuple(out)


@pytest.mark.slow
def test_your_own_networks_in_a_hierarchy(tiny_config, few_digits):
  """Any bottom-up network (L features of any width) and any decoder of z_1 plug into
  HierarchicalVAE; a run records its layers in config.json's fields."""
  sizes = (6, 3, 2)
  vae = hierarchy.HierarchicalVAE(ConvLadder(3), vae_jax.MLPDecoder(16, (28, 28, 1)), 6,
                                  (28, 28, 1), topdown=hierarchy.TopDown(16, sizes),
                                  layer_latents=sizes)
  params = jax.jit(lambda key: vae_family.init_params(vae, key))(jax.random.key(0))
  assert set(params) == {"encoder", "topdown", "decoder"}
  x = jax.random.uniform(jax.random.key(1), (4, 28, 28, 1))
  terms = jax.jit(lambda p: vae_objective.negative_elbo(vae, p, x, jax.random.key(3)))(params)
  assert terms["kl_per_layer"].shape == (4, 3) and np.all(np.isfinite(terms["loss"]))
  tiny_config.data_dir = str(few_digits)
  resolved, _ = experiment.resolve(tiny_config, data.load(data.settings(tiny_config)), vae)
  assert (resolved.model, resolved.stochastic_layers, resolved.layer_latents) == (
      "custom", 3, sizes)
  resolved.update(gradient_estimator="dreg", objective="iwae", train_samples=2)
  with pytest.raises(UsageError, match="not built for stochastic_layers > 1"):
    experiment.resolve(resolved, data.load(data.settings(tiny_config)), vae)
