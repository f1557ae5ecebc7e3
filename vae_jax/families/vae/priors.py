"""Priors p(z) for the VAE: the standard normal, a learned Gaussian mixture, the VampPrior.

Each prior is a flax module with (what `VAE` calls)

  * `log_prob(z, encode=None)`: log p(z) in nats, z `(..., L)` -> `(...)`;
  * `sample(key, num, encode=None)`: `(num, L)` draws from p(z);
  * `kl_per_dimension(mean, logvar)`: KL(N(mean, exp(logvar)) || p) per latent,
    `(..., L)`, only where a closed form exists (the standard normal); the
    others have no such method, and a VAE then uses the Monte Carlo estimate
    log q(z|x) - log p(z);
  * optionally `uses_encoder = True` when log p(z) runs the VAE's encoder (the
    VampPrior: see `estimators` on what that means for DReG).

`encode` is the VAE's encoder, images `(..., H, W, C)` in [0, 1] ->
(mean, logvar) each `(..., L)`. Only the VampPrior uses it; the others accept
and ignore it, so a model can pass it to any prior.

References:
  Tomczak & Welling (2018), VAE with a VampPrior, AISTATS.
  Dilokthanakul et al. (2016), Deep unsupervised clustering with Gaussian
  mixture VAEs (a mixture prior in the latent space).
"""
import math
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from vae_jax import objectives

Encode = Callable[[jax.Array], tuple[jax.Array, jax.Array]]


def mixture_log_prob(z: jax.Array, log_pi: jax.Array, means: jax.Array,
                     logvars: jax.Array) -> jax.Array:
  """log sum_k pi_k N(z; mean_k, diag(exp(logvar_k))), by logsumexp over components.

  Args:
    z: `(..., L)`.
    log_pi: `(K,)` the log mixture weights log pi_k, normalised (logsumexp = 0).
    means, logvars: `(K, L)`.

  Returns:
    `(...)` in nats.
  """
  per_component = objectives.gaussian_log_density(z[..., None, :], means, logvars)  # (..., K)
  return jax.nn.logsumexp(per_component + log_pi, axis=-1)


def sample_mixture(key: jax.Array, num: int, log_pi: jax.Array, means: jax.Array,
                   logvars: jax.Array) -> jax.Array:
  """`(num, L)` draws of a diagonal Gaussian mixture: a component k ~ pi, then N(mean_k, var_k)."""
  k_component, k_noise = jax.random.split(key)
  component = jax.random.categorical(k_component, log_pi, shape=(num,))
  eps = jax.random.normal(k_noise, (num, means.shape[-1]), means.dtype)
  return means[component] + jnp.exp(0.5 * logvars[component]) * eps


class StandardNormal(nn.Module):
  """p(z) = N(0, I): the VAE's default, with the analytic KL the seed trains with."""

  latents: int

  def log_prob(self, z: jax.Array, encode: Encode | None = None) -> jax.Array:
    """log N(z; 0, I): `(..., L)` -> `(...)`."""
    del encode
    return objectives.gaussian_log_density(z, 0.0, 0.0)

  def sample(self, key: jax.Array, num: int, encode: Encode | None = None) -> jax.Array:
    """`(num, L)` standard normal draws."""
    del encode
    return jax.random.normal(key, (num, self.latents))

  def kl_per_dimension(self, mean: jax.Array, logvar: jax.Array) -> jax.Array:
    """KL(N(mean, exp(logvar)) || N(0, 1)) per latent, `(..., L)`: what `VAE` asks for."""
    return objectives.kl_per_dimension(mean, logvar)


