"""What the discrete-latent families share: the grid networks, the autoencoder, the family.

A VQ-VAE (`vqvae`) or an FSQ model (`fsq`) encodes an image to a grid of
vectors z_e (h, w, D), quantises each one (`quantizers`: the nearest of K
code vectors, or rounding per channel) and decodes the grid of quantised
vectors z_q. The networks are the continuous VAE's, so that the two compare
at the same width:

  * conv: the conv VAE's stride-2 convolutions (`networks.conv_stack`) down to
    an H / 2^n x W / 2^n grid, then a 1x1 convolution to D channels; back up
    through its transposed convolutions (`networks.deconv_stack`), from the
    D-channel grid where the VAE starts from a dense layer of z;
  * mlp: the MLP VAE's hidden layers, then one dense layer to M x D numbers, a
    1 x M grid (`code_positions`); back through its decoder from the M x D
    numbers flattened.

p(x | z_q) is the config's likelihood (`likelihoods.from_settings`). Training
minimises, per example, the reconstruction term -log p(x | z_q(x)) (nats,
summed over pixels) plus the quantiser's losses summed over the grid positions
(the `quantizers` module docstring says why sums), averaged over the batch.

Each family here has the capability CODES (`encode_codes`, `decode_codes`,
...); sampling and a bound on log p(x) come with its second stage, the prior
over codes (`vae_jax.families.discrete.prior`), trained by `vae-jax train-prior`.
"""
import dataclasses
import math
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vae_jax import fields as fields_lib
from vae_jax import likelihoods
from vae_jax import networks
from vae_jax.errors import UsageError
from vae_jax.families import base
from vae_jax.families.discrete import quantizers

# The fields both discrete families read (declared once: a field belongs to one declaration).
FIELDS = (
    fields_lib.Field("code_positions", 16, "vqvae, fsq with model=mlp: M, the positions of "
                     "the code grid (1 x M); with model=conv the grid is the last "
                     "convolution's, H / 2^n x W / 2^n", "discrete codes", low=0, strict=True,
                     shapes=True),
)
NUM_RECONSTRUCTIONS_SHOWN = 8  # At most this many test images in the reconstruction figure.


# ----------------------------------------------------------------------------
# The networks: images to a grid of vectors and back.


class ConvGridEncoder(nn.Module):
  """Images (..., H, W, C) -> z_e (..., H / 2^n, W / 2^n, width): the conv VAE's stride-2
  convolutions, then a 1x1 convolution (no activation) to `width` channels."""

  features: Sequence[int]
  width: int
  dtype: jnp.dtype | None = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    h = networks.conv_stack(x, self.features, self.dtype)
    return networks.at_least_float32(nn.Dense(self.width, name="codes", dtype=self.dtype)(h))


class ConvGridDecoder(nn.Module):
  """z_q (..., h, w, D) -> (..., H, W, C) likelihood parameters: the conv VAE's transposed
  convolutions."""

  features: Sequence[int]
  image_shape: tuple[int, int, int]
  dtype: jnp.dtype | None = None

  @nn.compact
  def __call__(self, z: jax.Array) -> jax.Array:
    return networks.deconv_stack(z, self.features, self.image_shape[-1], self.dtype)


class MLPGridEncoder(nn.Module):
  """Images (..., H, W, C) -> z_e (..., 1, positions, width): the MLP VAE's hidden layers,
  then one dense layer to positions x width numbers."""

  hidden: int
  positions: int
  width: int
  dtype: jnp.dtype | None = None
  layers: int = 1
  activation: str = "relu"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    h = networks.hidden_stack(x.reshape(*x.shape[:-3], -1), self.hidden, self.layers,
                              self.activation, self.dtype)
    out = networks.linear(self.positions * self.width, h.shape[-1], "codes", self.dtype)(h)
    return networks.at_least_float32(out).reshape(*out.shape[:-1], 1, self.positions,
                                                  self.width)


