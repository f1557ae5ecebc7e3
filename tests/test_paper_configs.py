"""The configs that follow the papers (iwae_paper, vampprior_paper) build the papers'
networks, and the MLP's depth and activations compute what they say."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vae_jax import configs
from vae_jax import schema
from vae_jax import networks
from vae_jax.families import vae as vae_family


def _dense(params, x):
  return x @ np.asarray(params["kernel"], np.float64) + np.asarray(params["bias"], np.float64)


@pytest.mark.parametrize("activation", ["relu", "tanh", "gated"])
@pytest.mark.slow
def test_the_mlp_encoders_layers_compute_their_activation(activation):
  encoder = networks.MLPEncoder(6, 2, layers=2, activation=activation)
  x = jax.random.uniform(jax.random.key(0), (3, 2, 2, 1))
  params = encoder.init(jax.random.key(1), x)["params"]
  h = np.asarray(x, np.float64).reshape(3, 4)
  for name in ("hidden", "hidden_2"):
    a = _dense(params[name], h)
    if activation == "gated":  # GatedDense: (W h + b) * sigmoid(V h + c), side by side.
      h = a[:, :6] / (1 + np.exp(-a[:, 6:]))
    else:
      h = np.maximum(a, 0) if activation == "relu" else np.tanh(a)
  stats = _dense(params["stats"], h)
  mean, logvar = encoder.apply({"params": params}, x)
  np.testing.assert_allclose(mean, stats[:, :2], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(logvar, stats[:, 2:], rtol=1e-5, atol=1e-6)


def _shapes(tree):
  return jax.tree.map(lambda a: tuple(a.shape), tree)


@pytest.mark.slow
def test_the_iwae_papers_config_is_their_one_layer_architecture():
  """784-200-200-50 tanh, symmetric decoder (Burda et al. 2015, appendix C)."""
  config = configs.load("iwae_paper")
  schema.check(config)
  model = vae_family.from_config(config, (28, 28, 1))
  params = vae_family.init_params(model, jax.random.key(0))
  assert _shapes(params["encoder"]) == {
      "hidden": {"kernel": (784, 200), "bias": (200,)},
      "hidden_2": {"kernel": (200, 200), "bias": (200,)},
      "stats": {"kernel": (200, 100), "bias": (100,)}}
  assert _shapes(params["decoder"]) == {
      "hidden": {"kernel": (50, 200), "bias": (200,)},
      "hidden_2": {"kernel": (200, 200), "bias": (200,)},
      "out": {"kernel": (200, 784), "bias": (784,)}}
  assert (config.objective, config.train_samples, config.batch_size, config.num_epochs,
          config.lr_schedule, config.adam_eps, config.eval_iwae_k) == (
              "iwae", 50, 20, 3280, "burda", 1e-4, 5000)
  # tanh: the hidden units are bounded.
  h = model.apply({"params": params}, jnp.ones((1, 28, 28, 1)) * 50, method=model.encode)
  assert np.all(np.isfinite(h[0]))


@pytest.mark.slow
def test_the_vampprior_papers_config_is_their_gated_architecture():
  """Two GatedDense layers of 300 units, 40 latents, 500 pseudo-inputs (Tomczak &
  Welling 2018, section 4)."""
  config = configs.load("vampprior_paper")
  schema.check(config)
  model = vae_family.from_config(config, (28, 28, 1))
  params = vae_family.init_params(model, jax.random.key(0))
  shapes = _shapes(params)
  assert shapes["encoder"]["hidden"]["kernel"] == (784, 600)  # Value and gate side by side.
  assert shapes["encoder"]["hidden_2"]["kernel"] == (300, 600)
  assert shapes["encoder"]["stats"]["kernel"] == (300, 80)
  assert shapes["decoder"]["hidden"]["kernel"] == (40, 600)
  pseudo = [s for s in jax.tree.leaves(shapes["prior"], is_leaf=lambda s: isinstance(s, tuple))]
  assert any(s[0] == 500 and np.prod(s[1:]) == 784 for s in pseudo), shapes["prior"]
  assert (config.prior, config.batch_size, config.learning_rate, config.kl_warmup_steps) == (
      "vamp", 100, 5e-4, 60_000)
