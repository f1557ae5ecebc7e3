"""The family interface (`vae_jax.families.base`) with minimal families written here: one with
two parameter groups and their own optimizers, one with non-gradient state, one that trains
in two stages. None of them touches the trainer, evaluation or reporting modules."""
import dataclasses
import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import vae_jax
from vae_jax import fields
from vae_jax import optim
from vae_jax import reporting
from vae_jax import train
from vae_jax import train_state
from vae_jax.errors import UsageError
from vae_jax.families import base
from vae_jax.families import registry

IMAGE = (28, 28, 1)
CRITIC_RATE = 0.05  # The critic group's own Adam learning rate.


class Linear(nn.Module):
  """x (B, H, W, C) -> codes (B, 2) and back; a `critic` scalar beside."""

  def setup(self):
    self.encoder = nn.Dense(2, name="encoder")
    self.decoder = nn.Dense(np.prod(IMAGE), name="decoder")
    self.critic = self.param("critic", nn.initializers.ones, (3,))

  def __call__(self, x):
    z = self.encoder(x.reshape(len(x), -1))
    return z, self.decoder(z).reshape(x.shape)

  def codes(self, x):
    return self.encoder(x.reshape(len(x), -1))


@dataclasses.dataclass(frozen=True)
class Minimal(base.Family):
  """A linear autoencoder: the squared error, per example."""

  name = "minimal"
  settings_type = fields.settings_class("MinimalSettings", fields.group("model"))
  module: nn.Module = Linear()

  @classmethod
  def build(cls, settings, models, module=None, parent=None):
    return cls()

  @property
  def image_shape(self):
    return IMAGE

  def init(self, key, frozen=None):
    return {"params": self.module.init(key, jnp.zeros((1, *IMAGE)))["params"]}

  def _errors(self, variables, x):
    _, out = self.module.apply({"params": variables["params"]}, x)
    return jnp.sum((out - x) ** 2, axis=(1, 2, 3))

  def loss(self, variables, batch, key, step, hyper):
    loss = jnp.mean(self._errors(variables, batch["x"]))
    return loss, {"loss": loss}, {}

  def test_terms(self, variables, x, y, key):
    return {"loss": self._errors(variables, x)}

  def describe(self, params):
    return f"minimal ({base.parameter_count(params)} parameters)"


@dataclasses.dataclass(frozen=True)
class TwoGroups(Minimal):
  """The autoencoder and a critic, each with its own objective and optimizer: the critic
  learns the batch's mean pixel, and its loss is computed with the autoencoder stopped."""

  name = "two_groups"

  def parameter_groups(self):
    return (base.ParameterGroup("critic", ("critic",), (("learning_rate", CRITIC_RATE),)),)

  def loss(self, variables, batch, key, step, hyper):
    params = variables["params"]
    stop = jax.lax.stop_gradient
    recon = jnp.mean(self._errors({"params": {**params, "critic": stop(params["critic"])}},
                                  batch["x"]))
    critic = jnp.sum((params["critic"] - jnp.mean(batch["x"])) ** 2)
    return recon + critic, {"loss": recon, "critic_loss": critic}, {}


@dataclasses.dataclass(frozen=True)
class WithState(Minimal):
  """The autoencoder and a running mean of the batches' mean pixel: non-gradient state; and
  an array metric (dark and light pixel counts) that the record turns into a share."""

  name = "with_state"

  def init(self, key, frozen=None):
    return {**super().init(key), "running": {"mean": jnp.zeros(())}}

  def loss(self, variables, batch, key, step, hyper):
    loss, metrics, _ = super().loss(variables, batch, key, step, hyper)
    mean = 0.9 * variables["running"]["mean"] + 0.1 * jnp.mean(batch["x"])
    dark = jnp.sum(batch["x"] < 0.5)
    counts = jnp.stack([dark, batch["x"].size - dark]).astype(jnp.float32)
    return loss, {**metrics, "running_mean": mean, "counts": counts}, {"running": {"mean": mean}}

  def epoch_metrics(self, means):
    counts = means.pop("counts", None)
    shares = {} if counts is None else {"dark_share": float(counts[0] / counts.sum())}
    return {**super().epoch_metrics(means), **shares}


