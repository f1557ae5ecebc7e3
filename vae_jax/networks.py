"""The networks the families build from a config: the tutorial's MLP and the tutorials' conv nets.

  * `MLPEncoder`, `MLPDecoder`: the PyTorch tutorial's MLP (784-400-20-400-784
    on MNIST), flattening the image inside themselves; `hidden_layers` deep,
    relu, tanh or gated;
  * `ConvEncoder`, `ConvDecoder`: the convolutional VAE of the Keras and
    TensorFlow tutorials: stride-2 3x3 convolutions down, a dense layer to the
    Gaussian, and a dense layer to a feature map that stride-2 transposed
    convolutions bring back to the image size.

Encoders map images (..., H, W, C) in [0, 1] to a Gaussian's mean and
log-variance (..., latents); decoders map z (..., latents) to the likelihood's
parameters (..., H, W, C). A conditional model's networks also take a label
vector (..., num_classes) float32 (`with_label`: concatenated to the flattened
image or to z, or as constant channels of the conv encoder's input).
"""
import math
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from vae_jax import convolution
from vae_jax.errors import UsageError


def linear(features: int, fan_in: int, name: str, dtype=None) -> nn.Dense:
  """A dense layer initialised like PyTorch's nn.Linear: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).

  The tutorial's initialisation, kept so results compare: on Fashion-MNIST it
  ends 10 epochs about 0.6 nats lower than flax's default (LeCun normal
  kernels, zero biases).
  """
  bound = 1.0 / math.sqrt(fan_in)
  init = nn.initializers.uniform(2 * bound)
  shifted = lambda key, shape, dtype=jnp.float32: init(key, shape, dtype) - bound
  return nn.Dense(features, kernel_init=shifted, bias_init=shifted, name=name, dtype=dtype)


def at_least_float32(x: jax.Array) -> jax.Array:
  """bfloat16 results back in float32, where losses and KLs are accumulated (float64 stays)."""
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def with_label(inputs: jax.Array, label: jax.Array | None) -> jax.Array:
  """inputs (..., F) and a label vector (..., K) -> (..., F + K); `inputs` alone for None."""
  if label is None:
    return inputs
  return jnp.concatenate([inputs, label.astype(inputs.dtype)], axis=-1)


