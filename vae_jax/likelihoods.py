"""Observation models p(x|z): what the decoder's outputs mean and how x is scored.

Each likelihood is a small flax module with two methods:
  * `log_prob(x, outputs)`: log p(x|z) in nats, summed over pixels, for images
    x (..., H, W, C) in [0, 1] and decoder outputs of the same shape -> (...);
  * `mean(outputs)`: E[x|z] as an image in [0, 1] (for figures).
A likelihood may own parameters (a learned scale); they live under
`params["likelihood"]`.
"""
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from vae_jax import objectives
from vae_jax import fields

LIKELIHOODS = fields.choices("likelihood")
SCALES = fields.choices("logistic_scale")  # What a learned logistic scale is shared over.


def _flat(a: jax.Array) -> jax.Array:
  """(..., H, W, C) -> (..., H * W * C): one reduction axis, the same sum as on flat images."""
  return a.reshape(*a.shape[:-3], -1)


class Bernoulli(nn.Module):
  """Independent Bernoulli pixels; the decoder outputs logits.

  Grey levels in [0, 1] are accepted as targets (the PyTorch tutorial's
  choice): the score is then the summed binary cross-entropy, not a
  likelihood of discrete data.
  """

  def log_prob(self, x: jax.Array, outputs: jax.Array) -> jax.Array:
    return objectives.bernoulli_log_likelihood(_flat(x), _flat(outputs))

  def mean(self, outputs: jax.Array) -> jax.Array:
    return nn.sigmoid(outputs)


class Gaussian(nn.Module):
  """N(x; outputs, scale^2) per pixel, with a fixed scale or one learned shared log-scale.

  A density on [0, 1] pixels, not a probability of 8-bit values.
  """

  scale: float = 1.0  # The standard deviation, or its initial value when learned.
  learn_scale: bool = False

  @nn.compact
  def log_prob(self, x: jax.Array, outputs: jax.Array) -> jax.Array:
    init = math.log(self.scale)
    if self.learn_scale:
      log_scale = self.param("log_obs_scale", lambda _: jnp.asarray(init, jnp.float32))
    else:
      log_scale = jnp.asarray(init, jnp.float32)
    return objectives.gaussian_log_likelihood(_flat(x), _flat(outputs), log_scale)

  def mean(self, outputs: jax.Array) -> jax.Array:
    return outputs


class DiscretizedLogistic(nn.Module):
  """8-bit pixels: a logistic on [0, 1] integrated over 256 bins, edge bins open.

  Salimans et al. (2017), PixelCNN++, without the mixture: the decoder outputs
  the location of each sub-pixel; the log-scale is learned, one per channel
  (`share="channel"`) or one per sub-pixel (`share="pixel"`), shared over
  examples. Probabilities of the 256 values sum to 1, so the negative
  log-likelihood of the data in bits per dimension compares with published
  results (e.g. on CIFAR-10).

  Attributes:
    image_shape: (H, W, C) of the images, for the per-pixel scale.
    share: "channel" or "pixel".
    scale: the initial scale (in [0, 1] pixel units).
  """

  image_shape: tuple[int, int, int]
  share: str = "channel"
  scale: float = 1.0

  @nn.compact
  def log_prob(self, x: jax.Array, outputs: jax.Array) -> jax.Array:
    shape = self.image_shape[-1:] if self.share == "channel" else tuple(self.image_shape)
    init = math.log(self.scale)
    log_scale = self.param("log_scale", lambda _, s: jnp.full(s, init, jnp.float32), shape)
    return jnp.sum(_flat(objectives.discretized_logistic_log_prob(x, outputs, log_scale)), -1)

  def mean(self, outputs: jax.Array) -> jax.Array:
    # The logistic's mean, clipped to the pixel range like the distribution's mass.
    return jnp.clip(outputs, 0.0, 1.0)


def from_settings(settings) -> nn.Module:
  """The likelihood a config's `likelihood`, `obs_scale`, `learn_obs_scale`,
  `logistic_scale` and `image_shape` describe."""
  if settings.likelihood == "gaussian":
    return Gaussian(settings.obs_scale, settings.learn_obs_scale)
  if settings.likelihood == "logistic":
    return DiscretizedLogistic(tuple(settings.image_shape), settings.logistic_scale,
                               settings.obs_scale)
  return Bernoulli()


NAMES = {Bernoulli: "bernoulli", Gaussian: "gaussian", DiscretizedLogistic: "logistic"}
