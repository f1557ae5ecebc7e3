"""Quantisers for discrete latents: VQ (van den Oord et al. 2017) and FSQ (Mentzer et al. 2023).

Vector quantisation (`VectorQuantizer`). The encoder gives z_e `(..., D)` at
each grid position; each is replaced by its nearest of K code vectors e_k,

    k = argmin_j ||z_e - e_j||^2,   z_q = z_e + sg(e_k - z_e),

so the forward pass sees e_k and the gradient passes straight through to z_e
(sg: stop_gradient). The quantiser's losses, per position, summed over D:

    commitment = ||z_e - sg(e_k)||^2   (trains the encoder; weight beta = 0.25)
    codebook   = ||sg(z_e) - e_k||^2   (trains the codebook; loss-trained option only)

Both are sums, like the reconstruction term log p(x|z_q) they are added to
(summed over pixels, in nats per example): the family sums them over the grid
positions of each example, as the paper's objective does with z the whole
latent. Sonnet averages them over every element because its reconstruction is
a mean squared error, also averaged; averaging here against a summed
reconstruction is what makes "a VQ loss tiny next to the reconstruction
loss" (3136 times too small at 7x7x64). Their values are equal; only where
the gradient goes differs, so one number (`Quantized.commitment`) is the
metric for both.

The default codebook is not a gradient parameter but an exponential moving
average (the paper's appendix, as Sonnet's `VectorQuantizerEMA`):

    N_k <- g N_k + (1 - g) n_k,        n_k = #{i: k_i = k} in the batch,
    m_k <- g m_k + (1 - g) sum_{i: k_i = k} z_e,i,
    N~_k = (N_k + eps) / (n + K eps) * n,   n = sum_k N_k   (Laplace smoothing),
    e_k  = m_k / N~_k,

with g = 0.99 and eps = 1e-5. N and m start at zero and are not debiased: both
carry the same factor (1 - g^t), which cancels in m_k / N_k. The statistics
live in the flax collection `COLLECTION` ("codebook"), a plain dict of arrays
(`embedding` (K, D), `cluster_size` (K,), `embedding_sum` (K, D), `restarts`
() int32) that the trainer carries, checkpoints and restores as non-gradient
state.

Dead codes (`restart_dead_codes`): at every training step given a key, after
the EMA update, a code whose count N_k has fallen below `threshold` (0.03)
times the average count sum(N) / K is replaced by an encoder output of the
batch, at most `max_restarts` per step (all of them by default, and never
more than the batch has positions). The positions are distinct, drawn with
the explicit key in proportion to their squared distance to their code (as
k-means++ seeds): a restarted code goes where the codebook serves the data
worst, never onto a vector a code already matches. (Drawn uniformly, they
land mostly on the background's many near-identical vectors, where a copy
finds no use and dies again: on MNIST digits, 360-430 of 512 codes were in use
per epoch that way against 500-506.) Its statistics restart as if it had been
used at the average rate: N_k = sum(N) / K, m_k = z N_k. A code used at the
average rate and then not at all is restarted after log(0.03) / log(0.99),
about 350 steps; one used steadily at more than 3% of the average rate never
is. Because N starts at zero, the first training step restarts every code
its batch did not use: the codebook is initialised from the data. The
threshold is relative, so it means the same at any batch size.

Finite scalar quantisation (`FSQ`): each of d channels is bounded and rounded
to L_i levels with the straight-through gradient, an implicit codebook of
prod(L_i) codes with no loss and no state.

Codebook metrics (`code_counts`, `perplexity`, `codes_in_use`): counts of
each code's use, summable over batches, so that an epoch's figures come from
the sum of its batches' counts.
"""
import functools
import math
from collections.abc import Sequence
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

COLLECTION = "codebook"  # The flax collection of the EMA codebook and its statistics.

# The nearest-code search decides discrete assignments, and the EMA sums feed the
# codebook: at full float32 precision, so that GPUs (whose default matmul rounds
# float32 to TF32) assign the codes the CPU would. Both are small next to the networks.
_PRECISION = jax.lax.Precision.HIGHEST


def _at_least_float32(x: jax.Array) -> jax.Array:
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))


# ----------------------------------------------------------------------------
# Vector quantisation: the pure functions.


