"""The Gaussian VAE's objective and its bounds on log p(x), per example, in nats.

Sign convention: `elbo` and `iwae` are bounds on log p(x) (higher is better);
`negative_elbo` and every `loss` are what training minimises (lower is better).
`mean(negative_elbo(...)["loss"])` is the PyTorch tutorial's loss per example.
"""
import functools
import math

import jax
import jax.numpy as jnp

from vae_jax import objectives


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
  keys = objectives.per_example_keys(key, x.shape[0])
  num_chunks, chunk = objectives.sample_chunking(k, sample_chunk)

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
