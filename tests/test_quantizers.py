"""The discrete families' quantisers against hand computations and numpy: VQ's nearest code,
straight-through gradient, losses, EMA update and restarts; FSQ's levels and indices; the
codebook metrics."""
import functools
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vae_jax.families.discrete import quantizers as q

BETA = 0.25


def _vq_variables(vq: q.VectorQuantizer, embedding) -> dict:
  """The variables of `vq` holding the codebook `embedding` (K, D): fresh EMA statistics, or
  the loss-trained codebook's parameter."""
  embedding = jnp.asarray(embedding, jnp.float32)
  if vq.ema:
    return {q.COLLECTION: q.init_ema_stats(embedding)}
  return {"params": {"embedding": embedding}}


# A codebook of 3 codes in 2-D and 4 encoder outputs (2 examples x 2 positions) whose
# nearest codes are 0, 2, 2 and 1.
CODEBOOK = np.array([[0.0, 0.0], [1.0, 1.0], [-1.0, 2.0]], np.float32)
Z_E = np.array([[[0.1, -0.2], [-0.8, 1.5]], [[-1.2, 2.5], [0.7, 0.9]]], np.float32)
NEAREST = np.array([[0, 2], [2, 1]])


@pytest.mark.parametrize("ema", [True, False])
def test_straight_through_gradient_and_losses_match_a_hand_computation(ema):
  vq = q.VectorQuantizer(num_codes=3, commitment_weight=BETA, ema=ema)
  variables = _vq_variables(vq, CODEBOOK)
  w = np.arange(8, dtype=np.float32).reshape(2, 2, 2) - 3.5

  def objective(z_e, params):
    out = vq.apply({**variables, "params": params}, z_e)
    return jnp.sum(w * out.z_q) + jnp.sum(out.loss), out

  gradient = jax.jit(jax.value_and_grad(objective, (0, 1), has_aux=True))
  (value, out), (grad_z, grad_params) = gradient(Z_E, variables.get("params", {}))
  e_k = CODEBOOK[NEAREST]
  error = np.sum((Z_E - e_k) ** 2, axis=-1)
  np.testing.assert_array_equal(out.indices, NEAREST)
  np.testing.assert_allclose(out.z_q, e_k, atol=1e-7)  # Forward: the codes.
  np.testing.assert_allclose(out.commitment, error, rtol=1e-6)
  expected_loss = (BETA if ema else 1 + BETA) * error
  np.testing.assert_allclose(out.loss, expected_loss, rtol=1e-6)
  np.testing.assert_allclose(value, np.sum(w * e_k) + expected_loss.sum(), rtol=1e-6)
  # d/dz_e [sum(w z_q) + beta ||z_e - sg(e_k)||^2]: w straight through, plus the commitment's pull.
  np.testing.assert_allclose(grad_z, w + 2 * BETA * (Z_E - e_k), rtol=1e-6, atol=1e-6)
  if not ema:
    # d/de_j of the codebook loss sum_i ||sg(z_i) - e_j||^2 over the positions i at code j; z_q
    # passes nothing to the codebook.
    expected = np.zeros_like(CODEBOOK)
    for z, k in zip(Z_E.reshape(-1, 2), NEAREST.reshape(-1)):
      expected[k] += 2 * (CODEBOOK[k] - z)
    np.testing.assert_allclose(grad_params["embedding"], expected, rtol=1e-6, atol=1e-6)