def nearest_codes(z: jax.Array, embedding: jax.Array) -> jax.Array:
  """Index of the nearest code of each vector, by one matrix product.

  ||z - e_j||^2 = ||z||^2 - 2 z.e_j + ||e_j||^2; the first term is the same for
  every j, so the argmin is taken over ||e_j||^2 - 2 z.e_j alone (adding it
  would only round). Ties go to the lowest index.

  Args:
    z: `(..., D)`.
    embedding: the codebook `(K, D)`.

  Returns:
    int32 indices `(...)` in [0, K).
  """
  scores = jnp.sum(embedding * embedding, axis=-1) - 2 * jnp.matmul(
      z, embedding.T, precision=_PRECISION)
  return jnp.argmin(scores, axis=-1).astype(jnp.int32)


def init_ema_stats(embedding: jax.Array) -> dict[str, jax.Array]:
  """The EMA state of a fresh codebook `(K, D)`: counts and sums at zero, no restarts."""
  num_codes, dim = embedding.shape
  return {"embedding": embedding,
          "cluster_size": jnp.zeros((num_codes,), jnp.float32),
          "embedding_sum": jnp.zeros((num_codes, dim), jnp.float32),
          "restarts": jnp.zeros((), jnp.int32)}


def cluster_sums(z_flat: jax.Array, indices: jax.Array, num_codes: int
                 ) -> tuple[jax.Array, jax.Array]:
  """Each code's count n_k `(K,)` and sum of its encoder outputs `(K, D)` in the batch.

  Args:
    z_flat: `(P, D)`, one row per position.
    indices: their codes `(P,)` int.

  On CPU a scatter-add (a sequential loop there, so deterministic), on other
  platforms a product with the one-hot assignments: their scatter-add of floats
  adds in an order that varies from run to run (and a resumed run must
  reproduce the codebook bit for bit), while the product costs them little.
  On CPU the product would cost as much as the nearest-code search itself.
  """
  return jax.lax.platform_dependent(
      z_flat, indices, cpu=functools.partial(_sums_by_scatter, num_codes=num_codes),
      default=functools.partial(_sums_by_matmul, num_codes=num_codes))


def _sums_by_scatter(z_flat, indices, num_codes):
  counts = jnp.bincount(indices, length=num_codes).astype(z_flat.dtype)
  return counts, jax.ops.segment_sum(z_flat, indices, num_codes)


def _sums_by_matmul(z_flat, indices, num_codes):
  one_hot = jax.nn.one_hot(indices, num_codes, dtype=z_flat.dtype)
  return jnp.sum(one_hot, axis=0), jnp.matmul(one_hot.T, z_flat, precision=_PRECISION)


def ema_update(stats: dict[str, jax.Array], z_flat: jax.Array, indices: jax.Array,
               decay: float = 0.99, epsilon: float = 1e-5) -> dict[str, jax.Array]:
  """One EMA step of the codebook (the paper's appendix, with Laplace-smoothed counts).

  Args:
    stats: `embedding` (K, D), `cluster_size` N (K,), `embedding_sum` m (K, D), ...
    z_flat: the batch's encoder outputs `(P, D)`, one row per position.
    indices: their codes `(P,)` int (what the module's assignments are; no `(P, K)`
      one-hot is needed on CPU).
    decay: g; epsilon: the Laplace smoothing's pseudo-count.

  Returns:
    `stats` with N, m and the embedding e_k = m_k / N~_k updated.
  """
  num_codes = stats["cluster_size"].shape[0]
  counts, sums = cluster_sums(z_flat, indices, num_codes)
  cluster_size = decay * stats["cluster_size"] + (1 - decay) * counts
  embedding_sum = decay * stats["embedding_sum"] + (1 - decay) * sums
  total = jnp.sum(cluster_size)
  smoothed = (cluster_size + epsilon) / (total + num_codes * epsilon) * total
  return {**stats, "cluster_size": cluster_size, "embedding_sum": embedding_sum,
          "embedding": embedding_sum / smoothed[:, None]}


def dead_codes(cluster_size: jax.Array, threshold: float) -> jax.Array:
  """Codes whose EMA count is below `threshold` times the average count: bool `(K,)`.

  None is dead while every count is zero (before the first update).
  """
  return cluster_size < threshold * jnp.mean(cluster_size)


