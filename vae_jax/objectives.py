"""Log-likelihoods, KL and the bounds on log p(x), per example, in nats.

All reductions sum over pixels and latent dimensions and keep the example
axes, so `mean(negative_elbo(...))` is the PyTorch tutorial's loss per example.
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


def gaussian_log_density(z: jax.Array, mean: jax.Array, logvar: jax.Array) -> jax.Array:
  """log N(z; mean, diag(exp(logvar))) summed over the last axis: (..., L) -> (...)."""
  return -0.5 * jnp.sum((z - mean) ** 2 * jnp.exp(-logvar) + logvar + _LOG_2PI, axis=-1)


def kl_per_dimension(mean: jax.Array, logvar: jax.Array) -> jax.Array:
  """KL(N(mean, exp(logvar)) || N(0, 1)) per latent dimension, (..., L)."""
  return 0.5 * (jnp.exp(logvar) + mean * mean - 1.0 - logvar)


def gaussian_kl(mean: jax.Array, logvar: jax.Array) -> jax.Array:
  """Analytic KL(q(z|x) || N(0, I)) summed over latents: (..., L) -> (...)."""
  return jnp.sum(kl_per_dimension(mean, logvar), axis=-1)


def negative_elbo(model, params, x: jax.Array, key: jax.Array) -> dict[str, jax.Array]:
  """Single-sample negative ELBO = recon + KL, per example.

  Args:
    model: a `vae_jax.model.VAE`.
    params: its parameters.
    x: images `(B, D)` in [0, 1].
    key: PRNG key for the one draw of z per example.

  Returns:
    dict of arrays of shape `(B,)`: `loss` (= recon + kl), `recon`
    (-log p(x|z), the summed cross-entropy for Bernoulli pixels) and `kl`.
  """
  variables = {"params": params}
  outputs, mean, logvar = model.apply(variables, x, key)
  recon = -model.apply(variables, x, outputs, method=model.log_likelihood)
  kl = gaussian_kl(mean, logvar)
  return {"loss": recon + kl, "recon": recon, "kl": kl}