def _brute_force_nearest(z: np.ndarray, embedding: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """numpy: every squared distance in float64, and the argmin (the first on ties)."""
  d = ((z[:, None, :].astype(np.float64) - embedding[None].astype(np.float64)) ** 2).sum(-1)
  return d, d.argmin(-1)


def test_nearest_code_by_matrix_product_equals_brute_force_ties_and_all():
  # Small integers: every product and sum is exact in float32, so equidistant codes tie
  # exactly; duplicated codes tie at every point.
  rng = np.random.default_rng(0)
  embedding = rng.integers(-2, 3, (12, 3)).astype(np.float32)
  embedding[7] = embedding[2]
  embedding[9] = embedding[4]
  z = rng.integers(-3, 4, (500, 3)).astype(np.float32)
  distances, expected = _brute_force_nearest(z, embedding)
  ties = (distances == distances.min(-1, keepdims=True)).sum(-1) > 1
  assert ties.sum() > 100  # The case worth testing is common here.
  nearest = jax.jit(q.nearest_codes)
  np.testing.assert_array_equal(nearest(z, embedding), expected)
  np.testing.assert_array_equal(nearest(z.reshape(5, 10, 10, 3), embedding),
                                expected.reshape(5, 10, 10))

  # Real-valued: equal wherever float32 rounding cannot swap the two nearest codes.
  embedding = rng.normal(size=(512, 64)).astype(np.float32)
  z = rng.normal(size=(2000, 64)).astype(np.float32)
  distances, expected = _brute_force_nearest(z, embedding)
  got = np.asarray(nearest(z, embedding))
  two = np.sort(distances, -1)[:, :2]
  clear = two[:, 1] - two[:, 0] > 1e-3
  assert clear.mean() > 0.99
  np.testing.assert_array_equal(got[clear], expected[clear])
  np.testing.assert_allclose(distances[np.arange(len(z)), got], two[:, 0], rtol=1e-5)


def _numpy_ema(stats, z, indices, decay, epsilon):
  """The paper's appendix, in float64."""
  num_codes = stats["cluster_size"].shape[0]
  one_hot = np.eye(num_codes)[indices]
  size = decay * stats["cluster_size"] + (1 - decay) * one_hot.sum(0)
  total = decay * stats["embedding_sum"] + (1 - decay) * one_hot.T @ z
  n = size.sum()
  smoothed = (size + epsilon) / (n + num_codes * epsilon) * n
  return {"cluster_size": size, "embedding_sum": total, "embedding": total / smoothed[:, None]}


# The VQ of the training-step tests, one jitted step shared (one compilation): 16 codes in 4-D,
# batches of 8 examples x 3 x 3 positions.
VQ = q.VectorQuantizer(num_codes=16)
TRAIN = jax.jit(functools.partial(VQ.apply, train=True, mutable=[q.COLLECTION]))
Z_SHAPE = (8, 3, 3, 4)


def _batch(seed: int, scale: float = 1.0, shift: float = 0.0) -> np.ndarray:
  return (np.random.default_rng(seed).normal(size=Z_SHAPE) * scale + shift).astype(np.float32)


def _stats(seed: int) -> dict:
  """EMA statistics in mid-training (random), in which code 5 was never used (N = m = 0) and
  lies far from any batch."""
  rng = np.random.default_rng(seed)
  stats = {"embedding": rng.normal(size=(16, 4)), "cluster_size": rng.uniform(0, 3, 16),
           "embedding_sum": rng.normal(size=(16, 4))}
  stats = {k: v.astype(np.float32) for k, v in stats.items()}
  stats["cluster_size"][5], stats["embedding_sum"][5], stats["embedding"][5] = 0, 0, 100
  return {**stats, "restarts": np.int32(4)}


def test_one_ema_update_matches_numpy():
  stats, z = _stats(1), _batch(2)
  out, state = TRAIN({q.COLLECTION: stats}, z)
  indices = np.asarray(out.indices).reshape(-1)
  _, expected_indices = _brute_force_nearest(z.reshape(-1, 4), stats["embedding"])
  np.testing.assert_array_equal(indices, expected_indices)
  np64 = {k: np.asarray(v, np.float64) for k, v in stats.items()}
  expected = _numpy_ema(np64, z.reshape(-1, 4).astype(np.float64), indices, 0.99, 1e-5)
  new = state[q.COLLECTION]
  for name, value in expected.items():
    # m_k is O(1): float32 rounds it at about 1e-7 absolute.
    np.testing.assert_allclose(new[name], value, rtol=1e-5, atol=1e-6, err_msg=name)
  assert int(new["restarts"]) == 4 and int(out.restarted) == 0
  # The unused code's vector drops to 0 (m = 0): the paper's formula, which restarts fix.
  assert 5 not in indices
  np.testing.assert_array_equal(new["embedding"][5], 0.0)
  # The pure function gives the module's numbers.
  pure = q.ema_update(stats, z.reshape(-1, 4), indices)
  for name in ("cluster_size", "embedding_sum", "embedding"):
    np.testing.assert_allclose(pure[name], new[name], rtol=1e-6, atol=1e-7)


def test_both_ways_of_summing_the_clusters_match_numpy():
  """The scatter-add (CPU) and the one-hot product (other platforms): one tested here by
  running, the other by calling it."""
  rng = np.random.default_rng(3)
  z, indices = rng.normal(size=(300, 4)).astype(np.float32), rng.integers(0, 16, 300)
  counts = np.bincount(indices, minlength=16)
  sums = np.stack([z[indices == k].astype(np.float64).sum(0) for k in range(16)])
  # pylint: disable-next=protected-access
  for way in (q.cluster_sums, q._sums_by_scatter, q._sums_by_matmul):
    got_counts, got_sums = jax.jit(way, static_argnums=2)(z, indices.astype(np.int32), 16)
    np.testing.assert_array_equal(got_counts, counts)
    np.testing.assert_allclose(got_sums, sums, rtol=1e-5, atol=1e-5)


def test_evaluation_changes_nothing_and_training_needs_the_mutable_collection(key):
  z = _batch(3)
  variables = jax.jit(VQ.init)(key, z)
  assert set(variables) == {q.COLLECTION}  # No gradient parameters with the EMA codebook.
  np.testing.assert_array_equal(variables[q.COLLECTION]["cluster_size"], 0.0)
  out, state = jax.jit(functools.partial(VQ.apply, mutable=[q.COLLECTION]))(variables, z)
  jax.tree.map(np.testing.assert_array_equal, state, variables)
  assert int(out.restarted) == 0
  with pytest.raises(ValueError, match="mutable"):
    jax.eval_shape(functools.partial(VQ.apply, train=True), variables, z)
  with pytest.raises(ValueError, match="train=True"):
    jax.eval_shape(functools.partial(VQ.apply, restart_key=key), variables, z)
  loss_trained = q.VectorQuantizer(num_codes=16, ema=False)
  params = {"params": {"embedding": np.zeros((16, 4), np.float32)}}
  with pytest.raises(ValueError, match="EMA"):
    jax.eval_shape(functools.partial(loss_trained.apply, train=True, restart_key=key), params, z)


def _restart_case():
  """EMA statistics in which codes 1, 3 and 5 are dead: counts below 0.03 x their mean 2.0."""
  sizes = np.array([6.999, 0.001, 3.0, 0.0, 3.5, 0.05, 0.45], np.float32)  # mean 2.0
  embedding = np.arange(21, dtype=np.float32).reshape(7, 3)
  return {"embedding": embedding, "cluster_size": sizes,
          "embedding_sum": embedding * sizes[:, None] * 1.01, "restarts": np.int32(2)}


@pytest.mark.slow
def test_dead_codes_are_restarted_from_the_batch_and_the_rest_untouched(key):
  stats = _restart_case()
  dead = np.array([False, True, False, True, False, True, False])
  np.testing.assert_array_equal(q.dead_codes(stats["cluster_size"], 0.03), dead)
  z = 100 + np.arange(30, dtype=np.float32).reshape(10, 3)  # 10 distinct positions
  restart = jax.jit(q.restart_dead_codes, static_argnames=("threshold", "max_restarts"))
  new, count = restart(stats, z, key)
  assert int(count) == 3 and int(new["restarts"]) == 5
  for name in ("embedding", "cluster_size", "embedding_sum"):  # Used codes: bit for bit.
    np.testing.assert_array_equal(new[name][~dead], stats[name][~dead])
  rows = np.asarray(new["embedding"])[dead]
  matches = [np.flatnonzero((z == row).all(-1)) for row in rows]
  assert all(len(m) == 1 for m in matches)  # Each is a batch position...
  assert len({int(m[0]) for m in matches}) == 3  # ... a distinct one.
  average = np.mean(stats["cluster_size"], dtype=np.float64)
  np.testing.assert_allclose(new["cluster_size"][dead], average, rtol=1e-6)  # The average count.
  np.testing.assert_allclose(new["embedding_sum"][dead], rows * average, rtol=1e-6)
  assert not np.asarray(q.dead_codes(new["cluster_size"], 0.03)).any()
  # Deterministic for a key; another key draws other positions.
  jax.tree.map(np.testing.assert_array_equal, restart(stats, z, key), (new, count))
  other, _ = restart(stats, z, jax.random.fold_in(key, 1))
  assert not np.array_equal(other["embedding"], new["embedding"])
  # Weighted: never a position of weight 0, so at most as many restarts as positive weights.
  weights = np.zeros(10, np.float32)
  weights[[2, 7]] = [1.0, 3.0]
  new, count = restart(stats, z, key, weights=weights)
  assert int(count) == 2
  np.testing.assert_array_equal(np.sort(np.asarray(new["embedding"])[[1, 3]], 0), z[[2, 7]])
  np.testing.assert_array_equal(new["embedding"][5], stats["embedding"][5])
  # In proportion to the weights: position 7 first three times in four, over many keys.
  first = jax.vmap(lambda k: restart(stats, z, k, weights=weights)[0]["embedding"][1])(
      jax.random.split(key, 2000))
  share = np.mean((np.asarray(first) == z[7]).all(-1))
  assert abs(share - 0.75) < 0.04, share  # 4 standard errors
  # At most max_restarts, lowest index first; never more than the batch has positions.
  for cap, batch, changed in [(2, z, [1, 3]), (None, z[:2], [1, 3])]:
    new, count = restart(stats, batch, key, max_restarts=cap)
    assert int(count) == len(changed)
    np.testing.assert_array_equal(
        np.flatnonzero((np.asarray(new["embedding"]) != stats["embedding"]).any(-1)), changed)


def test_first_training_step_fills_the_codebook_from_the_batch():
  z = _batch(4, scale=5.0, shift=20.0)  # Far from the initial codebook.
  variables = jax.jit(VQ.init)(jax.random.key(1), z)
  out, state = TRAIN(variables, z, restart_key=jax.random.key(2))
  used = np.unique(np.asarray(out.indices))
  assert len(used) < 4  # The random codebook: one or a few codes take every position.
  assert int(out.restarted) == 16 - len(used)
  assert int(state[q.COLLECTION]["restarts"]) == 16 - len(used)
  unused = np.setdiff1d(np.arange(16), used)
  flat = z.reshape(-1, 4)
  for row in np.asarray(state[q.COLLECTION]["embedding"])[unused]:
    assert (flat == row).all(-1).any()
  out, _ = TRAIN(state, z, restart_key=jax.random.key(3))
  assert len(np.unique(np.asarray(out.indices))) > 12  # Now most codes take some positions.


def test_ema_state_is_deterministic_and_per_model_under_vmap():
  """Two models' codebooks stacked on a leading axis, as the trainer holds them: vmapped steps
  equal each model's own step, bit for bit, and a rerun repeats them."""
  z = np.stack([_batch(5), _batch(6)])
  keys = jax.random.split(jax.random.key(7), 2)
  states = [{q.COLLECTION: _stats(seed)} for seed in (8, 9)]
  stacked = jax.tree.map(lambda *a: np.stack(a), *states)
  step = jax.jit(jax.vmap(lambda v, z, k: TRAIN(v, z, restart_key=k)))
  (outs, new) = step(stacked, z, keys)
  for m in range(2):
    out, own = TRAIN(states[m], z[m], restart_key=keys[m])
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(a[m], b), (outs, new), (out, own))
  assert int(np.sum(outs.restarted)) > 0  # Code 5 at least: restarts are part of what matches.
  jax.tree.map(np.testing.assert_array_equal, step(stacked, z, keys), (outs, new))


