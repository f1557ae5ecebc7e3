"""Log-likelihoods, KL and the bounds on log p(x), per example, in nats.

All reductions sum over pixels and latent dimensions and keep the example
axes, so `mean(negative_elbo(...))` is the PyTorch tutorial's loss per example.
"""
import functools
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


def negative_elbo(model, params, x: jax.Array, key: jax.Array, y: jax.Array | None = None
                  ) -> dict[str, jax.Array]:
  """Single-sample negative ELBO = recon + KL, per example.

  Args:
    model: a `vae_jax.model.VAE`.
    params: its parameters.
    x: images `(B, H, W, C)` in [0, 1].
    key: PRNG key for the one draw of z per example.
    y: labels `(B,)` of a conditional model; None otherwise.

  Returns:
    The model's `elbo_terms`: arrays of shape `(B,)` `loss` (= recon + kl),
    `recon` (-log p(x|z), the summed cross-entropy for Bernoulli pixels) and
    `kl`; and `kl_per_dimension` `(B, L)` where the KL is analytic.
  """
  labels = {} if y is None else {"y": y}
  return model.apply({"params": params}, x, key, method=type(model).elbo_terms, **labels)


def kl_weight(step: jax.Array, beta: jax.Array, warmup_steps: jax.Array) -> jax.Array:
  """The KL's weight in the training objective at `step` (0-based).

  `beta * min(1, step / warmup_steps)`: a linear warm-up from 0 to beta
  (Sonderby et al. 2016), then beta (the beta-VAE, Higgins et al. 2017);
  beta itself when `warmup_steps` is 0.
  """
  ramp = jnp.minimum(1.0, step / jnp.maximum(warmup_steps, 1))
  return beta * jnp.where(warmup_steps > 0, ramp, 1.0)


def weighted_objective(terms: dict[str, jax.Array], weight: jax.Array,
                       free_bits: jax.Array) -> jax.Array:
  """The training objective of a batch: mean recon + weight * KL, with free bits.

  Each latent's KL, averaged over the batch, counts as at least `free_bits`
  nats (Kingma et al. 2016), so the optimiser gains nothing by pushing it
  below; with 0 it is the batch's mean KL.

  Args:
    terms: `negative_elbo`'s output for a batch.
    weight: the KL weight (`kl_weight`).
    free_bits: the floor per latent, in nats.

  Returns:
    A scalar. It equals the mean negative ELBO when weight = 1 and free_bits = 0.
    Without a closed-form KL per latent (other priors and posteriors: no
    `kl_per_dimension` in `terms`) the KL is the batch mean of its estimate,
    and free bits do not apply (the config refuses them).
  """
  if "kl_per_dimension" not in terms:
    return jnp.mean(terms["recon"]) + weight * jnp.mean(terms["kl"])
  kl = jnp.sum(jnp.maximum(jnp.mean(terms["kl_per_dimension"], axis=0), free_bits))
  return jnp.mean(terms["recon"]) + weight * kl


# ----------------------------------------------------------------------------
# Many-sample bounds: the ELBO with S samples and the IWAE bound
# (Burda, Grosse & Salakhutdinov 2015), per example.


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


