"""The prior over code grids against enumeration: probabilities that sum to 1 over every code
sequence of tiny grids, causality at every position, and draws that follow the model's
distribution (at temperature 1 and below) and its greedy path as the temperature goes to 0."""
import functools
import itertools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from vae_jax.families.discrete.code_prior import CodePrior


class Model(NamedTuple):
  """A small prior, its parameters, and its methods jitted once per (K, grid) for every test."""
  prior: CodePrior
  variables: dict
  logits: Callable
  log_prob: Callable
  sample: Callable  # (variables, key, num, temperature), num static


@functools.cache
def _model(num_codes: int, grid: tuple[int, int], seed: int = 0) -> Model:
  """Random parameters drawn by numpy into the prior's shapes (compiling `init` costs seconds):
  kernels N(0, 1 / fan_in), embeddings N(0, 1), so that the logits vary by about 1 and the
  distribution is far from uniform, and far from one sequence (what the tests below need to be
  able to fail)."""
  prior = CodePrior(num_codes, grid, features=16, layers=2, heads=2)
  shapes = jax.eval_shape(prior.init, jax.random.key(0), jnp.zeros((1, *grid), jnp.int32))
  rng = np.random.default_rng(seed)

  def draw(path, leaf):
    name, noise = path[-1].key, rng.normal(size=leaf.shape).astype(np.float32)
    if name in ("scale", "bias"):
      return (name == "scale") + 0.1 * noise
    return noise / np.sqrt(leaf.shape[0]) if name == "kernel" else noise

  method = lambda m: jax.jit(functools.partial(prior.apply, method=m))
  return Model(prior, jax.tree_util.tree_map_with_path(draw, shapes), jax.jit(prior.apply),
               method(CodePrior.log_prob),
               jax.jit(functools.partial(prior.apply, method=CodePrior.sample), static_argnums=2))


def _every_grid(num_codes: int, grid: tuple[int, int]) -> np.ndarray:
  """All K^N code grids `(K^N, H, W)`, the last raster position varying fastest."""
  return np.array(list(itertools.product(range(num_codes), repeat=grid[0] * grid[1])),
                  np.int32).reshape(-1, *grid)


@pytest.mark.parametrize("num_codes, grid", [(3, (2, 2)), (4, (1, 3)), (2, (2, 3))])
def test_probabilities_sum_to_one_over_every_code_grid(num_codes, grid):
  model = _model(num_codes, grid)
  codes = _every_grid(num_codes, grid)
  log_p = model.log_prob(model.variables, codes)
  assert log_p.shape == (num_codes ** (grid[0] * grid[1]),)
  p = np.exp(np.asarray(log_p, np.float64))
  np.testing.assert_allclose(p.sum(), 1.0, rtol=1e-5)
  assert p.max() > 10 * p.min()  # Far from uniform: a model that peeked would not sum to 1.
  if grid == (2, 2):  # Any leading axes.
    again = model.log_prob(model.variables, codes.reshape(3, 27, *grid))
    np.testing.assert_allclose(again, np.asarray(log_p).reshape(3, 27), rtol=1e-6)


def test_logits_at_each_position_depend_only_on_earlier_codes():
  model = _model(5, (3, 4))
  codes = np.random.default_rng(0).integers(0, 5, (2, 3, 4)).astype(np.int32)
  before = np.asarray(model.logits(model.variables, codes))
  assert before.shape == (2, 3, 4, 5)
  before = before.reshape(2, 12, 5)
  for q in range(12):
    changed = codes.reshape(2, 12).copy()
    changed[:, q] = (changed[:, q] + 1) % 5
    after = np.asarray(model.logits(model.variables, changed.reshape(2, 3, 4))).reshape(2, 12, 5)
    # Positions up to q see only codes before q: unchanged. Masked attention weighs the
    # changed code by exactly 0, so bit for bit.
    np.testing.assert_array_equal(after[:, :q + 1], before[:, :q + 1], err_msg=f"position {q}")
    if q < 11:
      assert not np.allclose(after[:, q + 1], before[:, q + 1])  # The next one does see it.


def _chi_square_p_value(counts: np.ndarray, p: np.ndarray) -> float:
  """Pearson's test of counts against probabilities p, the outcomes expected fewer than 5
  times pooled into one bin (where the chi-square law holds)."""
  expected = p * counts.sum()
  small = expected < 5
  observed = np.append(counts[~small], counts[small].sum())
  expected = np.append(expected[~small], expected[small].sum())
  return stats.chisquare(observed, expected).pvalue


@pytest.mark.parametrize("temperature", [1.0, 0.5])
@pytest.mark.slow
def test_draws_follow_the_distribution_the_model_gives(temperature):
  num_codes, grid, num = 3, (2, 2), 20_000
  model = _model(num_codes, grid)
  draws = np.asarray(model.sample(model.variables, jax.random.key(2), num, temperature))
  assert draws.shape == (num, *grid) and draws.dtype == np.int32
  # Exact: the product of each position's softmax(logits / T) along the grid, by enumeration.
  codes = _every_grid(num_codes, grid)
  logits = np.asarray(model.logits(model.variables, codes), np.float64) / temperature
  log_conditional = logits - np.logaddexp.reduce(logits, axis=-1, keepdims=True)
  picked = np.take_along_axis(log_conditional, codes[..., None], -1)
  p = np.exp(picked.reshape(len(codes), -1).sum(-1))
  np.testing.assert_allclose(p.sum(), 1.0, rtol=1e-6)
  index = (draws.reshape(num, -1) * num_codes ** np.arange(3, -1, -1)).sum(-1)
  counts = np.bincount(index, minlength=len(codes))
  assert _chi_square_p_value(counts, p) > 1e-3
  # Total variation from the exact law: within twice what sampling noise alone gives on
  # average, 1/2 sum_x E|f_x - p_x| ~ 1/2 sum_x sqrt(2 p_x (1 - p_x) / (pi num)).
  noise = 0.5 * np.sum(np.sqrt(2 * p * (1 - p) / (np.pi * num)))
  assert 0.5 * np.abs(counts / num - p).sum() < 2 * noise


@pytest.mark.slow
def test_low_temperature_follows_the_greedy_path_and_draws_repeat_for_a_key():
  model = _model(5, (3, 4))
  greedy = np.zeros((2, 12), np.int32)  # The most probable code at each position in turn.
  for p in range(12):
    logits = np.asarray(model.logits(model.variables, greedy.reshape(2, 3, 4)))
    greedy[:, p] = np.argmax(logits.reshape(2, 12, -1)[:, p], -1)
  greedy = greedy[0].reshape(3, 4)
  sample = functools.partial(model.sample, model.variables)
  cold = np.asarray(sample(jax.random.key(4), 8, 1e-4))
  np.testing.assert_array_equal(cold, np.broadcast_to(greedy, cold.shape))
  warm = np.asarray(sample(jax.random.key(4), 8, 1.0))
  assert not (warm == greedy).all((1, 2)).any()
  np.testing.assert_array_equal(sample(jax.random.key(4), 8, 1.0), warm)
  assert not np.array_equal(sample(jax.random.key(5), 8, 1.0), warm)
  assert warm.min() >= 0 and warm.max() < 5
  with pytest.raises(ValueError, match="temperature"):
    model.prior.apply(model.variables, jax.random.key(4), 8, 0.0, method=CodePrior.sample)