# ----------------------------------------------------------------------------
# FSQ.

LEVEL_SETS = [(3, 4, 5), (8, 5, 5, 5), (7, 6, 2)]


def _grid(levels):
  """Each channel's values: (k - floor(L/2)) / floor(L/2), k = 0 .. L - 1, in float32."""
  return [(np.arange(L) - L // 2).astype(np.float32) / np.float32(L // 2) for L in levels]


def _shift(levels):
  levels = np.asarray(levels)
  h = (levels - 1) * (1 - 1e-3) / 2
  offset = np.where(levels % 2 == 0, 0.5, 0.0)
  return h, offset, np.tan(offset / h)


@pytest.mark.parametrize("levels", LEVEL_SETS)
def test_fsq_rounds_each_channel_to_exactly_its_levels(levels):
  z = np.linspace(-30, 30, 200_001, dtype=np.float32)
  codes = np.asarray(jax.jit(q.fsq_quantize, static_argnums=1)(
      np.repeat(z[:, None], len(levels), 1), levels))
  for i, values in enumerate(_grid(levels)):
    np.testing.assert_array_equal(np.unique(codes[:, i]), values.astype(np.float32))
  assert codes.min() == -1.0 and codes.max() <= 1.0


@pytest.mark.parametrize("levels", LEVEL_SETS)
def test_fsq_index_round_trip_for_every_code(levels):
  size = math.prod(levels)
  fsq = q.FSQ(levels)
  codes = jax.jit(functools.partial(fsq.apply, {}, method=q.FSQ.codebook))()
  assert codes.shape == (size, len(levels))
  # Every code is a distinct point of the grid, code k in row k.
  expected = np.array(list(itertools.product(*reversed(_grid(levels)))))[:, ::-1]
  np.testing.assert_allclose(codes, expected, atol=1e-7)
  indices = jax.jit(q.fsq_codes_to_indices, static_argnums=1)(codes, levels)
  assert indices.dtype == jnp.int32
  np.testing.assert_array_equal(indices, np.arange(size))
  # Every code is reached: the z whose bound is the middle of the part of the code's
  # rounding interval [level - 1/2, level + 1/2] inside the bound's range quantises to it.
  h, offset, shift = _shift(levels)
  level = np.asarray(codes, np.float64) * (np.array(levels) // 2)
  middle = (np.maximum(level - 0.5, -h - offset) + np.minimum(level + 0.5, h - offset)) / 2
  z = np.arctanh((middle + offset) / h) - shift
  codes_again, indices_again = jax.jit(functools.partial(fsq.apply, {}))(z.astype(np.float32))
  np.testing.assert_array_equal(codes_again, codes)
  np.testing.assert_array_equal(indices_again, np.arange(size))


@pytest.mark.parametrize("levels", LEVEL_SETS)
def test_fsq_bound_maps_the_reals_into_its_interval(levels):
  z = np.concatenate([np.linspace(-1e4, 1e4, 10_001), [-np.inf, np.inf, 0.0]]).astype(np.float32)
  bounded = np.asarray(q.fsq_bound(np.repeat(z[:, None], len(levels), 1), levels))
  for i, L in enumerate(levels):
    h, offset = (L - 1) * (1 - 1e-3) / 2, 0.5 * (L % 2 == 0)
    assert bounded[:, i].min() >= -h - offset - 1e-6 and bounded[:, i].max() <= h - offset + 1e-6
    rounded = np.round(bounded[:, i])
    assert rounded.min() == -(L // 2) and rounded.max() == (L - 1) // 2
  # bound(0) is about 0 (tan for artanh in the shift; L = 2 has no level at 0), and 0
  # rounds to the middle level.
  np.testing.assert_array_equal(np.round(bounded[-1]), 0.0)
  if min(levels) > 2:
    np.testing.assert_allclose(bounded[-1], 0.0, atol=5e-4)


def test_fsq_straight_through_gradient(key):
  levels = (8, 5, 3)
  z = jax.random.normal(key, (10, 3)) * 2
  w = jax.random.normal(jax.random.fold_in(key, 1), (10, 3))
  grad_round = jax.grad(lambda x: jnp.sum(w * q.round_ste(x)))(z * 3)
  np.testing.assert_array_equal(grad_round, w)  # Identity through the rounding.
  grad = jax.jit(jax.grad(lambda z: jnp.sum(w * q.fsq_quantize(z, levels))))(z)
  h, _, shift = _shift(levels)
  expected = w * h * (1 - np.tanh(np.asarray(z, np.float64) + shift) ** 2) / (np.array(levels) // 2)
  # tanh' = 1 - tanh^2 loses digits where tanh is near 1: float32 leaves about 1e-6.
  np.testing.assert_allclose(grad, expected, rtol=1e-5, atol=2e-6)


def test_fsq_refuses_bad_levels():
  for levels in [(), (1, 4), (4, 0)]:
    with pytest.raises(ValueError, match="levels"):
      q.fsq_quantize(jnp.zeros((2, len(levels))), levels)


# ----------------------------------------------------------------------------
# Codebook metrics.


def test_perplexity_and_codes_in_use_on_hand_computed_usage():
  perplexity = jax.jit(q.perplexity)
  uniform = np.array([7, 0, 7, 7, 0, 7], np.int32)  # Uniform over 4 of 6 codes.
  np.testing.assert_allclose(perplexity(uniform), 4.0, rtol=1e-6)
  assert int(q.codes_in_use(uniform)) == 4
  np.testing.assert_allclose(perplexity(np.array([0, 9, 0, 0], np.int32)), 1.0, rtol=1e-6)
  # p = (1/2, 1/4, 1/4): H = 1.5 log 2 nats, exp(H) = 2^1.5.
  np.testing.assert_allclose(perplexity(np.array([2, 1, 1, 0], np.int32)), 2 ** 1.5, rtol=1e-6)


def test_code_counts_add_over_batches():
  indices = np.random.default_rng(0).integers(0, 50, (3, 16, 7, 7)).astype(np.int32)  # 3 batches
  counts = jax.jit(q.code_counts, static_argnums=1)
  np.testing.assert_array_equal(counts(indices, 64), np.bincount(indices.ravel(), minlength=64))
  per_batch = sum(np.asarray(counts(b, 64)) for b in indices)
  np.testing.assert_array_equal(per_batch, counts(indices, 64))
  assert int(q.codes_in_use(per_batch)) == len(np.unique(indices))