@functools.partial(jax.jit, static_argnames=("model", "k", "sample_chunk"))
def importance_terms(model, params, x: jax.Array, key: jax.Array, k: int,
                     sample_chunk: int | None = None, y: jax.Array | None = None
                     ) -> dict[str, jax.Array]:
  """The IWAE bound and the k-sample ELBO terms, from the same k draws per example.

  Sample s of example b is z = mean_b + sigma_b * eps with eps drawn from
  `fold_in(key_b, s)`, so the result does not depend on `sample_chunk`. The
  samples are drawn `sample_chunk` at a time in a `lax.scan` that carries a
  running logsumexp: memory is O(B * sample_chunk * D) whatever k is, and the
  decoder sees one (B * sample_chunk, latents) batch per step, large matmuls.

  Args:
    model: a `vae_jax.model.VAE` (static).
    params: its parameters.
    x: images (B, H, W, C) in [0, 1].
    key: one PRNG key (example b then uses `fold_in(key, b)`), or one per example (B,).
    k: importance samples per example (static).
    sample_chunk: samples drawn at once per example (static); default all k.
    y: labels (B,) of a conditional model: then `iwae` bounds log p(x|y), with
      the weights p(x|z, y) p(z) / q(z|x, y).

  Returns:
    dict of (B,) arrays in nats: `iwae` = log (1/k) sum_s p(x, z_s) / q(z_s|x),
    a lower bound on log p(x) that rises to it as k grows; `recon` = the mean
    over the k samples of -log p(x|z_s); `kl` = KL(q(z|x) || p(z)), analytic
    where the model's families give it (`VAE.kl`), else the mean over the k
    samples of log q(z_s|x) - log p(z_s). The ELBO is -(recon + kl). The
    weights are the model's own (`VAE.log_weights`).
  """
  keys = _per_example(key, x.shape[0])
  num_chunks, chunk = sample_chunking(k, sample_chunk)

  def run(module):
    labels = {} if y is None else {"y": y}
    mean, logvar = module.encode(x, **labels)

    analytic_kl = module.kl(mean, logvar)

    def body(carry, c):
      index = c * chunk + jnp.arange(chunk)
      log_w, log_lik = module.log_weights(x, mean, logvar, keys, index, **labels)
      real = index < k  # The padding of the last chunk weighs nothing.
      sums = {"log_sum_w": jnp.logaddexp(carry["log_sum_w"], jax.nn.logsumexp(
                  jnp.where(real, log_w, -jnp.inf), axis=1)),
              "log_lik": carry["log_lik"] + jnp.sum(jnp.where(real, log_lik, 0.0), axis=1)}
      if "log_w" in carry:  # Without a closed-form KL: its Monte Carlo estimate.
        sums["log_w"] = carry["log_w"] + jnp.sum(jnp.where(real, log_w, 0.0), axis=1)
      return sums, None

    zeros = jnp.zeros(x.shape[:1], mean.dtype)
    init = {"log_sum_w": jnp.full(x.shape[:1], -jnp.inf, mean.dtype), "log_lik": zeros}
    if analytic_kl is None:
      init["log_w"] = zeros
    sums, _ = jax.lax.scan(body, init, jnp.arange(num_chunks))
    # Without a closed form, KL = E_q[log q - log p] = E_q[log p(x|z) - log w].
    kl = analytic_kl if analytic_kl is not None else (sums["log_lik"] - sums["log_w"]) / k
    return {"iwae": sums["log_sum_w"] - math.log(k), "recon": -sums["log_lik"] / k, "kl": kl}

  return model.apply({"params": params}, method=run)


def iwae_bound(model, params, x: jax.Array, key: jax.Array, k: int,
               sample_chunk: int | None = None) -> jax.Array:
  """log p_k(x), the IWAE lower bound on log p(x) with k samples, per example (B,).

  See `importance_terms` for the arguments; k = 1 is a single-sample ELBO.
  """
  return importance_terms(model, params, x, key, k, sample_chunk)["iwae"]


def elbo(model, params, x: jax.Array, key: jax.Array, num_samples: int = 1) -> jax.Array:
  """The ELBO E_q[log p(x|z)] - KL(q || p(z)) per example (B,), in nats.

  The expectation is the mean over `num_samples` draws (the first draws
  `iwae_bound` makes with the same key); the KL is analytic.
  """
  terms = importance_terms(model, params, x, key, num_samples, num_samples)
  return -(terms["recon"] + terms["kl"])


def _typed(key: jax.Array) -> jax.Array:
  """A typed PRNG key from either a typed key or raw uint32 key data."""
  if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
    return key
  return jax.random.wrap_key_data(key)


def _per_example(key: jax.Array, batch: int) -> jax.Array:
  """(batch,) keys: `key` itself when it holds one per example, else fold_in(key, b)."""
  key = _typed(key)
  if key.ndim == 0:
    return example_keys(key, jnp.arange(batch))
  if key.shape != (batch,):
    raise ValueError(f"expected one key or {batch} keys, got key shape {key.shape}")
  return key