class MLPGridDecoder(nn.Module):
  """z_q (..., 1, M, D) -> (..., H, W, C): the MLP VAE's decoder (`networks.MLPDecoder`) of
  the M x D numbers flattened; `hidden=0` is linear."""

  hidden: int
  image_shape: tuple[int, int, int]
  dtype: jnp.dtype | None = None
  layers: int = 1
  activation: str = "relu"

  @nn.compact
  def __call__(self, z: jax.Array) -> jax.Array:
    decoder = networks.MLPDecoder(self.hidden, self.image_shape, self.dtype, self.layers,
                                  self.activation, name="mlp")
    return decoder(z.reshape(*z.shape[:-3], -1))


def grid_networks(settings, width: int) -> tuple[nn.Module, nn.Module, tuple[int, int]]:
  """(encoder, decoder, the grid (h, w)) of a config's network fields, for code vectors of
  `width` numbers."""
  dtype = None if settings.compute_dtype == "float32" else jnp.dtype(settings.compute_dtype)
  image_shape = tuple(settings.image_shape)
  if settings.model == "conv":
    features = tuple(settings.conv_features)
    n = len(features)
    return (ConvGridEncoder(features, width, dtype), ConvGridDecoder(features, image_shape, dtype),
            (image_shape[0] >> n, image_shape[1] >> n))
  depth = dict(layers=settings.hidden_layers, activation=settings.activation)
  hidden = 0 if settings.decoder == "linear" else settings.hidden
  return (MLPGridEncoder(settings.hidden, settings.code_positions, width, dtype, **depth),
          MLPGridDecoder(hidden, image_shape, dtype, **depth), (1, settings.code_positions))


def check(settings) -> None:
  """Raises UsageError when a config's network fields do not suit a discrete family."""
  if settings.model == "conv":
    networks.check_conv(settings)
  if settings.conditional:
    raise UsageError("conditional=True is built for family=vae only")


# ----------------------------------------------------------------------------
# The autoencoder.


class DiscreteAutoencoder(nn.Module):
  """x -> z_e = encoder(x) -> quantiser -> z_q -> decoder -> p(x | z_q).

  `quantizer(z_e, train=, restart_key=)` returns a `quantizers.Quantized`;
  `quantizer.embed(indices)` gives the code vectors of indices.

  Attributes:
    encoder, quantizer, decoder, likelihood: the parts.
    image_shape: (H, W, C).
    grid: (h, w), the code positions of one image.
  """

  encoder: nn.Module
  quantizer: nn.Module
  decoder: nn.Module
  likelihood: nn.Module
  image_shape: tuple[int, int, int]
  grid: tuple[int, int]

  def __call__(self, x: jax.Array, train: bool = False, restart_key: jax.Array | None = None
               ) -> tuple[jax.Array, quantizers.Quantized]:
    """(likelihood parameters (..., H, W, C), the quantiser's output) of images x."""
    quantized = self.quantizer(self.encoder(x), train=train, restart_key=restart_key)
    return self.decoder(quantized.z_q), quantized

  def initialize(self, x: jax.Array) -> jax.Array:
    """Runs every part once (the likelihood's parameters are made on its first use)."""
    outputs, _ = self(x)
    return self.likelihood.log_prob(x, outputs)

  def log_prob(self, x: jax.Array, outputs: jax.Array) -> jax.Array:
    return self.likelihood.log_prob(x, outputs)

  def mean_image(self, outputs: jax.Array) -> jax.Array:
    return self.likelihood.mean(outputs)

  def codes(self, x: jax.Array) -> jax.Array:
    return self.quantizer(self.encoder(x)).indices

  def decode_codes(self, codes: jax.Array) -> jax.Array:
    return self.mean_image(self.decoder(self.quantizer.embed(codes)))

  def encode(self, x: jax.Array) -> jax.Array:
    return self.encoder(x)

  def decode_outputs(self, z: jax.Array) -> jax.Array:
    return self.mean_image(self.decoder(self.quantizer(z).z_q))


# ----------------------------------------------------------------------------
# The family.


