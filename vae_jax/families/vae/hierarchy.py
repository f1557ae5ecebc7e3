"""A top-down hierarchy of L Gaussian layers (`--config.stochastic_layers=L`), MLP or conv.

The generative model of the MLP form (`model=mlp`), with layer 1 next to the
data and sizes n_1 .. n_L (`layer_latents`; n_1 = `latents`):

    p(z_L) = N(0, I)
    p(z_i | z_{i+1}) = N(mu_i^p, diag(exp(lv_i^p))),  (mu_i^p, lv_i^p) = P_i(t_i),
        t_i = relu(T_i z_{i+1} + c_i)                   (i = L-1 .. 1)
    p(x | z_1): the one-layer model's decoder and likelihood.

The inference model shares the top-down path t_i (ladder VAE / VDVAE style,
Sonderby et al. 2016, Child 2021): a deterministic bottom-up pass

    d_1 = relu(A_1 x + a_1)  (the one-layer encoder's hidden layer),
    d_i = relu(A_i d_{i-1} + a_i)                        (i = 2 .. L)

then, top-down in the same order as generation,

    q(z_L | x) = N(Q_L(d_L)),
    q(z_i | z_{i+1}, x) = N(Q_i([d_i, t_i]))             (i = L-1 .. 1),

where P_i, Q_i are affine maps to a mean and a log-variance (held in
[LOGVAR_MIN, LOGVAR_MAX] as in the one-layer model), [,] concatenates and
every hidden layer has `hidden` units. So q(z_1..L | x) = q(z_L | x)
prod_i q(z_i | z_{i+1}, x), and the per-layer KL

    KL_i = KL(q(z_i | z_{i+1}, x) || p(z_i | z_{i+1}))

is analytic between two diagonal Gaussians given the sampled z_{i+1}; the
single-sample ELBO is E_q[log p(x | z_1)] - sum_i E_q[KL_i], its KL term
the sum of KL_i at one draw of z_2 .. z_L (`elbo_terms`). The importance
weight of the IWAE bound is the joint one, log p(x, z_1..L) - log q(z_1..L | x)
(`log_weights`). With L = 1 this is the one-layer VAE; `model.from_config`
builds that one itself (the seed's numbers, op for op).

The latent API sees z_1: `encode` gives q(z_1 | z_2..L, x) with the layers
above at their posterior means (z_L = mean of q(z_L | x), then each z_i the
mean given the one above), and `decode` maps z_1 to the image. z of all layers
together is one array (..., n_1 + ... + n_L), layer 1 first (`draw`,
`log_q_at`, `log_prior`), which the many-sample estimators take as they
take a one-layer z. Generation walks the same path without x: `sample_prior`
(every layer's standard deviation times a temperature), `reconstruct_keeping`
(the top layers of q, the rest from p) and `from_top` (down from a given z_L).

The convolutional form (`model=conv`) has the same structure and the same
vector latents z_i (n_i dimensions each); its networks work on feature maps of
h x w = H / 2^n x W / 2^n pixels and F = conv_features[-1] channels (n =
len(conv_features)), with R = `residual_blocks` blocks per cell, each block
Res(u) = u + W_2 * relu(W_1 * relu(u)) (two 3x3 convolutions, He et al. 2016):

    d_1 = the one-layer ConvEncoder's stride-2 convolutions of x   (h, w, F)
    d_i = Res^R(d_{i-1})                                  (i = 2 .. L)
    t_i = Res^R(reshape(relu(T_i z_{i+1} + c_i)))         (h, w, F); (i = L-1 .. 1)
    p(z_i | z_{i+1}) = N(P_i(flatten(t_i))),  q(z_i | z_{i+1}, x) = N(Q_i(flatten([d_i, t_i]))),
    q(z_L | x) = N(Q_L(flatten(d_L))),  p(x | z_1): the one-layer ConvDecoder,

[,] concatenating channels and T_i, P_i, Q_i dense layers. Vector latents keep
every term above (and the latent API) as they are for the MLP; the cells are
where the two differ.

The maths is `TopDown.__call__` (the walk: which layers draw from q or p, at what
temperature, scored how) and `HierarchicalVAE`; a family's cells are one method,
`TopDown.cell(i, feature, z_above)`, returning layer i's p and q parameters
(`ConvTopDown` overrides it). Your own cells: subclass `TopDown`, override
`cell`, and pass it with any bottom-up network that returns L features:

    class MyCells(hierarchy.TopDown):
      def cell(self, i, feature, z_above):  # -> (p's, q's) (..., 2 n_i) or None
        ...
    vae = hierarchy.HierarchicalVAE(bottom_up, decoder, latents, image_shape,
                                    topdown=MyCells(hidden, sizes), layer_latents=sizes)

Not built: latent maps (spatial z_i), a decoder reading the whole top-down
state (VDVAE's), and other priors or posteriors per layer, which
`Architecture.check` refuses.
"""
import itertools
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from vae_jax import convolution
from vae_jax import networks
from vae_jax import objectives
from vae_jax.families.vae import model as model_lib