def split_stats(stats: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(..., 2 L) -> mean, logvar (..., L), in float32 or wider whatever the compute dtype."""
  mean, logvar = jnp.split(at_least_float32(stats), 2, axis=-1)
  return mean, logvar


def hidden_stack(x: jax.Array, hidden: int, layers: int, activation: str, dtype) -> jax.Array:
  """`layers` dense layers of `hidden` units (the first named "hidden", the next
  "hidden_2", ...): relu or tanh, or gated (GatedDense, Dauphin et al. 2017 as the
  VampPrior paper uses it: (W x + b) * sigmoid(V x + c), the two in one matmul)."""
  for i in range(layers):
    name = "hidden" if i == 0 else f"hidden_{i + 1}"
    if activation == "gated":
      value, gate = jnp.split(linear(2 * hidden, x.shape[-1], name, dtype)(x), 2, axis=-1)
      x = value * nn.sigmoid(gate)
    else:
      x = ACTIVATIONS[activation](linear(hidden, x.shape[-1], name, dtype)(x))
  return x


ACTIVATIONS = {"relu": nn.relu, "tanh": jnp.tanh}


class MLPEncoder(nn.Module):
  """q(z|x): images (..., H, W, C) -> mean, logvar (..., latents), through `layers`
  hidden layers (one ReLU layer: the tutorial's)."""

  hidden: int
  latents: int
  dtype: jnp.dtype | None = None  # Compute dtype; parameters stay float32.
  layers: int = 1
  activation: str = "relu"

  @nn.compact
  def __call__(self, x: jax.Array, label: jax.Array | None = None
               ) -> tuple[jax.Array, jax.Array]:
    x = with_label(x.reshape(*x.shape[:-3], -1), label)
    h = hidden_stack(x, self.hidden, self.layers, self.activation, self.dtype)
    # One matmul for both heads (the tutorial's fc21 and fc22 side by side).
    return split_stats(linear(2 * self.latents, self.hidden, "stats", self.dtype)(h))


class MLPDecoder(nn.Module):
  """z (..., latents) -> (..., H, W, C) distribution parameters through `layers`
  hidden layers; `hidden=0` is linear (W z + b)."""

  hidden: int
  image_shape: tuple[int, int, int]
  dtype: jnp.dtype | None = None
  layers: int = 1
  activation: str = "relu"

  @nn.compact
  def __call__(self, z: jax.Array, label: jax.Array | None = None) -> jax.Array:
    z = with_label(z, label)
    if self.hidden:
      z = hidden_stack(z, self.hidden, self.layers, self.activation, self.dtype)
    out = linear(math.prod(self.image_shape), z.shape[-1], "out", self.dtype)(z)
    return out.reshape(*out.shape[:-1], *self.image_shape)


def conv_stack(x: jax.Array, features: Sequence[int], dtype=None) -> jax.Array:
  """Stride-2 3x3 convolutions with ReLU, named "conv0", "conv1", ... in the calling module:
  (..., H, W, C) -> (..., H / 2^n, W / 2^n, features[-1]) for n = len(features)."""
  for i, f in enumerate(features):
    x = nn.relu(nn.Conv(f, (3, 3), strides=2, name=f"conv{i}", dtype=dtype,
                        conv_general_dilated=convolution.conv_general_dilated)(x))
  return x


class ConvEncoder(nn.Module):
  """q(z|x): stride-2 3x3 convolutions with ReLU, then one dense layer to mean and logvar.

  Images (..., H, W, C) -> (..., latents) each; each convolution halves H and W.
  """

  features: Sequence[int]
  latents: int
  dtype: jnp.dtype | None = None

  @nn.compact
  def __call__(self, x: jax.Array, label: jax.Array | None = None
               ) -> tuple[jax.Array, jax.Array]:
    if label is not None:  # One constant channel per class.
      planes = jnp.broadcast_to(label[..., None, None, :], (*x.shape[:-1], label.shape[-1]))
      x = with_label(x, planes)
    x = conv_stack(x, self.features, self.dtype).reshape(*x.shape[:-3], -1)
    return split_stats(nn.Dense(2 * self.latents, name="stats", dtype=self.dtype)(x))


class ConvDecoder(nn.Module):
  """z (..., latents) -> (..., H, W, C): a dense layer to a feature map of H / 2^n x W / 2^n,
  then n stride-2 3x3 transposed convolutions (ReLU between), the last to C channels."""

  features: Sequence[int]
  image_shape: tuple[int, int, int]
  dtype: jnp.dtype | None = None

  @nn.compact
  def __call__(self, z: jax.Array, label: jax.Array | None = None) -> jax.Array:
    (h, w, c), n = self.image_shape, len(self.features)
    start = (h >> n, w >> n, self.features[-1])
    x = nn.relu(nn.Dense(math.prod(start), name="project", dtype=self.dtype)(with_label(z, label)))
    return deconv_stack(x.reshape(*x.shape[:-1], *start), self.features, c, self.dtype)


def deconv_stack(x: jax.Array, features: Sequence[int], channels: int, dtype=None) -> jax.Array:
  """The way back up of `conv_stack`: stride-2 3x3 transposed convolutions named "deconv0",
  "deconv1", ... in the calling module, to features[-2], ..., features[0], then `channels`
  (ReLU between, none after the last): (..., h, w, F) -> (..., h 2^n, w 2^n, channels)."""
  widths = [*reversed(features[:-1]), channels]
  for i, f in enumerate(widths):
    # flax's ConvTranspose(f, (3, 3), strides=2, padding="SAME") as the convolution it
    # runs (the same parameters, initialisation and XLA op), so that on CPU it can be
    # one matrix product (`vae_jax.convolution`).
    x = nn.Conv(f, (3, 3), input_dilation=2, padding=((2, 1), (2, 1)), name=f"deconv{i}",
                dtype=dtype, conv_general_dilated=convolution.conv_general_dilated)(x)
    x = nn.relu(x) if i + 1 < len(widths) else x
  return x


def check_conv(settings) -> None:
  """Raises UsageError when the conv networks cannot take the config's images."""
  if not settings.conv_features or min(settings.conv_features) < 1:
    raise UsageError(f"conv_features must be positive channel counts, got "
                     f"{tuple(settings.conv_features)}")
  if settings.decoder != "mlp":
    raise UsageError("decoder=linear is an option of model=mlp only")
  if settings.image_shape is None:  # Checked again once the data is read.
    return
  h, w, _ = settings.image_shape
  factor = 2 ** len(settings.conv_features)
  if h % factor or w % factor:
    raise UsageError(f"model=conv with {len(settings.conv_features)} stride-2 layers needs image "
                     f"height and width divisible by {factor}; the images are {h}x{w} "
                     f"(set --config.image_size to a multiple of {factor})")