def restart_dead_codes(stats: dict[str, jax.Array], z_flat: jax.Array, key: jax.Array,
                       threshold: float = 0.03, max_restarts: int | None = None,
                       weights: jax.Array | None = None
                       ) -> tuple[dict[str, jax.Array], jax.Array]:
  """Replaces dead codes by encoder outputs drawn from the batch.

  The dead codes (`dead_codes`), lowest index first, up to
  min(max_restarts, P), each take the encoder output at a distinct position
  drawn with `key`; their EMA state restarts at the average count,
  N_k = mean(N) and m_k = z N_k, so that m_k / N_k = z = e_k. Used codes are
  untouched.

  Args:
    stats: the EMA state (`init_ema_stats`).
    z_flat: the batch's encoder outputs `(P, D)`.
    key: the draw of the positions.
    threshold: dead below this fraction of the average count.
    max_restarts: at most this many per call; None: as many as there are dead codes.
    weights: `(P,)` >= 0: positions drawn in proportion to them, none of weight 0
      (so at most as many restarts as positive weights); the module passes each
      position's squared distance to its code. None: uniformly.

  Returns:
    The new state (its `restarts` counter increased) and the number restarted, int32 ().
  """
  z_flat = jnp.asarray(z_flat)
  positions, num_codes = z_flat.shape[0], stats["cluster_size"].shape[0]
  cap = min(positions, num_codes if max_restarts is None else max_restarts)
  dead = dead_codes(stats["cluster_size"], threshold)
  rank = jnp.cumsum(dead) - 1  # The i-th dead code takes the i-th drawn position.
  if weights is None:
    restart = dead & (rank < cap)
    picks = jax.random.permutation(key, positions)[:cap]
  else:
    # Gumbel top-k: `cap` positions drawn without replacement, each in proportion to its
    # weight among those left; none of weight 0.
    restart = dead & (rank < jnp.minimum(cap, jnp.sum(weights > 0)))
    scores = jnp.log(weights) + jax.random.gumbel(key, (positions,))
    picks = jax.lax.top_k(scores, cap)[1]
  fresh = z_flat[picks[jnp.clip(rank, 0, cap - 1)]]
  average = jnp.mean(stats["cluster_size"])
  count = jnp.sum(restart, dtype=jnp.int32)
  column = restart[:, None]
  return {"embedding": jnp.where(column, fresh, stats["embedding"]),
          "cluster_size": jnp.where(restart, average, stats["cluster_size"]),
          "embedding_sum": jnp.where(column, fresh * average, stats["embedding_sum"]),
          "restarts": stats["restarts"] + count}, count


# ----------------------------------------------------------------------------
# Vector quantisation: the module.


class Quantized(NamedTuple):
  """What `VectorQuantizer` returns for encoder outputs z_e `(..., D)`.

  Attributes:
    z_q: `(..., D)` float32, the nearest codes, with the straight-through gradient to z_e.
    indices: `(...)` int32, the codes' indices.
    commitment: `(...)` ||z_e - sg(e_k)||^2 summed over D; also the value of the codebook
      loss ||sg(z_e) - e_k||^2 (the squared quantisation error), as a metric.
    loss: `(...)` what to add to the reconstruction loss after summing over the grid:
      beta * commitment, plus the codebook loss for a loss-trained codebook.
    restarted: `()` int32, codes restarted by this call.
  """
  z_q: jax.Array
  indices: jax.Array
  commitment: jax.Array
  loss: jax.Array
  restarted: jax.Array