def default_layer_latents(latents: int, layers: int) -> tuple[int, ...]:
  """Sizes from the layer next to the data up: `latents`, then each half the one below (>= 1)."""
  sizes = [latents]
  for _ in range(layers - 1):
    sizes.append(max(1, sizes[-1] // 2))
  return tuple(sizes)


def gaussian_kl_per_dimension(mean_q, logvar_q, mean_p, logvar_p) -> jax.Array:
  """KL(N(mean_q, exp(logvar_q)) || N(mean_p, exp(logvar_p))) per dimension, broadcast shape."""
  return 0.5 * (logvar_p - logvar_q + (jnp.exp(logvar_q) + (mean_q - mean_p) ** 2)
                * jnp.exp(-logvar_p) - 1.0)


def _stats(stats: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(..., 2 n) -> mean, logvar (..., n), the log-variance clipped as in the one-layer model."""
  mean, logvar = networks.split_stats(stats)
  return mean, jnp.clip(logvar, model_lib.LOGVAR_MIN, model_lib.LOGVAR_MAX)


class LadderEncoder(nn.Module):
  """The bottom-up pass: images (..., H, W, C) -> L features d_1 .. d_L, each (..., hidden)."""

  hidden: int
  layers: int
  dtype: jnp.dtype | None = None

  @nn.compact
  def __call__(self, x: jax.Array) -> tuple[jax.Array, ...]:
    x = x.reshape(*x.shape[:-3], -1)
    d = nn.relu(networks.linear(self.hidden, x.shape[-1], "hidden", self.dtype)(x))
    features = [d]
    for i in range(2, self.layers + 1):
      d = nn.relu(networks.linear(self.hidden, self.hidden, f"up{i}", self.dtype)(d))
      features.append(d)
    return tuple(features)


class TopDown(nn.Module):
  """The top-down path shared by p and q: the walk, with the MLP's cells (P_i, Q_i, T_i
  of the module docstring; `cell`, which subclasses override for other cells).

  One call walks the layers from L down to 1. Layer i draws z_i from q when
  bottom-up features are given and i > `prior_layers`, else from p (with its
  standard deviation times `temperature`); or, with `given`, takes z_i from it.
  """

  hidden: int
  layer_latents: tuple[int, ...]
  dtype: jnp.dtype | None = None

  @nn.compact
  def __call__(self, features, noise: jax.Array, given: jax.Array | None = None,
               prior_layers: int = 0, temperature: float = 1.0,
               top: jax.Array | None = None) -> dict:
    """Walks the hierarchy top-down.

    Args:
      features: the bottom-up (d_1 .. d_L), each broadcastable to noise's
        batch shape (...), or None: generate (every layer from p).
      noise: (..., n_1 + ... + n_L) standard normal draws, layer 1 first
        (zeros: the means).
      given: z of every layer (..., n_1 + ... + n_L) to score instead of drawing.
      prior_layers: layers 1 .. prior_layers draw from p even with features.
      temperature: scales p's standard deviation where a layer draws from p.
      top: z_L (..., n_L) to start from instead of drawing it.

    Returns:
      dict: `z` (..., sum n), layer 1 first; `log_p` (..., L) log p(z_i | z_{i+1});
      with features also `log_q` (..., L), `kl_per_dimension` (..., sum n)
      (the analytic KL_i per latent, layer 1 first) and `q1` (mean, logvar) of
      q(z_1 | z_2, x), each (..., n_1).
    """
    sizes, layers = self.layer_latents, len(self.layer_latents)
    cut = lambda a: jnp.split(a, list(itertools.accumulate(sizes[:-1])), axis=-1)
    eps, given = cut(noise), cut(given) if given is not None else [None] * layers
    prior_layers = layers if features is None else prior_layers
    z, rows = [None] * layers, [None] * layers
    for i in reversed(range(layers)):  # 0-based: layer i + 1 of the docstring.
      (p_mean, p_logvar), q = self._layer(i, features, z[i + 1] if i + 1 < layers else None,
                                          eps[i].shape)
      if given[i] is not None:
        z[i] = given[i]
      elif top is not None and i == layers - 1:
        z[i] = jnp.broadcast_to(top, eps[i].shape)
      elif i < prior_layers:
        z[i] = p_mean + temperature * jnp.exp(0.5 * p_logvar) * eps[i]
      else:
        z[i] = q[0] + jnp.exp(0.5 * q[1]) * eps[i]
      rows[i] = {"log_p": objectives.gaussian_log_density(z[i], p_mean, p_logvar)}
      if q is not None:
        rows[i].update(log_q=objectives.gaussian_log_density(z[i], *q), q=q,
                       kl=gaussian_kl_per_dimension(*q, p_mean, p_logvar))
    out = {"z": jnp.concatenate(z, axis=-1), "log_p": jnp.stack([r["log_p"] for r in rows], -1)}
    if features is not None:
      out.update(log_q=jnp.stack([r["log_q"] for r in rows], -1), q1=rows[0]["q"],
                 kl_per_dimension=jnp.concatenate([r["kl"] for r in rows], -1))
    return out

  def _layer(self, i: int, features, z_above: jax.Array | None, shape: tuple[int, ...]):
    """p's and (with features, else None) q's (mean, logvar) of layer i + 1, each `shape`."""
    feature = None if features is None else features[i]
    p_stats, q_stats = self.cell(i, feature, z_above)
    # The top layer's prior is N(0, I).
    p = (jnp.zeros(shape), jnp.zeros(shape)) if p_stats is None else _stats(p_stats)
    if q_stats is None:
      return p, None
    return p, tuple(jnp.broadcast_to(a, shape) for a in _stats(q_stats))

  def cell(self, i: int, feature: jax.Array | None, z_above: jax.Array | None
           ) -> tuple[jax.Array | None, jax.Array | None]:
    """Layer i + 1's cell (0-based i): the MLP's T_i, P_i and Q_i of the module docstring.

    Override it (in a subclass; create submodules inline, as here) for other cells.

    Args:
      i: 0 .. L - 1, the layer next to the data first.
      feature: the bottom-up d_{i+1} (..., F) (leading axes broadcastable to
        z_above's), or None when generating.
      z_above: z_{i+2} (..., n_{i+2}), or None for the top layer.

    Returns:
      p's and q's parameters, each (..., 2 n_{i+1}) (mean, then log-variance;
      clipped by the walk): p's None for the top layer (N(0, I)), q's None
      without a feature.
    """
    n = self.layer_latents[i]
    if z_above is None:  # The top layer: q(z_L | x) from d_L alone.
      q_in = feature
      p = None
    else:
      t = nn.relu(networks.linear(self.hidden, z_above.shape[-1], f"t{i + 1}", self.dtype)(z_above))
      p = networks.linear(2 * n, self.hidden, f"p{i + 1}", self.dtype)(t)
      q_in = None if feature is None else jnp.concatenate(
          [jnp.broadcast_to(feature, (*t.shape[:-1], feature.shape[-1])), t], axis=-1)
    if q_in is None:
      return p, None
    return p, networks.linear(2 * n, q_in.shape[-1], f"q{i + 1}", self.dtype)(q_in)


class ResidualBlock(nn.Module):
  """x + W_2 * relu(W_1 * relu(x)): two 3x3 convolutions of x's channels and the skip
  (pre-activation, He et al. 2016); (..., H, W, F) -> the same shape.

  W_2's initial variance is `scale` times flax's default (LeCun normal): a
  stack of B blocks at scale 1 / B (`residual_stack`) then adds about as much
  variance at initialisation whatever B is, at most about e times its input's,
  where a zero W_2 (VDVAE's) would leave W_1 without a gradient at the start.
  """

  scale: float = 1.0
  dtype: jnp.dtype | None = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    conv = lambda name, init: nn.Conv(
        x.shape[-1], (3, 3), padding="SAME", name=name, dtype=self.dtype, kernel_init=init,
        conv_general_dilated=convolution.conv_general_dilated)
    h = conv("conv0", nn.initializers.lecun_normal())(nn.relu(x))
    scaled = nn.initializers.variance_scaling(self.scale, "fan_in", "truncated_normal")
    return x + conv("conv1", scaled)(nn.relu(h))


def residual_stack(x: jax.Array, blocks: int, name: str, dtype=None) -> jax.Array:
  """`blocks` ResidualBlocks ("NAME_0", ...) in the calling module; x itself for 0."""
  for j in range(blocks):
    x = ResidualBlock(1.0 / blocks, dtype, name=f"{name}_{j}")(x)
  return x


class ConvLadderEncoder(nn.Module):
  """The convolutional bottom-up pass: images (..., H, W, C) -> L feature maps
  d_1 .. d_L, each (..., H / 2^n, W / 2^n, features[-1]) for n = len(features):
  d_1 the one-layer ConvEncoder's convolutions, d_i = `blocks` residual blocks of d_{i-1}."""

  features: Sequence[int]
  layers: int
  blocks: int = 1
  dtype: jnp.dtype | None = None

  @nn.compact
  def __call__(self, x: jax.Array) -> tuple[jax.Array, ...]:
    d = networks.conv_stack(x, self.features, self.dtype)
    maps = [d]
    for i in range(2, self.layers + 1):
      d = residual_stack(d, self.blocks, f"up{i}", self.dtype)
      maps.append(d)
    return tuple(maps)


class ConvTopDown(TopDown):
  """The top-down path with residual cells on feature maps (the conv form of the module
  docstring): `TopDown`'s walk, other cells.

  Attributes (besides `TopDown`'s):
    hidden: channels F of the top-down maps t_i (`from_config`: conv_features[-1]).
    map_size: (h, w) of the maps, the bottom-up features' (H / 2^n, W / 2^n).
    blocks: residual blocks per cell (0: t_i = relu(T_i z_{i+1}) as a map).
  """

  map_size: tuple[int, int] = (1, 1)
  blocks: int = 1

  def cell(self, i, feature, z_above):
    """Layer i + 1's T_i, its residual blocks, P_i and Q_i (see `TopDown.cell`); the
    feature is a map (..., h, w, F') of `ConvLadderEncoder`."""
    dense = lambda name: nn.Dense(2 * self.layer_latents[i], name=name, dtype=self.dtype)
    flat = lambda a: a.reshape(*a.shape[:-3], -1)
    if z_above is None:  # The top layer: q(z_L | x) from d_L alone.
      return None, (None if feature is None else dense(f"q{i + 1}")(flat(feature)))
    (h, w), f = self.map_size, self.hidden
    t = nn.relu(nn.Dense(h * w * f, name=f"t{i + 1}", dtype=self.dtype)(z_above))
    t = residual_stack(t.reshape(*t.shape[:-1], h, w, f), self.blocks, f"cell{i + 1}",
                       self.dtype)
    p = dense(f"p{i + 1}")(flat(t))
    if feature is None:
      return p, None
    feature = jnp.broadcast_to(feature, (*t.shape[:-1], feature.shape[-1]))
    return p, dense(f"q{i + 1}")(flat(jnp.concatenate([feature, t], axis=-1)))


class HierarchicalVAE(model_lib.VAE):
  """The VAE with L top-down Gaussian layers (see the module docstring).

  Attributes (besides `VAE`'s; `prior` and `posterior` stay None):
    topdown: the `TopDown` path; `encoder` is the `LadderEncoder`, `decoder`
      maps z_1 (..., latents) to the image's distribution parameters.
    layer_latents: (n_1, ..., n_L), n_1 = `latents`.
  """

  topdown: nn.Module | None = None
  layer_latents: tuple[int, ...] = ()

  @property
  def stochastic_layers(self) -> int:
    return len(self.layer_latents)

  @property
  def total_latents(self) -> int:
    return sum(self.layer_latents)

  def walk(self, x: jax.Array | None, noise: jax.Array, samples_after_batch: bool = False,
           **options) -> dict:
    """The top-down pass (`TopDown.__call__`) on images x (B, H, W, C), or None to generate.

    Noise (..., B, sum n) broadcasts the features over leading sample axes;
    with `samples_after_batch`, noise is (B, C, sum n) and they broadcast over C.
    """
    features = None
    if x is not None:
      features = self.encoder(x)
      if samples_after_batch:
        features = tuple(f[:, None] for f in features)
    return self.topdown(features, noise, **options)

  def __call__(self, x: jax.Array, key: jax.Array):
    """Decoder outputs for one draw of z_1 .. z_L ~ q, and q(z_1 | z_2, x)'s mean and logvar."""
    out = self.walk(x, self._noise(key, x.shape[:-3]))
    return self.decode(self._bottom(out["z"])), *out["q1"]

  def _noise(self, key, batch_shape) -> jax.Array:
    return jax.random.normal(key, (*batch_shape, self.total_latents), jnp.float32)

  def _bottom(self, z: jax.Array) -> jax.Array:
    return z[..., :self.latents]

  def encode(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """q(z_1 | z_2 .. z_L, x) with the layers above at their posterior means: (..., latents) each."""
    out = self.walk(x, jnp.zeros((*x.shape[:-3], self.total_latents), jnp.float32))
    return out["q1"]

  def posterior_means(self, x: jax.Array) -> jax.Array:
    """Every layer at its posterior mean given the means above: (..., n_1 + ... + n_L)."""
    return self.walk(x, jnp.zeros((*x.shape[:-3], self.total_latents), jnp.float32))["z"]

  def elbo_terms(self, x: jax.Array, key: jax.Array) -> dict[str, jax.Array]:
    """The single-sample negative ELBO of each example, split into its terms.

    Returns:
      `VAE.elbo_terms`'s dict, with `kl` = sum of the analytic per-layer KL_i
      at one draw of the layers above, `kl_per_dimension` (B, n_1 + ... + n_L)
      (layer 1 first: free bits act on each latent of each layer) and
      `kl_per_layer` (B, L), layer 1 first.
    """
    out = self.walk(x, self._noise(key, x.shape[:1]))
    recon = -self.log_likelihood(x, self.decode(self._bottom(out["z"])))
    kl_dims = out["kl_per_dimension"]
    starts = [sum(self.layer_latents[:i]) for i in range(self.stochastic_layers)]
    per_layer = jnp.stack([jnp.sum(kl_dims[..., s:s + n], axis=-1)
                           for s, n in zip(starts, self.layer_latents)], axis=-1)
    kl = jnp.sum(kl_dims, axis=-1)
    return {"recon": recon, "kl": kl, "kl_per_dimension": kl_dims, "kl_per_layer": per_layer,
            "loss": recon + kl}

  def log_weights(self, x, mean, logvar, keys, index):
    """log p(x, z_1..L) - log q(z_1..L | x) and log p(x | z_1), each (B, C); see `VAE.log_weights`.

    `mean` and `logvar` (of `encode`) are not used: q of each layer depends on
    the draw of the layer above.
    """
    del mean, logvar
    batch, count = x.shape[0], len(index)
    draw = lambda key, s: jax.random.normal(jax.random.fold_in(key, s), (self.total_latents,))
    eps = jax.vmap(draw)(jnp.repeat(keys, count), jnp.tile(index, batch))
    out = self.walk(x, eps.reshape(batch, count, self.total_latents), samples_after_batch=True)
    z1 = self._bottom(out["z"]).reshape(batch * count, self.latents)
    outputs = self.decode(z1)
    log_lik = self.log_likelihood(x[:, None], outputs.reshape(batch, count, *outputs.shape[1:]))
    return log_lik + jnp.sum(out["log_p"], -1) - jnp.sum(out["log_q"], -1), log_lik

  def draw(self, x: jax.Array, key: jax.Array, num_samples: int):
    """K draws of all layers per example: z (K, B, sum n) and log q(z_1..L | x) (K, B)."""
    out = self.walk(x, self._noise(key, (num_samples, x.shape[0])))
    return out["z"], jnp.sum(out["log_q"], -1)

  def log_q_at(self, x: jax.Array, z: jax.Array) -> jax.Array:
    """log q(z_1..L | x) of given z (K, B, sum n): (K, B)."""
    return jnp.sum(self.walk(x, jnp.zeros_like(z), given=z)["log_q"], -1)

  def log_prior(self, z: jax.Array) -> jax.Array:
    """log p(z_1..L) = log p(z_L) + sum_i log p(z_i | z_{i+1}): (..., sum n) -> (...)."""
    return jnp.sum(self.walk(None, jnp.zeros_like(z), given=z)["log_p"], -1)

  def log_px_at(self, x: jax.Array, z: jax.Array) -> jax.Array:
    """log p(x | z_1) of z (K, B, sum n): (K, B)."""
    return super().log_px_at(x, self._bottom(z))

  def sample_prior(self, key: jax.Array, num: int, temperature: float = 1.0) -> jax.Array:
    """num draws of z_1 by ancestral sampling from z_L, each layer's standard
    deviation times `temperature`: (num, latents)."""
    out = self.walk(None, self._noise(key, (num,)), temperature=temperature)
    return self._bottom(out["z"])

  def reconstruct_keeping(self, x: jax.Array, key: jax.Array, keep: int,
                          temperature: float = 1.0) -> jax.Array:
    """z_1 (B, latents) with the top `keep` layers at their posterior means given x and
    the L - keep layers below drawn from p(z_i | z_{i+1}) (keep = L: `encode`'s mean)."""
    noise = self._noise(key, x.shape[:1])
    layers_below = self.stochastic_layers - keep
    # The kept layers use their means: zero noise there.
    start = sum(self.layer_latents[:layers_below])
    noise = noise.at[:, start:].set(0.0)
    out = self.walk(x, noise, prior_layers=layers_below, temperature=temperature)
    return self._bottom(out["z"])

  def from_top(self, top: jax.Array, noise: jax.Array, temperature: float = 1.0) -> jax.Array:
    """z_1 (..., latents) from z_L = `top` (..., n_L), each layer below drawn from
    p(z_i | z_{i+1}) with `noise` (..., n_1 + ... + n_L; zeros: the means) at `temperature`."""
    return self._bottom(self.walk(None, noise, temperature=temperature, top=top)["z"])

  def kl_per_dimension(self, mean, logvar):
    """None: the KL of a lower layer depends on the draw above, not on (mean, logvar)."""
    del mean, logvar
    return None

  def kl_per_layer(self, x: jax.Array, keys: jax.Array) -> jax.Array:
    """The analytic KL_i of each example at one draw from `keys` (B,) each: (B, L)."""
    one = lambda xi, key: self.elbo_terms(xi[None], key)["kl_per_layer"][0]
    return jax.vmap(one)(x, keys)


def from_architecture(arch, dtype, likelihood: nn.Module) -> HierarchicalVAE:
  """The hierarchical VAE (MLP or conv) of a `model.Architecture` with stochastic_layers > 1."""
  sizes = layer_latents(arch)
  if arch.model == "conv":
    (h, w, _), n, blocks = arch.image_shape, len(arch.conv_features), arch.residual_blocks
    encoder = ConvLadderEncoder(arch.conv_features, len(sizes), blocks, dtype)
    decoder = networks.ConvDecoder(arch.conv_features, arch.image_shape, dtype)
    topdown = ConvTopDown(arch.conv_features[-1], sizes, dtype, map_size=(h >> n, w >> n),
                          blocks=blocks)
  else:
    encoder = LadderEncoder(arch.hidden, len(sizes), dtype)
    hidden = 0 if arch.decoder == "linear" else arch.hidden
    decoder = networks.MLPDecoder(hidden, arch.image_shape, dtype)
    topdown = TopDown(arch.hidden, sizes, dtype)
  return HierarchicalVAE(encoder, decoder, arch.latents, arch.image_shape, likelihood,
                         topdown=topdown, layer_latents=sizes)


def layer_latents(arch) -> tuple[int, ...]:
  """The layer sizes an architecture asks for: its `layer_latents`, or the default halving."""
  return tuple(arch.layer_latents) or default_layer_latents(arch.latents, arch.stochastic_layers)
