"""The VAE: an encoder q(z|x), a decoder and a likelihood p(x|z), and the reparameterisation.

Images are `(..., H, W, C)` floats in [0, 1]. The VAE composes any flax
encoder (images -> mean, logvar of shape (..., latents)) with any decoder
(z -> distribution parameters of shape (..., H, W, C)) and one of the
likelihoods in `vae_jax.likelihoods`. Two families are built from a config:

  * `model=mlp`: the PyTorch tutorial's MLP (784-400-20-400-784 on MNIST),
    flattening the image inside itself;
  * `model=conv`: the convolutional VAE of the Keras and TensorFlow tutorials:
    stride-2 3x3 convolutions down, a dense layer to the Gaussian, and a
    dense layer to a feature map that stride-2 transposed convolutions bring
    back to the image size.

`Architecture` holds the config fields that describe a network (declared in
`vae_jax.schema`): `from_config` builds from it.

A conditional VAE (`conditional=True`, `VAE.num_classes` > 0) gives the
encoder and the decoder each example's label as a vector (`VAE.label_vector`:
one-hot for integer labels): the networks are called as `encoder(x, label)`
and `decoder(z, label)`, label (..., num_classes) float32 with the leading
axes of x or z. The built-in ones concatenate it to the flattened image (MLP
encoder), as constant channels (conv encoder), or to z (both decoders).
"""
import dataclasses
import math
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from vae_jax import convolution
from vae_jax import likelihoods
from vae_jax import objectives
from vae_jax import posteriors
from vae_jax import priors
from vae_jax import schema
from vae_jax.errors import UsageError
from vae_jax.objectives import reparameterize  # pylint: disable=unused-import (re-exported)

MODELS = schema.choices("model")
LOGVAR_MIN, LOGVAR_MAX = -30.0, 20.0  # The encoder's log-variance is held in this range.


# ----------------------------------------------------------------------------
# Networks.


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


def given(y: jax.Array | None) -> dict:
  """`y=y` as keyword arguments when there are labels, else none: so that an
  unconditional VAE (or a user's subclass written before labels) is called as always."""
  return {} if y is None else {"y": y}


def with_label(inputs: jax.Array, label: jax.Array | None) -> jax.Array:
  """inputs (..., F) and a label vector (..., K) -> (..., F + K); `inputs` alone for None."""
  if label is None:
    return inputs
  return jnp.concatenate([inputs, label.astype(inputs.dtype)], axis=-1)


def _split_stats(stats: jax.Array) -> tuple[jax.Array, jax.Array]:
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
    return _split_stats(linear(2 * self.latents, self.hidden, "stats", self.dtype)(h))


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
    return _split_stats(nn.Dense(2 * self.latents, name="stats", dtype=self.dtype)(x))


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
    x = x.reshape(*x.shape[:-1], *start)
    widths = [*reversed(self.features[:-1]), c]
    for i, f in enumerate(widths):
      # flax's ConvTranspose(f, (3, 3), strides=2, padding="SAME") as the convolution it
      # runs (the same parameters, initialisation and XLA op), so that on CPU it can be
      # one matrix product (`vae_jax.convolution`).
      x = nn.Conv(f, (3, 3), input_dilation=2, padding=((2, 1), (2, 1)), name=f"deconv{i}",
                  dtype=self.dtype, conv_general_dilated=convolution.conv_general_dilated)(x)
      x = nn.relu(x) if i + 1 < len(widths) else x
    return x