class VectorQuantizer(nn.Module):
  """Nearest-code quantisation with the straight-through gradient (module docstring).

  Training, EMA codebook (the default)::

      out, state = vq.apply({"params": params, "codebook": codebook}, z_e, train=True,
                            restart_key=key, mutable=["codebook"])

  `state["codebook"]` is the next codebook state; `restart_key=None` turns the
  restarts off. Evaluation: `vq.apply(variables, z_e)` (train=False), which
  changes nothing. With `ema=False` the codebook is the parameter
  `params["embedding"]`, trained by the codebook loss; there is no "codebook"
  collection and no restarts.

  Attributes:
    num_codes: K.
    commitment_weight: beta.
    ema: the EMA codebook (True) or the loss-trained one.
    decay, epsilon: the EMA's decay g and the Laplace smoothing's pseudo-count.
    restart_threshold, max_restarts: `restart_dead_codes`'s threshold and cap.
  """

  num_codes: int = 512
  commitment_weight: float = 0.25
  ema: bool = True
  decay: float = 0.99
  epsilon: float = 1e-5
  restart_threshold: float = 0.03
  max_restarts: int | None = None

  @nn.compact
  def __call__(self, z_e: jax.Array, train: bool = False,
               restart_key: jax.Array | None = None) -> Quantized:
    """Quantises z_e `(..., D)` (any leading axes); see `Quantized` for the outputs.

    Args:
      z_e: encoder outputs `(..., D)`, computed in float32 or wider.
      train: update the EMA codebook (and restart dead codes) after quantising;
        the "codebook" collection must then be mutable.
      restart_key: the key of this step's restarts; None: no restarts.
    """
    if restart_key is not None and not train:
      raise ValueError("restart_key is used in training only (train=True)")
    z_e = _at_least_float32(z_e)
    embedding = self._declare(z_e.shape[-1])
    indices = nearest_codes(z_e, embedding)
    e_k = jnp.take(embedding, indices, axis=0)
    sg = jax.lax.stop_gradient
    commitment = jnp.sum(jnp.square(z_e - sg(e_k)), axis=-1)
    loss = self.commitment_weight * commitment
    if not self.ema:
      loss = loss + jnp.sum(jnp.square(sg(z_e) - e_k), axis=-1)
    restarted = (self._update(z_e, indices, commitment, restart_key) if train
                 else jnp.zeros((), jnp.int32))
    return Quantized(z_e + sg(e_k - z_e), indices, commitment, loss, restarted)

  def _declare(self, dim: int) -> jax.Array:
    """Creates the codebook at init; returns it `(K, D)`."""
    # Uniform with variance 1 / D: codes of about unit norm, like a dense layer's outputs.
    limit = math.sqrt(3.0 / dim)
    init = lambda key: jax.random.uniform(key, (self.num_codes, dim), jnp.float32, -limit, limit)
    if not self.ema:
      return self.param("embedding", init)
    embedding = self.variable(COLLECTION, "embedding", lambda: init(self.make_rng("params")))
    for name, value in init_ema_stats(embedding.value).items():
      if name != "embedding":
        self.variable(COLLECTION, name, lambda value=value: value)
    return embedding.value

  def _update(self, z_e: jax.Array, indices: jax.Array, error: jax.Array,
              restart_key: jax.Array | None) -> jax.Array:
    """The EMA step and the restarts, written to the collection; returns the restart count."""
    if not self.ema:
      if restart_key is not None:
        raise ValueError("dead-code restarts need the EMA codebook (ema=True)")
      return jnp.zeros((), jnp.int32)
    if self.is_initializing():
      return jnp.zeros((), jnp.int32)
    if not self.is_mutable_collection(COLLECTION):
      raise ValueError(f"train=True updates the EMA codebook: apply with mutable=['{COLLECTION}']")
    stats = dict(self.variables[COLLECTION])
    z_flat = jax.lax.stop_gradient(z_e).reshape(-1, z_e.shape[-1])
    stats = ema_update(stats, z_flat, indices.reshape(-1), self.decay, self.epsilon)
    count = jnp.zeros((), jnp.int32)
    if restart_key is not None:
      weights = jax.lax.stop_gradient(error).reshape(-1)
      stats, count = restart_dead_codes(stats, z_flat, restart_key, self.restart_threshold,
                                        self.max_restarts, weights)
    for name, value in stats.items():
      self.put_variable(COLLECTION, name, value)
    return count

  def codebook(self) -> jax.Array:
    """The code vectors `(K, D)` (apply with `method=VectorQuantizer.codebook`)."""
    if self.ema:
      return self.get_variable(COLLECTION, "embedding")
    return self.get_variable("params", "embedding")

  def embed(self, indices: jax.Array) -> jax.Array:
    """Code vectors of indices `(...)` int: `(..., D)`, what the decoder gets for a prior's draw."""
    return jnp.take(self.codebook(), indices, axis=0)


# ----------------------------------------------------------------------------
# Finite scalar quantisation.


def round_ste(x: jax.Array) -> jax.Array:
  """round(x) forward, the identity's gradient backward."""
  return x + jax.lax.stop_gradient(jnp.round(x) - x)


def _levels(levels: Sequence[int]) -> np.ndarray:
  levels = np.asarray(levels, np.int64)
  if levels.ndim != 1 or levels.size == 0 or levels.min() < 2:
    raise ValueError(f"FSQ levels must be integers >= 2, one per channel, got {levels.tolist()}")
  if np.prod(levels) > np.iinfo(np.int32).max:
    raise ValueError(f"FSQ levels {levels.tolist()} give more codes than int32 indices hold")
  return levels


def fsq_bound(z: jax.Array, levels: Sequence[int], eps: float = 1e-3) -> jax.Array:
  """Mentzer et al.'s bound: channel i of z `(..., d)` into an interval rounding to L_i integers.

  tanh(z + shift) * h - offset with h = (L - 1)(1 - eps) / 2: for odd L the
  integers -(L-1)/2 .. (L-1)/2; for even L the interval is shifted down by a
  half (offset 1/2) to -L/2 .. L/2 - 1. shift = tan(offset / h), as in the
  reference code, brings bound(0) near 0 (artanh would make it exactly 0, but
  is undefined at L = 2, and tan agrees with it to third order: |bound(0)| is
  1.4e-5 at L = 8, 4e-4 at L = 4). eps keeps tanh's limits inside the interval.

  Args:
    z: `(..., d)`, d = len(levels).

  Returns:
    `(..., d)` float32, channel i in (-h_i - offset_i, h_i - offset_i).
  """
  levels = _levels(levels)
  half = (levels - 1) * (1 - eps) / 2
  offset = np.where(levels % 2 == 0, 0.5, 0.0)
  shift = np.tan(offset / half)
  return (jnp.tanh(z + shift.astype(np.float32)) * half.astype(np.float32)
          - offset.astype(np.float32))