@dataclasses.dataclass(frozen=True)
class CodeMean(base.Family):
  """The second stage of `TwoStages`: the mean of the trained encoder's codes, learned."""

  name = "two_stages"  # The family it is a stage of (its config.json says which).
  settings_type = fields.settings_class("CodeMeanSettings", fields.group("model"))
  parent: base.Family | None = None

  @classmethod
  def build(cls, settings, models, module=None, parent=None):
    return cls(parent=parent)

  @property
  def image_shape(self):
    return IMAGE

  def init(self, key, frozen=None):
    return {"params": {"mean": jnp.array([3.0, -3.0])}, "frozen": frozen}  # Far from the codes.

  def _codes(self, variables, x):
    return self.parent.module.apply({"params": variables["frozen"]["params"]}, x,
                                    method=Linear.codes)

  def loss(self, variables, batch, key, step, hyper):
    distances = jnp.sum((self._codes(variables, batch["x"]) - variables["params"]["mean"]) ** 2,
                        axis=-1)
    loss = jnp.mean(distances)
    return loss, {"loss": loss}, {"frozen": variables["frozen"]}

  def test_terms(self, variables, x, y, key):
    return {"loss": jnp.sum((self._codes(variables, x) - variables["params"]["mean"]) ** 2, -1)}

  def describe(self, params):
    return "the codes' mean"


@dataclasses.dataclass(frozen=True)
class TwoStages(Minimal):
  """The autoencoder, then the mean of its codes as a second stage, `code_mean`."""

  name = "two_stages"
  stages = {"code_mean": CodeMean}


@pytest.fixture
def registered(monkeypatch):
  for family in (Minimal, TwoGroups, WithState, TwoStages):
    monkeypatch.setitem(registry.FAMILIES, family.name, family)


def _config(tiny_config, family: str, **fields_):
  tiny_config.family = family
  for name, value in {"num_epochs": 1, **fields_}.items():
    tiny_config[name] = value
  return tiny_config


@pytest.mark.slow
def test_each_group_is_updated_by_its_own_optimizer(key):
  """One step: Adam's first update is -rate * g / (|g| + eps), with the group's rate."""
  family = TwoGroups()
  step = train_state.Step(family, optim.OptimizerConfig(
      optimizer="adam", weight_decay=0.0, lr_schedule="constant", adam_eps=1e-8,
      warmup_steps=0, skip_threshold=0.0, grad_clip_norm=0.0), total_steps=10)
  hyper = {"learning_rate": jnp.array([1e-3])}
  state = train_state.create(step, jax.random.split(key, 1), hyper)
  one = jax.tree.map(lambda a: a[0], state)
  images = jax.random.randint(jax.random.key(1), (8, *IMAGE), 0, 256).astype(jnp.uint8)
  after, metrics = train_state.step_one(step, one, images, jax.random.key(2),
                                        {"learning_rate": jnp.float32(1e-3)})
  x = images / 255.0
  grads = jax.grad(lambda p: family.loss({"params": p}, {"x": x}, None, 0, {})[0])(one.params)
  for group, rate in (("critic", CRITIC_RATE), ("encoder", 1e-3), ("decoder", 1e-3)):
    expected = jax.tree.map(lambda p, g: p - rate * g / (jnp.abs(g) + 1e-8),
                            one.params[group], grads[group])
    for a, b in zip(jax.tree.leaves(after.params[group]), jax.tree.leaves(expected)):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
  # The critic moved toward the batch's mean pixel by its own rate, not the run's.
  assert float(metrics["critic_loss"]) > 0
  moved = np.abs(np.asarray(after.params["critic"] - one.params["critic"]))
  np.testing.assert_allclose(moved, CRITIC_RATE, rtol=1e-4)


@pytest.mark.slow
def test_a_family_of_two_groups_trains_and_records_each_metric(registered, tiny_config, tmp_path):
  vae_jax.train_and_evaluate(_config(tiny_config, "two_groups"), tmp_path, verbose=False)
  row = reporting.read_metrics(tmp_path)[-1]
  assert {"train_loss", "train_critic_loss", "test_loss"} <= row.keys()
  assert "test_kl" not in row and "test_iwae_nll" not in row  # The trainer knows no KL.
  model = vae_jax.load(tmp_path)
  assert isinstance(model.family, TwoGroups)
  # 125 steps at 0.05 bring the critic's three numbers to the data's mean pixel.
  np.testing.assert_allclose(model.params["critic"], 0.133, atol=0.05)