class VAE(nn.Module):
  """A VAE: any encoder, any decoder, one likelihood; a prior and a posterior family.

  The model computes its own terms (`elbo_terms`, `log_weights`, `kl_per_dimension`),
  which training and evaluation ask for, so that a family with another prior,
  posterior or objective changes them here (in a subclass, or through `prior` and
  `posterior`) and `test_recon`/`test_kl` keep their meaning.

  Attributes:
    encoder: images (..., H, W, C) in [0, 1] -> (mean, logvar), each (..., latents).
    decoder: z (..., latents) -> distribution parameters (..., H, W, C).
    latents: dimension of z.
    image_shape: (H, W, C) of one image; `train_and_evaluate` fills it from the data.
    likelihood: a module of `vae_jax.likelihoods` scoring x under the decoder's outputs.
    prior: p(z), a module with `log_prob(z, encode) (..., L) -> (...)` and
      `sample(key, num, encode) -> (num, L)` (`encode` is the VAE's encoder,
      which the VampPrior needs and others ignore), and
      `kl_per_dimension(mean, logvar)` where KL(q || p) has a closed form;
      None: N(0, I) (`vae_jax.priors` has N(0, I), mixtures and the VampPrior).
    posterior: q(z|x) given the encoder's (mean, logvar), a reparameterised
      family: a module with `transform(eps, mean, logvar) -> (z, log_q)`
      (eps ~ N(0, I) of z's shape; log q(z|x) exact, with a flow's
      log-determinant) and, where it is cheap, `log_prob(z, mean, logvar)`;
      None: the diagonal Gaussian `mean + exp(logvar / 2) * eps`
      (`vae_jax.posteriors` has it and the IAF).
    num_classes: K > 0 makes the VAE conditional on labels 0 .. K - 1:
      q(z|x, y) and p(x|z, y), with p(z) the prior's. Every method that reads x
      or decodes z then takes the labels `y` (..., int, or (..., K) float
      vectors, `label_vector`), and the encoder and the decoder are called as
      `encoder(x, label)`, `decoder(z, label)` with label (..., K) float32.
      0: unconditional, the networks called without a label.
  """

  encoder: nn.Module
  decoder: nn.Module
  latents: int
  image_shape: tuple[int, int, int] | None = None
  likelihood: nn.Module = dataclasses.field(default_factory=likelihoods.Bernoulli)
  prior: nn.Module | None = None
  posterior: nn.Module | None = None
  num_classes: int = 0

  def __call__(self, x: jax.Array, key: jax.Array, y: jax.Array | None = None
               ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Decoder outputs (..., H, W, C) for one z ~ q(z|x), and q's mean and logvar (..., L)."""
    mean, logvar = self.encode(x, **given(y))
    return self.decode(reparameterize(key, mean, logvar), **given(y)), mean, logvar

  def label_vector(self, y: jax.Array | None, lead: tuple[int, ...]) -> jax.Array | None:
    """What the networks get for labels `y`: None for an unconditional model; else
    (*lead, K) float32: one-hot for integer labels (...), a given (..., K) float
    vector as it is (a mix of classes, as interpolation between labels uses),
    broadcast to the leading axes `lead` of the network's input."""
    if not self.num_classes:
      if y is not None:
        raise ValueError("this VAE is not conditional (num_classes=0); it takes no labels")
      return None
    if y is None:
      raise ValueError(f"this VAE is conditional on {self.num_classes} classes; pass the labels y")
    y = jnp.asarray(y)
    vector = (jax.nn.one_hot(y, self.num_classes) if jnp.issubdtype(y.dtype, jnp.integer)
              else y.astype(jnp.float32))
    return jnp.broadcast_to(vector, (*lead, self.num_classes))

  def encode(self, x: jax.Array, y: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """x (..., H, W, C) (and labels y (...) of a conditional model) -> mean, logvar
    (..., latents), float32 or wider.

    The log-variance is held in [LOGVAR_MIN, LOGVAR_MAX]: a standard deviation
    between 3e-7 and 2e4, far outside what a trained encoder gives (so the
    seed's numbers are unchanged), but short of the exp overflows and divisions
    by zero that turn a run's losses into NaN.
    """
    label = self.label_vector(y, x.shape[:-3])
    mean, logvar = self.encoder(x) if label is None else self.encoder(x, label)
    logvar = jnp.clip(at_least_float32(logvar), LOGVAR_MIN, LOGVAR_MAX)
    return at_least_float32(mean), logvar

  def decode(self, z: jax.Array, y: jax.Array | None = None) -> jax.Array:
    """z (..., latents) (and labels y of a conditional model) -> distribution
    parameters (..., H, W, C), float32 or wider."""
    label = self.label_vector(y, z.shape[:-1])
    return at_least_float32(self.decoder(z) if label is None else self.decoder(z, label))

  def log_likelihood(self, x: jax.Array, outputs: jax.Array) -> jax.Array:
    """log p(x|z) in nats, summed over pixels: (..., H, W, C) twice -> (...)."""
    return self.likelihood.log_prob(x, outputs)

  def mean_image(self, outputs: jax.Array) -> jax.Array:
    """E[x|z] in [0, 1] from decoder outputs."""
    return self.likelihood.mean(outputs)

  def initialize(self, x: jax.Array, key: jax.Array, **labels) -> jax.Array:
    """Touches every submodule, so that `init` creates all parameters.

    `init_params` calls the model's own `initialize`: a subclass with more
    submodules (a learned prior, a flow) overrides it or `elbo_terms`.
    """
    return self.elbo_terms(x, key, **labels)["loss"]

  # The terms training and evaluation ask the model for.

  def sample_posterior(self, key: jax.Array, mean: jax.Array, logvar: jax.Array
                       ) -> tuple[jax.Array, jax.Array | None]:
    """z ~ q(z|x) (..., L), and log q(z|x) (...) where the posterior family gives it
    (None for the default diagonal Gaussian, whose KL is analytic)."""
    if self.posterior is None:
      return reparameterize(key, mean, logvar), None
    return self.posterior.transform(jax.random.normal(key, mean.shape, mean.dtype), mean, logvar)

  def log_posterior(self, z: jax.Array, mean: jax.Array, logvar: jax.Array) -> jax.Array:
    """log q(z|x) summed over latents: (..., L) -> (...)."""
    if self.posterior is None:
      return objectives.gaussian_log_density(z, mean, logvar)
    return self.posterior.log_prob(z, mean, logvar)

  def log_prior(self, z: jax.Array) -> jax.Array:
    """log p(z) summed over latents: (..., L) -> (...)."""
    if self.prior is None:
      return objectives.gaussian_log_density(z, 0.0, 0.0)
    return self.prior.log_prob(z, encode=self.encode)

  def sample_prior(self, key: jax.Array, num: int, temperature: float = 1.0) -> jax.Array:
    """num draws z ~ p(z): (num, latents); with N(0, I), `temperature` scales them
    (other priors have temperature 1 only)."""
    if self.prior is None:
      z = jax.random.normal(key, (num, self.latents))
      return z if temperature == 1.0 else temperature * z
    if temperature != 1.0:
      raise ValueError(f"temperature applies to Gaussian priors; {type(self.prior).__name__} "
                       "samples at temperature 1 only")
    return self.prior.sample(key, num, encode=self.encode)

  def kl_per_dimension(self, mean: jax.Array, logvar: jax.Array) -> jax.Array | None:
    """KL(q(z|x) || p(z)) per latent (..., L) where it has a closed form, else None."""
    if self.posterior is not None:
      return None
    if self.prior is None:
      return objectives.kl_per_dimension(mean, logvar)
    analytic = getattr(self.prior, "kl_per_dimension", None)
    return None if analytic is None else analytic(mean, logvar)

  def elbo_terms(self, x: jax.Array, key: jax.Array, y: jax.Array | None = None
                 ) -> dict[str, jax.Array]:
    """The single-sample negative ELBO of each example, split into its terms.

    Args:
      x: images (B, H, W, C) in [0, 1].
      key: the key of the one draw of z per example.
      y: labels (B,), for a conditional model only.

    Returns:
      dict of (B,) arrays in nats: `loss` = `recon` + `kl`, `recon` = -log p(x|z),
      `kl` = KL(q(z|x) || p(z)), analytic where the families allow, else its
      one-sample estimate log q(z|x) - log p(z); and `kl_per_dimension` (B, L)
      where the KL is analytic (free bits need it).
    """
    mean, logvar = self.encode(x, **given(y))
    z, log_q = self.sample_posterior(key, mean, logvar)
    recon = -self.log_likelihood(x, self.decode(z, **given(y)))
    kl_dims = self.kl_per_dimension(mean, logvar)
    terms = {"recon": recon}
    if kl_dims is not None:
      terms["kl_per_dimension"] = kl_dims
      terms["kl"] = jnp.sum(kl_dims, axis=-1)
    else:
      log_q = self.log_posterior(z, mean, logvar) if log_q is None else log_q
      terms["kl"] = log_q - self.log_prior(z)
    terms["loss"] = recon + terms["kl"]
    return terms

  def log_weights(self, x: jax.Array, mean: jax.Array, logvar: jax.Array, keys: jax.Array,
                  index: jax.Array, y: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """log p(x, z) - log q(z|x) and log p(x|z) for samples `index` (C,) of each example.

    Sample s of example b draws from `fold_in(keys[b], s)`, so results do not
    depend on how the samples are chunked.

    Args:
      x: images (B, H, W, C); mean, logvar: the encoder's (B, L); keys: (B,);
      y: labels (B,) of a conditional model.

    Returns:
      Two (B, C) arrays.
    """
    (batch, latents), count = mean.shape, len(index)
    draw = lambda key, s: jax.random.normal(jax.random.fold_in(key, s), (latents,), mean.dtype)
    # One vmap over the (example, sample) pairs: compiles about twice as fast as two nested.
    eps = jax.vmap(draw)(jnp.repeat(keys, count), jnp.tile(index, batch))
    eps = eps.reshape(batch, count, latents)
    if self.posterior is None:
      z = mean[:, None] + jnp.exp(0.5 * logvar[:, None]) * eps
      log_q = objectives.gaussian_log_density(z, mean[:, None], logvar[:, None])
    else:
      z, log_q = self.posterior.transform(eps, mean[:, None], logvar[:, None])
    # All (example, sample) pairs through the decoder at once: one large matmul.
    label = self.label_vector(None if y is None else jnp.asarray(y)[:, None], (batch, count))
    label = None if label is None else label.reshape(batch * count, -1)
    outputs = self.decode(z.reshape(batch * count, latents), **given(label))
    outputs = outputs.reshape(batch, count, *outputs.shape[1:])
    log_lik = self.log_likelihood(x[:, None], outputs)
    return log_lik + self.log_prior(z) - log_q, log_lik

  # The per-sample terms of the many-sample objectives (`vae_jax.estimators`).

  def draw(self, x: jax.Array, key: jax.Array, num_samples: int, y: jax.Array | None = None
           ) -> tuple[jax.Array, jax.Array]:
    """K draws z ~ q(z|x) per example, reparameterised: z (K, B, L) and log q(z|x) (K, B)."""
    mean, logvar = self.encode(x, **given(y))
    eps = jax.random.normal(key, (num_samples, *mean.shape), mean.dtype)
    if self.posterior is None:
      z = mean + jnp.exp(0.5 * logvar) * eps
      return z, objectives.gaussian_log_density(z, mean, logvar)
    return self.posterior.transform(eps, mean, logvar)

  def log_q_at(self, x: jax.Array, z: jax.Array, y: jax.Array | None = None) -> jax.Array:
    """log q(z|x) of given z (K, B, L) for images x (B, ...): (K, B)."""
    mean, logvar = self.encode(x, **given(y))
    return self.log_posterior(z, mean, logvar)

  def log_px_at(self, x: jax.Array, z: jax.Array, y: jax.Array | None = None) -> jax.Array:
    """log p(x|z) of z (K, B, L): (K, B); all K * B codes through the decoder at once."""
    num, batch, latents = z.shape
    label = self.label_vector(y, (num, batch))
    label = None if label is None else label.reshape(num * batch, -1)
    outputs = self.decode(z.reshape(num * batch, latents), **given(label))
    return self.log_likelihood(x, outputs.reshape(num, batch, *outputs.shape[1:]))

  def kl(self, mean: jax.Array, logvar: jax.Array) -> jax.Array | None:
    """The analytic KL(q(z|x) || p(z)) summed over latents (...), or None."""
    kl_dims = self.kl_per_dimension(mean, logvar)
    return None if kl_dims is None else jnp.sum(kl_dims, axis=-1)


# ----------------------------------------------------------------------------
# The config's model fields.


# The schema's "model" fields as a frozen dataclass (`Architecture` adds the methods).
_ArchitectureFields = dataclasses.make_dataclass(
    "_ArchitectureFields",
    [(f.name, f.kind, dataclasses.field(default=f.default)) for f in schema.group("model")],
    frozen=True)


class Architecture(_ArchitectureFields):
  """The config fields that describe the network (the schema's "model" group), read
  by `from_config` and checked by `check`."""

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict, image_shape=None) -> "Architecture":
    """The architecture a config describes; `image_shape` overrides the config's."""
    values = {f.name: config.get(f.name, f.default) for f in dataclasses.fields(cls)}
    values["image_shape"] = tuple(image_shape or values["image_shape"])
    values["conv_features"] = tuple(values["conv_features"])
    values["layer_latents"] = tuple(values["layer_latents"])
    return cls(**values)

  def check(self) -> None:
    """Raises UsageError naming the first invalid field."""
    for f in schema.group("model"):
      if not f.resolved:
        f.check(getattr(self, f.name))
    if self.model == "conv":
      self._check_conv()
    if self.conditional and self.prior == "vamp":
      raise UsageError("conditional=True with prior=vamp is not built: the VampPrior runs the "
                       "encoder on pseudo-inputs that have no label; use prior=normal or mog")
    self._check_layers()

  def _check_layers(self) -> None:
    layers, sizes = self.stochastic_layers, self.layer_latents
    if sizes and (len(sizes) != layers or min(sizes) < 1 or sizes[0] != self.latents):
      raise UsageError(f"layer_latents must give {layers} positive sizes, the first equal to "
                       f"latents={self.latents} (the layer next to the data), got {sizes}")
    if layers == 1:
      return
    mlp = (("hidden_layers", self.hidden_layers, 1), ("activation", self.activation, "relu"))
    for name, value, fits in (("prior", self.prior, "normal"),
                              ("posterior", self.posterior, "gaussian"),
                              ("conditional", self.conditional, False),
                              *(mlp if self.model == "mlp" else ())):
      if value != fits:
        raise UsageError(f"stochastic_layers={layers} is built for {name}={fits} only, "
                         f"not {name}={value}")

  def _check_conv(self) -> None:
    if not self.conv_features or min(self.conv_features) < 1:
      raise UsageError(f"conv_features must be positive channel counts, got {self.conv_features}")
    if self.decoder != "mlp":
      raise UsageError("decoder=linear is an option of model=mlp only")
    h, w, _ = self.image_shape
    factor = 2 ** len(self.conv_features)
    if h % factor or w % factor:
      raise UsageError(f"model=conv with {len(self.conv_features)} stride-2 layers needs image "
                       f"height and width divisible by {factor}; the images are {h}x{w} "
                       f"(set --config.image_size to a multiple of {factor})")


def from_config(config: ml_collections.ConfigDict, image_shape=None) -> VAE:
  """Builds the VAE a config describes, for images of `image_shape` (H, W, C)."""
  arch = Architecture.from_config(config, image_shape)
  arch.check()
  dtype = None if arch.compute_dtype == "float32" else jnp.dtype(arch.compute_dtype)
  if arch.stochastic_layers > 1:
    from vae_jax import hierarchy  # pylint: disable=g-import-not-at-top (it builds on VAE)
    return hierarchy.from_architecture(arch, dtype, _likelihood(arch))
  if arch.model == "conv":
    encoder = ConvEncoder(arch.conv_features, arch.latents, dtype)
    decoder = ConvDecoder(arch.conv_features, arch.image_shape, dtype)
  else:
    depth = dict(layers=arch.hidden_layers, activation=arch.activation)
    encoder = MLPEncoder(arch.hidden, arch.latents, dtype, **depth)
    hidden = 0 if arch.decoder == "linear" else arch.hidden
    decoder = MLPDecoder(hidden, arch.image_shape, dtype, **depth)
  if arch.conditional and arch.num_classes < 1:
    raise UsageError("conditional=True needs num_classes, which a run resolves from the "
                     "data's labels")
  return VAE(encoder, decoder, arch.latents, arch.image_shape, _likelihood(arch),
             PRIORS[arch.prior](arch), POSTERIORS[arch.posterior](arch),
             arch.num_classes if arch.conditional else 0)


# The families a config names: one line each. None is the built-in N(0, I) prior and
# diagonal Gaussian posterior, computed in `VAE` itself (the seed's numbers, op for op).
PRIORS = {
    "normal": lambda arch: None,
    "mog": lambda arch: priors.MixtureOfGaussians(arch.latents, arch.prior_components),
    "vamp": lambda arch: priors.VampPrior(arch.latents, arch.prior_components, arch.image_shape),
}
POSTERIORS = {
    "gaussian": lambda arch: None,
    "iaf": lambda arch: posteriors.IAF(arch.latents, arch.flow_steps, arch.flow_hidden),
}


def _likelihood(arch: Architecture) -> nn.Module:
  if arch.likelihood == "gaussian":
    return likelihoods.Gaussian(arch.obs_scale, arch.learn_obs_scale)
  if arch.likelihood == "logistic":
    return likelihoods.DiscretizedLogistic(arch.image_shape, arch.logistic_scale, arch.obs_scale)
  return likelihoods.Bernoulli()


def init_params(model: VAE, key: jax.Array) -> dict:
  """Initial parameters; `key` drives the weight init only."""
  init_key, sample_key = jax.random.split(key)
  dummy = jnp.zeros((1, *model.image_shape), jnp.float32)
  labels = given(jnp.zeros((1,), jnp.int32) if getattr(model, "num_classes", 0) else None)
  return model.init(init_key, dummy, sample_key, method=type(model).initialize,
                    **labels)["params"]


_LIKELIHOOD_NAMES = {likelihoods.Bernoulli: "bernoulli", likelihoods.Gaussian: "gaussian",
                     likelihoods.DiscretizedLogistic: "logistic"}


def _qualified(cls: type) -> str:
  return f"{cls.__module__}.{cls.__qualname__}"


def signature(model: VAE) -> dict[str, str]:
  """What config.json records of a user-defined VAE, so that `load` can tell another
  class, network, likelihood, prior or posterior from the one it was trained with."""
  part = lambda m, default: default if m is None else _qualified(type(m))
  return {"vae_class": _qualified(type(model)),
          "network": f"{type(model.encoder).__name__}/{type(model.decoder).__name__}",
          "likelihood": _LIKELIHOOD_NAMES.get(type(model.likelihood))
                        or _qualified(type(model.likelihood)),
          "prior": part(model.prior, "normal"), "posterior": part(model.posterior, "gaussian")}


def parameter_count(params) -> int:
  return sum(x.size for x in jax.tree.leaves(params))


def describe(model: VAE, params) -> str:
  """One line: the networks, the likelihood and the parameter count."""
  shape = "x".join(map(str, model.image_shape))
  nets = f"{type(model.encoder).__name__}/{type(model.decoder).__name__}"
  condition = f", conditional on {model.num_classes} classes" if model.num_classes else ""
  sizes = getattr(model, "layer_latents", ())
  latents = (f"{len(sizes)} stochastic layers of {'/'.join(map(str, sizes))} latents"
             if len(sizes) > 1 else f"{model.latents} latents")
  return (f"VAE {nets}, {shape} images, {latents}{condition} "
          f"({type(model.likelihood).__name__}, {parameter_count(params):,} parameters)")