def fsq_quantize(z: jax.Array, levels: Sequence[int]) -> jax.Array:
  """Bounded, rounded with the straight-through gradient and divided by floor(L_i / 2).

  Args:
    z: `(..., d)`, d = len(levels).

  Returns:
    `(..., d)` float32: channel i in {-1, ..., 1} on a grid of step 1 / floor(L_i / 2)
    (odd L: L values from -1 to 1; even L: from -1 to 1 - 2 / L).
  """
  half_width = (_levels(levels) // 2).astype(np.float32)
  return round_ste(fsq_bound(_at_least_float32(z), levels)) / half_width


def fsq_codes_to_indices(codes: jax.Array, levels: Sequence[int]) -> jax.Array:
  """Quantised codes `(..., d)` (as `fsq_quantize` gives) -> int32 indices `(...)`.

  Mixed radix, channel 0 the least significant digit (the reference's order).
  """
  levels = _levels(levels)
  half_width = levels // 2
  # Rounded before the cast: k / 3 * 3 need not be exactly k in floating point.
  digits = jnp.round(codes * half_width + half_width).astype(jnp.int32)
  return jnp.sum(digits * _basis(levels), axis=-1, dtype=jnp.int32)


def fsq_indices_to_codes(indices: jax.Array, levels: Sequence[int]) -> jax.Array:
  """int indices `(...)` in [0, prod(L)) -> codes `(..., d)` float32.

  The inverse of `fsq_codes_to_indices`.
  """
  levels = _levels(levels)
  half_width = levels // 2
  digits = (jnp.asarray(indices, jnp.int32)[..., None] // _basis(levels)) % levels
  return (digits - half_width).astype(jnp.float32) / half_width.astype(np.float32)


def _basis(levels: np.ndarray) -> np.ndarray:
  return np.concatenate([[1], np.cumprod(levels[:-1])]).astype(np.int32)


class FSQ(nn.Module):
  """Finite scalar quantisation: z `(..., d)` -> (codes `(..., d)`, indices `(...)` int32).

  No parameters and no state: `FSQ(levels).apply({}, z)`. The encoder's last
  layer gives d = len(levels) channels; the decoder gets the codes.

  Attributes:
    levels: L_i per channel, e.g. (8, 5, 5, 5) (1000 codes).
  """

  levels: Sequence[int]

  @property
  def codebook_size(self) -> int:
    return int(np.prod(_levels(self.levels)))

  def __call__(self, z: jax.Array) -> tuple[jax.Array, jax.Array]:
    codes = fsq_quantize(z, self.levels)
    return codes, fsq_codes_to_indices(codes, self.levels)

  def embed(self, indices: jax.Array) -> jax.Array:
    """The codes of indices `(...)`: `(..., d)` (the prior's draws, decoded)."""
    return fsq_indices_to_codes(indices, self.levels)

  def codebook(self) -> jax.Array:
    """The implicit codebook `(prod(L), d)`, code k in row k."""
    return fsq_indices_to_codes(jnp.arange(self.codebook_size), self.levels)


# ----------------------------------------------------------------------------
# Codebook metrics.


def code_counts(indices: jax.Array, num_codes: int) -> jax.Array:
  """How often each code occurs in `indices` (any shape): int32 `(K,)`.

  Integer counts add exactly in any order: sum them over an epoch's batches
  for the epoch's `perplexity` and `codes_in_use`.
  """
  return jnp.bincount(indices.reshape(-1), length=num_codes).astype(jnp.int32)


def perplexity(counts: jax.Array) -> jax.Array:
  """exp(H(p)) of the code usage p = counts / sum(counts), H in nats: float32 ().

  The effective number of codes in use: m for uniform use of m codes, 1 for
  one code, at most K. 0 log 0 is taken as 0.
  """
  p = counts / jnp.sum(counts)
  plogp = jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0)
  return jnp.exp(-jnp.sum(plogp)).astype(jnp.float32)


def codes_in_use(counts: jax.Array) -> jax.Array:
  """The number of codes used at least once: int32 ()."""
  return jnp.sum(counts > 0, dtype=jnp.int32)