@dataclasses.dataclass(frozen=True)
class DiscreteFamily(base.Family):
  """The family interface of a `DiscreteAutoencoder` (see `vae_jax.families.base`); `vqvae`
  and `fsq` differ in their quantiser and their fields.

  Metrics (each epoch, `train_NAME` over the epoch's steps, `test_NAME` over the test
  set): `recon` -log p(x | z_q(x)) in nats per image; `perplexity` and
  `codes_in_use` of the codes the images were given (from `code_counts`);
  `squared_error` (test) the summed squared error of E[x | z_q] per image; and
  for the VQ-VAE `commitment` (the squared quantisation error ||z_e - e_k||^2,
  summed over the grid: the value of the commitment and the codebook loss)
  and, with the EMA codebook, `restarts` (dead codes restarted per step,
  averaged over the epoch). `loss` is what training minimises.

  Attributes:
    module: the autoencoder.
  """

  module: DiscreteAutoencoder

  headline = "recon"
  labels = {"codes_in_use": "codes in use", "squared_error": "squared error"}

  @classmethod
  def check(cls, settings, models: list[dict]) -> None:
    del models
    check(settings)

  @property
  def capabilities(self) -> frozenset[str]:
    return frozenset({base.Capability.CODES})

  @property
  def image_shape(self) -> tuple[int, int, int]:
    return tuple(self.module.image_shape)

  @property
  def code_grid(self) -> tuple[int, int]:
    return tuple(self.module.grid)

  @property
  def stateful(self) -> bool:
    """Whether the quantiser keeps non-gradient state (the EMA codebook)."""
    return False

  def require(self, capability: str, what: str) -> None:
    """As `Family.require`, saying where the prior's capabilities come from."""
    if capability in self.capabilities:
      return
    if capability in (base.Capability.SAMPLE, base.Capability.BOUND):
      raise UsageError(f"{what} needs {capability}, which family {self.name} has only with "
                       "its prior over codes: fit it with vae-jax train-prior --workdir=DIR "
                       "and use DIR/prior (vae_jax.load(DIR + '/prior'))")
    super().require(capability, what)

  # Training.

  def init(self, key, frozen=None):
    del frozen
    dummy = jnp.zeros((1, *self.image_shape), jnp.float32)
    return dict(self.module.init(key, dummy, method=DiscreteAutoencoder.initialize))

  def _apply(self, variables, method, *args, train_state: bool = False):
    """`method` of the module; with `train_state`, (its result, the non-gradient state after)."""
    if not (train_state and self.stateful):
      out = self.module.apply(variables, *args, method=method)
      return (out, {}) if train_state else out
    out, state = self.module.apply(variables, *args, method=method,
                                   mutable=[quantizers.COLLECTION])
    return out, {quantizers.COLLECTION: state[quantizers.COLLECTION]}

  def loss(self, variables, batch, key, step, hyper):
    x = batch["x"]
    restart_key = key if self.stateful else None

    def run(m):
      outputs, quantized = m(x, train=True, restart_key=restart_key)
      return m.log_prob(x, outputs), quantized

    (log_px, quantized), state = self._apply(variables, run, train_state=True)
    per_example = -log_px + jnp.sum(quantized.loss, axis=(-2, -1))
    loss = jnp.mean(per_example)
    metrics = {"loss": loss, "recon": -jnp.mean(log_px),
               "code_counts": quantizers.code_counts(quantized.indices,
                                                     self.num_codes).astype(jnp.float32),
               **self._quantizer_metrics(quantized)}
    return loss, metrics, state

  def _quantizer_metrics(self, quantized: quantizers.Quantized) -> dict:
    """A quantiser's own metrics of a batch (scalars): none by default."""
    del quantized
    return {}

  def epoch_metrics(self, means):
    """The code counts' means become the codebook's `perplexity` and `codes_in_use`."""
    means = dict(means)
    counts = means.pop("code_counts", None)
    record = super().epoch_metrics(means)
    if counts is not None:
      counts = np.asarray(counts, np.float64)
      record["perplexity"] = float(quantizers.perplexity(counts))
      record["codes_in_use"] = int(np.sum(counts > 0))
    return record

  # Evaluation.

  def reconstruction_terms(self, variables, x: jax.Array) -> dict[str, jax.Array]:
    """Per image of x (E, H, W, C): `recon` -log p(x | z_q(x)) (E,), `squared_error` (E,),
    `codes` int32 (E, h, w) and the quantiser's `commitment` (E,) summed over the grid."""
    def run(m):
      outputs, quantized = m(x)
      return m.log_prob(x, outputs), m.mean_image(outputs), quantized
    log_px, mean, quantized = self._apply(variables, run)
    return {"recon": -log_px, "squared_error": jnp.sum(jnp.square(mean - x), axis=(1, 2, 3)),
            "codes": quantized.indices,
            "commitment": jnp.sum(quantized.commitment, axis=(-2, -1))}

  def test_terms(self, variables, x, y, key):
    """`recon`, `squared_error`, the quantiser's terms (E,) and `code_counts` (E, K): each
    image's use of each code, in the narrowest integer type that holds it."""
    terms = self.reconstruction_terms(variables, x)
    codes = terms.pop("codes")
    counts = jax.vmap(lambda c: quantizers.code_counts(c, self.num_codes))(codes)
    positions = math.prod(self.code_grid)
    narrow = jnp.uint8 if positions < 2 ** 8 else jnp.int16 if positions < 2 ** 15 else jnp.int32
    kept = {name: terms[name] for name in ("recon", "squared_error", *self._test_extras())}
    return {**kept, "code_counts": counts.astype(narrow)}

  def _test_extras(self) -> tuple[str, ...]:
    """The quantiser's terms of `reconstruction_terms` that test_terms keeps."""
    return ()

  def figures(self, variables, x, y, key):
    """`reconstruction`: test images over their quantised reconstructions (2, R)."""
    recon = self.decode_outputs(variables, self.encoder_outputs(variables, x))
    return {"reconstruction": jnp.stack([x, recon])}

  # Codes.

  def encode_codes(self, variables, x):
    return self._apply(variables, DiscreteAutoencoder.codes, x)

  def decode_codes(self, variables, codes):
    return self._apply(variables, DiscreteAutoencoder.decode_codes, codes)

  def encoder_outputs(self, variables, x):
    return self._apply(variables, DiscreteAutoencoder.encode, x)

  def decode_outputs(self, variables, z):
    return self._apply(variables, DiscreteAutoencoder.decode_outputs, z)

  # Describing a run.

  def describe(self, params) -> str:
    """One line: the networks, the grid of codes, the likelihood, the parameter count."""
    module = self.module
    shape = "x".join(map(str, module.image_shape))
    nets = f"{type(module.encoder).__name__}/{type(module.decoder).__name__}"
    h, w = self.code_grid
    return (f"{self.title} {nets}, {shape} images, a {h}x{w} grid of {self.num_codes:,} codes "
            f"({self.quantizer_text()}; {type(module.likelihood).__name__}, "
            f"{base.parameter_count(params):,} parameters)")

  title = "discrete autoencoder"

  def quantizer_text(self) -> str:
    """The quantiser in a few words."""
    return type(self.module.quantizer).__name__


def build_module(settings, quantizer: nn.Module, width: int) -> DiscreteAutoencoder:
  """The autoencoder of a config's network fields around `quantizer` (vectors of `width`)."""
  encoder, decoder, grid = grid_networks(settings, width)
  return DiscreteAutoencoder(encoder, quantizer, decoder, likelihoods.from_settings(settings),
                             tuple(settings.image_shape), grid)


def refuse_module(name: str, module) -> None:
  """A discrete family builds its networks from the config; a user's module is refused."""
  if module is not None:
    raise UsageError(f"family {name} builds its networks from the config (model=mlp|conv); "
                     "a user-defined module is not supported")