@pytest.mark.slow
def test_non_gradient_state_is_checkpointed_and_resumed_exactly(registered, tiny_config,
                                                                 tmp_path, monkeypatch):
  from conftest import stop_after_chunks  # pylint: disable=g-import-not-at-top
  config = _config(tiny_config, "with_state", num_epochs=2)
  vae_jax.train_and_evaluate(config, tmp_path / "whole", verbose=False)
  stop = stop_after_chunks(monkeypatch, 3)
  result = vae_jax.train_and_evaluate(config, tmp_path / "cut", verbose=False, should_stop=stop)
  assert result.stopped
  monkeypatch.undo()
  monkeypatch.setitem(registry.FAMILIES, "with_state", WithState)
  vae_jax.train_and_evaluate(config, tmp_path / "cut", verbose=False)
  whole, cut = vae_jax.load(tmp_path / "whole"), vae_jax.load(tmp_path / "cut")
  assert float(whole.state["running"]["mean"]) > 0.05  # It moved.
  np.testing.assert_array_equal(whole.state["running"]["mean"], cut.state["running"]["mean"])
  for a, b in zip(jax.tree.leaves(whole.params), jax.tree.leaves(cut.params)):
    np.testing.assert_array_equal(a, b)
  rows = [reporting.read_metrics(tmp_path / w)[-1] for w in ("whole", "cut")]
  assert rows[0]["train_running_mean"] == rows[1]["train_running_mean"]
  # An array metric, summed over the epoch (across the resume too), recorded as its share.
  assert rows[0]["train_dark_share"] == rows[1]["train_dark_share"]
  assert 0.8 < rows[0]["train_dark_share"] < 0.9 and "train_counts" not in rows[0]


@pytest.mark.slow
def test_a_second_stage_trains_on_the_frozen_first(registered, tiny_config, tmp_path):
  config = _config(tiny_config, "two_stages")
  vae_jax.train_and_evaluate(config, tmp_path, verbose=False)
  train.train_stage(tmp_path, "code_mean", {"num_epochs": 3, "learning_rate": 0.05},
                    verbose=False)
  first, second = vae_jax.load(tmp_path), vae_jax.load(tmp_path / "code_mean")
  saved = json.loads((tmp_path / "code_mean" / "config.json").read_text())
  assert saved["stage"] == "code_mean" and saved["parent_step"] == first.step
  assert saved["num_epochs"] == 3 and json.loads((tmp_path / "config.json").read_text())[
      "num_epochs"] == 1
  # The frozen first stage, kept in the second's checkpoint, is the first's, bit for bit.
  for a, b in zip(jax.tree.leaves(first.params), jax.tree.leaves(second.state["frozen"])):
    np.testing.assert_array_equal(a, b)
  # The mean it learned is the mean code of the training images.
  data = vae_jax.data.load(vae_jax.data.settings(first.config))
  x = np.asarray(data.train.images, np.float32) / 255.0
  codes = first.module.apply({"params": first.params}, x, method=Linear.codes)
  np.testing.assert_allclose(second.params["mean"], np.mean(codes, axis=0), atol=0.05)
  assert np.abs(np.mean(codes, axis=0)).max() < 1  # It came from (3, -3).


@pytest.mark.slow
def test_a_second_stage_is_refused_in_one_line_where_it_cannot_train(registered, tiny_config,
                                                                      tmp_path):
  with pytest.raises(UsageError, match="no trained model in .* train the first stage"):
    train.train_stage(tmp_path / "empty", "code_mean")
  vae_jax.train_and_evaluate(_config(tiny_config, "minimal"), tmp_path / "one", verbose=False)
  with pytest.raises(UsageError, match="family minimal has no training stage 'code_mean' "
                                       r"\(it trains in one stage\)"):
    train.train_stage(tmp_path / "one", "code_mean")
  config = _config(tiny_config, "two_stages")
  vae_jax.train_and_evaluate(config, tmp_path / "two", verbose=False)
  with pytest.raises(UsageError, match="no training stage 'prior'.*code_mean"):
    train.train_stage(tmp_path / "two", "prior")
  train.train_stage(tmp_path / "two", "code_mean", verbose=False)
  config.num_epochs = 2  # The first stage trains further: the second no longer fits it.
  vae_jax.train_and_evaluate(config, tmp_path / "two", verbose=False)
  with pytest.raises(UsageError, match="has trained further since its code_mean"):
    train.train_stage(tmp_path / "two", "code_mean")