class MixtureOfGaussians(nn.Module):
  """p(z) = sum_k pi_k N(z; mu_k, diag(sigma_k^2)), all learned.

  Parameters: `means` `(K, L)`, `logvars` `(K, L)`, `logits` `(K,)` with
  pi = softmax(logits). At initialisation the logits and log-variances are 0
  and the means N(0, mean_init_scale^2): each component is N(mu_k, I) with a
  small, distinct mu_k, so the prior starts close to N(0, I) (the seed's) while
  the components can separate (equal means would get equal gradients forever).

  Attributes:
    latents: L.
    components: K.
    mean_init_scale: the standard deviation of the initial means.
  """

  latents: int
  components: int
  mean_init_scale: float = 0.1

  def setup(self):
    self.means = self.param("means", nn.initializers.normal(self.mean_init_scale),
                            (self.components, self.latents))
    self.logvars = self.param("logvars", nn.initializers.zeros, (self.components, self.latents))
    self.logits = self.param("logits", nn.initializers.zeros, (self.components,))

  def log_prob(self, z: jax.Array, encode: Encode | None = None) -> jax.Array:
    """log p(z): `(..., L)` -> `(...)`."""
    del encode
    return mixture_log_prob(z, jax.nn.log_softmax(self.logits), self.means, self.logvars)

  def sample(self, key: jax.Array, num: int, encode: Encode | None = None) -> jax.Array:
    """`(num, L)` draws of the mixture."""
    del encode
    return sample_mixture(key, num, jax.nn.log_softmax(self.logits), self.means, self.logvars)


class VampPrior(nn.Module):
  """The VampPrior: p(z) = (1/K) sum_k q(z | u_k), the encoder's posterior at K learned images.

  The pseudo-inputs u_k live in pixel space as `sigmoid(pseudo_logits)`, so they
  stay in (0, 1) like the data whatever the optimiser does (Tomczak & Welling
  clip with a hardtanh instead, whose gradient vanishes outside [0, 1]). The
  logits start as N(0, 1): distinct noise images in about (0.12, 0.88), so
  the K components start apart.

  log p(z) runs the encoder on the K pseudo-inputs: its cost is one encoder
  pass over K images per call, shared by every z in the batch. The prior owns
  only the pseudo-inputs; the encoder's parameters stay the VAE's, so the
  prior's log-density depends on them (see `vae_jax.estimators` on what that
  means for DReG).

  Attributes:
    latents: L.
    components: K, the number of pseudo-inputs.
    image_shape: (H, W, C) of one pseudo-input, the data's.
  """

  latents: int
  components: int
  image_shape: tuple[int, int, int]
  uses_encoder = True  # Its log-density runs the VAE's encoder (estimators.split_params).

  def setup(self):
    self.pseudo_logits = self.param("pseudo_logits", nn.initializers.normal(1.0),
                                    (self.components, *self.image_shape))

  def pseudo_inputs(self) -> jax.Array:
    """The K pseudo-inputs, `(K, H, W, C)` in (0, 1)."""
    return jax.nn.sigmoid(self.pseudo_logits)

  def components_of(self, encode: Encode | None) -> tuple[jax.Array, jax.Array]:
    """The mixture's means and log-variances, `(K, L)` each: the encoder at the pseudo-inputs."""
    if encode is None:
      raise ValueError("VampPrior needs the encoder: pass encode=(images -> mean, logvar)")
    mean, logvar = encode(self.pseudo_inputs())
    return mean, logvar

  def log_prob(self, z: jax.Array, encode: Encode | None = None) -> jax.Array:
    """log p(z) = logsumexp_k log q(z | u_k) - log K: `(..., L)` -> `(...)`."""
    means, logvars = self.components_of(encode)
    uniform = jnp.full((self.components,), -math.log(self.components), means.dtype)
    return mixture_log_prob(z, uniform, means, logvars)

  def sample(self, key: jax.Array, num: int, encode: Encode | None = None) -> jax.Array:
    """`(num, L)` draws: a pseudo-input uniformly, then z ~ q(z | u_k)."""
    means, logvars = self.components_of(encode)
    uniform = jnp.zeros((self.components,), means.dtype)
    return sample_mixture(key, num, uniform, means, logvars)
