"""The maths the families share: log-likelihoods, Gaussian densities and KL, log-mean-exp.

Per example, in nats. All reductions sum over pixels and latent dimensions and
keep the example axes. The Gaussian VAE's objective and bounds are in
`vae_jax.families.vae.objective`.
"""
import math

import jax
import jax.numpy as jnp

_LOG_2PI = math.log(2 * math.pi)


def binary_cross_entropy_with_logits(logits: jax.Array, targets: jax.Array) -> jax.Array:
  """Elementwise -[t log sigmoid(l) + (1 - t) log(1 - sigmoid(l))].

  Written as `max(l, 0) - l t + log1p(exp(-|l|))`, which never exponentiates a
  positive number, so it stays finite and exact for any finite logit. `targets`
  may be grey levels in [0, 1], as in the PyTorch tutorial.
  """
  return jnp.maximum(logits, 0) - logits * targets + jnp.log1p(jnp.exp(-jnp.abs(logits)))


def bernoulli_log_likelihood(x: jax.Array, logits: jax.Array) -> jax.Array:
  """log p(x|z) for independent Bernoulli pixels: (..., D), (..., D) -> (...)."""
  return -jnp.sum(binary_cross_entropy_with_logits(logits, x), axis=-1)


def gaussian_log_likelihood(x: jax.Array, mean: jax.Array, log_scale: jax.Array) -> jax.Array:
  """log N(x; mean, exp(log_scale)^2 I): (..., D), (..., D), scalar -> (...)."""
  z = (x - mean) * jnp.exp(-log_scale)
  return -0.5 * jnp.sum(z * z + _LOG_2PI + 2 * log_scale, axis=-1)


def discretized_logistic_log_prob(x: jax.Array, loc: jax.Array, log_scale: jax.Array) -> jax.Array:
  """log P(x) per sub-pixel for 8-bit values x = k / 255 under a logistic discretised into 256 bins.

  Bin k covers [x - h, x + h] with h = 0.5 / 255; the first bin extends to
  -inf and the last to +inf, so the 256 probabilities sum to 1 (Salimans et
  al. 2017). With a = (x + h - loc) / s and b = (x - h - loc) / s,

      sigmoid(a) - sigmoid(b) = sigmoid(a) * sigmoid(-b) * (1 - exp(b - a)),

  which we take logs of term by term: no difference of nearly equal numbers,
  finite for any location and scale, and no infinities in the gradient.

  Args:
    x: values in [0, 1] on the 8-bit grid, any shape.
    loc: the logistic's location, broadcastable to x.
    log_scale: log of its scale s, broadcastable to x.

  Returns:
    log-probabilities (nats), the broadcast shape.
  """
  half = 0.5 / 255.0
  inv_scale = jnp.exp(-log_scale)
  a = (x + half - loc) * inv_scale
  b = (x - half - loc) * inv_scale
  log_upper = -jax.nn.softplus(-a)  # log sigmoid(a): the mass below the bin's top.
  log_above_bottom = -jax.nn.softplus(b)  # log sigmoid(-b): the mass above its bottom.
  # log(1 - exp(-(a - b))), a - b = 2h / s > 0 for every bin.
  log_width = jnp.log(-jnp.expm1(-2.0 * half * inv_scale))
  bottom, top = x < half, x > 1.0 - half
  interior = log_upper + log_above_bottom + log_width
  return jnp.where(bottom, log_upper, jnp.where(top, log_above_bottom, interior))


def reparameterize(key: jax.Array, mean: jax.Array, logvar: jax.Array) -> jax.Array:
  """Draws z ~ N(mean, exp(logvar)) as a differentiable function of (mean, logvar).

  Args:
    key: a PRNG key.
    mean, logvar: arrays of the same shape `(..., latents)`.

  Returns:
    `mean + exp(logvar / 2) * eps` with `eps ~ N(0, I)`, shape of `mean`.
  """
  eps = jax.random.normal(key, mean.shape, mean.dtype)
  return mean + jnp.exp(0.5 * logvar) * eps


def gaussian_log_density(z: jax.Array, mean: jax.Array, logvar: jax.Array) -> jax.Array:
  """log N(z; mean, diag(exp(logvar))) summed over the last axis: (..., L) -> (...)."""
  return -0.5 * jnp.sum((z - mean) ** 2 * jnp.exp(-logvar) + logvar + _LOG_2PI, axis=-1)


def kl_per_dimension(mean: jax.Array, logvar: jax.Array) -> jax.Array:
  """KL(N(mean, exp(logvar)) || N(0, 1)) per latent dimension, (..., L)."""
  return 0.5 * (jnp.exp(logvar) + mean * mean - 1.0 - logvar)


def gaussian_kl(mean: jax.Array, logvar: jax.Array) -> jax.Array:
  """Analytic KL(q(z|x) || N(0, I)) summed over latents: (..., L) -> (...)."""
  return jnp.sum(kl_per_dimension(mean, logvar), axis=-1)


# ----------------------------------------------------------------------------
# Many-sample bounds: log-mean-exp, keys per example, chunks of samples.


def log_mean_exp(a: jax.Array, axis: int = -1) -> jax.Array:
  """log(mean(exp(a))) along `axis`, without overflow or underflow.

  `logsumexp` shifts by the maximum, so the largest term is exp(0): log
  weights of -1e4 or +1e4 nats stay finite, and all -inf gives -inf.
  """
  a = jnp.asarray(a)
  return jax.nn.logsumexp(a, axis=axis) - math.log(a.shape[axis])


def example_keys(key: jax.Array, indices: jax.Array) -> jax.Array:
  """One key per example, `fold_in(key, index)`: (n,) int -> (n,) keys.

  Keying examples by their index in the whole data set (not in a chunk)
  makes results independent of how the examples are chunked.
  """
  return jax.vmap(jax.random.fold_in, in_axes=(None, 0))(_typed(key), indices)


def sample_chunking(k: int, sample_chunk: int | None) -> tuple[int, int]:
  """(number of chunks, chunk size) covering k samples, at most `sample_chunk` each.

  The chunks are made equal and as small as the count allows, so at most
  `chunks - 1` padded samples are drawn (and masked): none when they divide k.
  """
  if k < 1:
    raise ValueError(f"k must be >= 1, got {k}")
  chunk = min(sample_chunk or k, k)
  num_chunks = -(-k // chunk)
  return num_chunks, -(-k // num_chunks)


def _typed(key: jax.Array) -> jax.Array:
  """A typed PRNG key from either a typed key or raw uint32 key data."""
  if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
    return key
  return jax.random.wrap_key_data(key)


def per_example_keys(key: jax.Array, batch: int) -> jax.Array:
  """(batch,) keys: `key` itself when it holds one per example, else fold_in(key, b)."""
  key = _typed(key)
  if key.ndim == 0:
    return example_keys(key, jnp.arange(batch))
  if key.shape != (batch,):
    raise ValueError(f"expected one key or {batch} keys, got key shape {key.shape}")
  return key
