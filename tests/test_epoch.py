"""The epoch engine (vae_jax/epoch.py): data orders, stacked models, chunking."""
import pytest
import jax
import jax.numpy as jnp
import numpy as np

from conftest import vae_training
from vae_jax import epoch
from vae_jax import parallel
from vae_jax import stacked
from vae_jax.configs import tiny
from vae_jax.families import vae as vae_family


def test_an_epoch_draws_each_real_example_at_most_once_and_never_the_padding():
  """10 real examples padded to 12 (the zero padding for the devices): batches of 4
  hold 8 distinct real ones, in another order for another key."""
  images = np.arange(1, 13, dtype=np.uint8).reshape(12, 1, 1, 1)
  images[10:] = 0  # Padding.
  mesh = parallel.make_mesh()
  sharding = parallel.sharded(mesh, 1, 5)
  draw = lambda key: np.asarray(epoch.shuffle_batches(
      jnp.asarray(images), jax.random.key(key)[None], num_examples=10, batch_size=4,
      sharding=sharding)).ravel()
  first, second = draw(0), draw(1)
  for drawn in (first, second):
    assert len(drawn) == 8 and len(set(drawn)) == 8 and set(drawn) <= set(range(1, 11))
  assert list(first) != list(second)


def test_independent_orders_give_each_model_its_own_permutation():
  images = np.arange(1, 11, dtype=np.uint8).reshape(10, 1, 1, 1)
  mesh = parallel.make_mesh()
  keys = jnp.stack([jax.random.key(0), jax.random.key(1)])
  shuffle = lambda keys, ndim: np.asarray(epoch.shuffle_batches(
      jnp.asarray(images), keys, num_examples=10, batch_size=4,
      sharding=parallel.sharded(mesh, ndim - 4, ndim)))
  both = shuffle(keys, 6)
  assert both.shape == (2, 2, 4, 1, 1, 1)
  for i in range(2):
    np.testing.assert_array_equal(both[i], shuffle(keys[i:i + 1], 5))
  assert not np.array_equal(both[0], both[1])


@pytest.mark.slow
def test_each_stacked_model_runs_exactly_its_own_single_model_loop():
  """Two models with their own seeds, data orders and step keys, in one program:
  model i ends as it would alone (up to vmap's batched matrix products)."""
  config = tiny.get_config()
  config.hidden, config.latents = 16, 3
  model = vae_family.from_config(config, (4, 4, 1))
  state, step, settings = vae_training(config, model, 2)
  rng = np.random.default_rng(0)
  images = jnp.asarray(rng.integers(0, 256, (2, 3, 8, 4, 4, 1)), jnp.uint8)  # (N, S, B, ...)
  step_keys = jnp.stack([jax.random.key(10), jax.random.key(11)])
  chunk = jax.jit(epoch.train_chunk, static_argnums=(0,), static_argnames="num_steps")
  stack, metrics = chunk(step, state, images, step_keys, settings, 0, num_steps=3)
  assert metrics["loss"].shape == (2, 3)
  for i in range(2):
    alone, alone_metrics = chunk(step, stacked.stack(stacked.index(state, i)),
                                 images[i], step_keys[i:i + 1], stacked.stack(
                                     stacked.index(settings, i)), 0, num_steps=3)
    np.testing.assert_allclose(metrics["loss"][i], alone_metrics["loss"][0], rtol=1e-5)
    for x, y in zip(jax.tree.leaves(stacked.index(stack.params, i)), jax.tree.leaves(alone.params)):
      assert np.linalg.norm(x - y[0]) <= 1e-4 * np.linalg.norm(x)
