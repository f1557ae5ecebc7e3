"""The latent-space API: encode, decode, reconstruct, sample, interpolate, traverse.

Every function takes a `TrainedModel` (from `vae_jax.load(workdir)`) first and
works on images of its `image_shape` (H, W, C). Images are accepted as
(H, W, C), flat (H * W * C,), and for grey images (C = 1) also (H, W), each
with or without a leading batch axis, as uint8 in 0-255 or floats in [0, 1];
results keep the batch axis only when the input had one. Decoded images are
E[x|z] in [0, 1] (pixel probabilities for a Bernoulli decoder, means for a
Gaussian or logistic one), shaped (..., H, W) for grey images and
(..., H, W, C) for colour ones: what image files and plots take.

    model = vae_jax.load("/tmp/vae")
    rows = vae_jax.interpolate(model, zeros, sixes, num_steps=9)  # (P, 9, H, W)

A conditional model (`conditional=True`) takes the labels too, as `labels=`:
an int for every image or one int per image; `vae_jax.sample(model, key, 10,
labels=6)` draws ten 6s. `interpolate` encodes each image with its label and
decodes the path with a label vector that moves from `path_labels[0]` to
`path_labels[1]` (one-hot vectors mixed linearly in t): equal labels keep the
class while the style moves, different ones change it. An unconditional
model refuses labels.

The functions work for families with continuous latent codes (the Gaussian
VAE: capability `LATENT`; those of a hierarchy also `LAYERS`) and refuse
others in one line naming what is missing. For a family with discrete codes
(the VQ-VAE and FSQ: capability `CODES`) `encode` gives each image's grid of
code indices, int32 (N, h, w), and `decode` takes such grids; `reconstruct`
decodes an image's codes; `sample` draws code grids from the prior over codes
(a model loaded from `DIR/prior`, `vae-jax train-prior`'s) at `temperature`;
`interpolate` follows the path between the encoder's continuous outputs of two
images, quantising each point before decoding it. What needs a continuous z
(`interpolate_latents`, `traverse`, `manifold`, the hierarchy's functions)
refuses them. They check their inputs on the
host and are not meant to be traced; the jitted cores below take the flax
module as a static argument and the variables as a pytree, so one compilation
serves every call of a shape.
"""
import contextlib
import functools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from vae_jax import images as images_lib
from vae_jax import objectives
from vae_jax import parallel
from vae_jax.errors import UsageError
from vae_jax.families.base import Capability
from vae_jax.trained import TrainedModel
from vae_jax.errors import value_range

METHODS = ("linear", "slerp")
# Below this sine of the angle between two codes (nearly parallel or
# antiparallel) the great circle is ill-defined: slerp falls back to linear.
# For small angles the two paths differ by O(angle^2) anyway.
_MIN_SINE = 1e-4
_MIN_NORM = 1e-12
ArrayLike = jax.Array | np.ndarray | Sequence


# ----------------------------------------------------------------------------
# Input checks.


def as_images(x: ArrayLike, image_shape: Sequence[int]) -> tuple[jax.Array, bool]:
  """Maps every accepted image form to float32 images (N, H, W, C) in [0, 1].

  Args:
    x: (H, W, C), flat (D,) with D = H * W * C, or (H, W) when C = 1,
      optionally with a leading batch axis (N, ...); uint8 in 0-255 or floats in [0, 1].
    image_shape: (H, W, C) of the model's images.

  Returns:
    (images (N, H, W, C) float32, whether `x` had a batch axis); N = 1 without one.

  Raises:
    ValueError: another shape, dtype or value range, saying what was expected.
  """
  x = x if isinstance(x, (jax.Array, np.ndarray)) else np.asarray(x)
  image_shape = tuple(image_shape)
  forms = [image_shape, (math.prod(image_shape),)]
  if image_shape[-1] == 1:
    forms.insert(1, image_shape[:-1])
  if x.shape in forms:
    batched = False
  elif x.ndim >= 2 and x.shape[1:] in forms:
    batched = True
  else:
    listed = ", ".join(map(str, forms[:-1])) + f" or {forms[-1]}"
    raise ValueError(f"expected images of shape {listed}, with an optional batch axis; "
                     f"got {tuple(x.shape)}")
  if x.size == 0:
    raise ValueError(f"expected at least one image; got shape {tuple(x.shape)}")
  return _to_unit_interval(x).reshape(-1, *image_shape), batched


def _to_unit_interval(x) -> jax.Array:
  """uint8 0-255 or floats in [0, 1] -> float32 in [0, 1]; anything else raises."""
  if x.dtype == np.uint8:
    return jnp.asarray(x, jnp.float32) / 255.0
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise ValueError(f"expected uint8 images (0-255) or float images in [0, 1]; got {x.dtype}")
  lo, hi = float(x.min()), float(x.max())
  if not (lo >= 0.0 and hi <= 1.0):  # Also catches NaN.
    raise ValueError(f"float images must lie in [0, 1]; got values in [{lo:g}, {hi:g}] "
                     "(pass uint8 for 0-255 pixels)")
  return jnp.asarray(x, jnp.float32)


def as_codes(z: ArrayLike, latents: int, max_ndim: int | None = 2) -> jax.Array:
  """Latent codes (..., latents) as float32; raises ValueError on another shape."""
  z = jnp.asarray(z, jnp.float32)
  if z.ndim < 1 or z.shape[-1] != latents or (max_ndim is not None and z.ndim > max_ndim):
    batch = "an optional batch axis" if max_ndim == 2 else "any leading axes"
    raise ValueError(f"expected latent codes of shape ({latents},) with {batch}; "
                     f"got {tuple(z.shape)}")
  return z


def as_code_grids(codes: ArrayLike, grid: tuple[int, int], num_codes: int) -> jax.Array:
  """Grids of code indices (..., h, w) as int32; raises ValueError on another shape, a
  non-integer dtype or an index outside [0, K)."""
  values = np.asarray(codes)
  if values.ndim < 2 or values.shape[-2:] != tuple(grid):
    raise ValueError(f"expected code indices of shape {tuple(grid)} with optional leading "
                     f"axes; got {values.shape}")
  if not np.issubdtype(values.dtype, np.integer):
    raise ValueError(f"expected integer code indices; got {values.dtype}")
  if values.size and not 0 <= values.min() <= values.max() < num_codes:
    raise ValueError(f"code indices must lie in 0 .. {num_codes - 1}; got {values.min()} .. "
                     f"{values.max()}")
  return jnp.asarray(values, jnp.int32)


def as_labels(model: TrainedModel, labels, count: int) -> jax.Array | None:
  """Labels for `count` inputs of `model`: int32 (count,), or None for an unconditional model.

  Args:
    labels: one int for all, or `count` ints in 0 .. K - 1; None for an unconditional model.

  Raises:
    ValueError: labels missing for a conditional model, given to an unconditional
      one, of another count or dtype, or out of range.
  """
  classes = model.family.num_classes
  if not classes:
    if labels is not None:
      raise ValueError("this model is not conditional; it takes no labels")
    return None
  if labels is None:
    raise ValueError(f"this model is conditional on {classes} classes: pass labels= "
                     f"(ints in 0 .. {classes - 1})")
  values = np.asarray(labels)
  if not np.issubdtype(values.dtype, np.integer) or values.ndim > 1:
    raise ValueError(f"expected labels as one int or a (N,) int array; got {values.dtype} of "
                     f"shape {values.shape}")
  values = np.broadcast_to(values, (count,)) if values.ndim == 0 else values
  if values.shape != (count,):
    raise ValueError(f"expected one label{'' if count == 1 else f' or {count} labels'}; "
                     f"got {len(values)}")
  if values.size and not 0 <= values.min() <= values.max() < classes:
    raise ValueError(f"labels must lie in 0 .. {classes - 1}; got "
                     f"{value_range(values.min(), values.max())}")
  return jnp.asarray(values, jnp.int32)


def _pair_of_labels(model: TrainedModel, pair, count: int):
  """(start labels, end labels), each (count,) int32 or None, from a pair or None."""
  if pair is None:
    return as_labels(model, None, count), as_labels(model, None, count)
  if not isinstance(pair, (tuple, list)) or len(pair) != 2:
    raise ValueError(f"expected a pair of labels (start, end); got {pair!r}")
  return as_labels(model, pair[0], count), as_labels(model, pair[1], count)


def _check_interpolation(num_steps: int, method: str) -> None:
  if not isinstance(num_steps, (int, np.integer)) or num_steps < 2:
    raise ValueError(f"num_steps must be an integer >= 2 (both endpoints included); "
                     f"got {num_steps!r}")
  if method not in METHODS:
    raise ValueError(f"unknown interpolation method {method!r}; choose one of "
                     f"{', '.join(METHODS)}")


def _pictures(flat_batch: jax.Array, batched: bool) -> jax.Array:
  """Decoded images (N, ..., H, W, C) -> pictures (`images.as_pictures`), without N when
  not `batched`."""
  out = images_lib.as_pictures(flat_batch)
  return out if batched else out[0]


def _precision(model: TrainedModel):
  """Matrix products at the precision the model was trained with (float32 by default)."""
  return parallel.matmul_precision(model.config) if model.config else contextlib.nullcontext()


def _latent(model: TrainedModel, what: str) -> None:
  """Raises UsageError unless the model's family has continuous latent codes."""
  model.family.require(Capability.LATENT, what)


def _discrete(model: TrainedModel) -> bool:
  """Whether the model's latent is a grid of discrete codes (capability CODES)."""
  return model.family.can(Capability.CODES)


def _layers(model: TrainedModel, what: str) -> int:
  """A hierarchy's number of stochastic layers; ValueError for a model with one."""
  _latent(model, what)
  if not model.family.can(Capability.LAYERS):
    raise ValueError(f"{what} needs a model with stochastic_layers > 1")
  return model.module.stochastic_layers


# ----------------------------------------------------------------------------
# Jitted cores: module static, variables a pytree, images (N, H, W, C) in [0, 1].


def _given(y: jax.Array | None) -> dict:
  return {} if y is None else {"y": y}


def _decode_mean(module, z: jax.Array, y: jax.Array | None = None) -> jax.Array:
  return module.mean_image(module.decode(z, **_given(y)))


@functools.partial(jax.jit, static_argnames=("module",))
def _encode(module, variables, x, y=None):
  return module.apply(variables, x, method="encode", **_given(y))


@functools.partial(jax.jit, static_argnames=("module",))
def _decode(module, variables, z, y=None):
  return module.apply(variables, z, y, method=_decode_mean)


@functools.partial(jax.jit, static_argnames=("module",))
def _reconstruct(module, variables, x, key, y=None):
  """E[x|z] for z the posterior mean (`key` None) or one draw from q(z|x)."""
  def run(m):
    mean, logvar = m.encode(x, **_given(y))
    z = mean if key is None else objectives.reparameterize(key, mean, logvar)
    return _decode_mean(m, z, y)
  return module.apply(variables, method=run)


@functools.partial(jax.jit, static_argnames=("module", "n", "temperature"))
def _sample(module, variables, key, n, y=None, temperature=1.0):
  def run(m):  # From the model's own prior (N(0, I) unless it has another).
    return _decode_mean(m, m.sample_prior(key, n, temperature), y)
  return module.apply(variables, method=run)


@functools.partial(jax.jit, static_argnames=("module", "keep", "temperature"))
def _reconstruct_keeping(module, variables, x, key, keep, temperature):
  def run(m):
    return _decode_mean(m, m.reconstruct_keeping(x, key, keep, temperature))
  return module.apply(variables, method=run)


@functools.partial(jax.jit, static_argnames=("module",))
def _traverse(module, variables, x, dim, values, y=None):
  """x (N, H, W, C), values (V,) -> (N, V, H, W, C): the posterior mean with z[dim] = each value."""
  def run(m):
    mean, _ = m.encode(x, **_given(y))
    codes = jnp.repeat(mean[:, None, :], values.shape[0], axis=1)
    codes = codes.at[:, :, dim].set(jnp.broadcast_to(values, codes.shape[:2]))
    return _decode_mean(m, codes, None if y is None else y[:, None])
  return module.apply(variables, method=run)


# ----------------------------------------------------------------------------
# Jitted cores of a family with discrete codes: the family static.


@functools.partial(jax.jit, static_argnames=("family",))
def _codes_of(family, variables, x):
  return family.encode_codes(variables, x)


@functools.partial(jax.jit, static_argnames=("family",))
def _decoded_codes(family, variables, codes):
  return family.decode_codes(variables, codes)


@functools.partial(jax.jit, static_argnames=("family",))
def _quantised_reconstruction(family, variables, x):
  return family.decode_outputs(variables, family.encoder_outputs(variables, x))


@functools.partial(jax.jit, static_argnames=("family", "n", "temperature"))
def _prior_draws(family, variables, key, n, temperature):
  return family.decode_codes(variables, family.sample_codes(variables, key, n, temperature))


@functools.partial(jax.jit, static_argnames=("family", "num_steps", "method"))
def _interpolate_outputs(family, variables, x_a, x_b, *, num_steps, method):
  """(P, H, W, C) twice -> (P, num_steps, H, W, C): paths between the encoder's outputs
  (P, h, w, D), each point quantised and decoded."""
  z_a, z_b = (family.encoder_outputs(variables, x) for x in (x_a, x_b))
  flat = lambda z: z.reshape(len(z), -1)
  paths = jax.vmap(lambda a, b: interpolation_path(a, b, num_steps, method))(flat(z_a), flat(z_b))
  return family.decode_outputs(variables, paths.reshape(*paths.shape[:2], *z_a.shape[1:]))


# ----------------------------------------------------------------------------
# Interpolation: written for one pair, batched over pairs with jax.vmap.


def interpolation_path(z_a: jax.Array, z_b: jax.Array, num_steps: int,
                       method: str = "linear") -> jax.Array:
  """Codes from `z_a` to `z_b` at t = i / (num_steps - 1), both endpoints included.

  Args:
    z_a, z_b: one pair of codes, (L,) each.
    num_steps: points on the path, >= 2.
    method: "linear" ((1 - t) z_a + t z_b) or "slerp": the direction moves
      along the great circle and the norm linearly, so both endpoint norms are
      kept; nearly parallel or antiparallel pairs fall back to linear.

  Returns:
    (num_steps, L) codes.
  """
  t = jnp.linspace(0.0, 1.0, num_steps, dtype=jnp.float32)[:, None]
  linear = (1.0 - t) * z_a + t * z_b
  if method == "linear":
    return linear
  norm_a, norm_b = jnp.linalg.norm(z_a), jnp.linalg.norm(z_b)
  u_a = z_a / jnp.maximum(norm_a, _MIN_NORM)
  u_b = z_b / jnp.maximum(norm_b, _MIN_NORM)
  # Kahan's angle formula: accurate near 0 and pi, where arccos(dot) is not.
  omega = 2.0 * jnp.arctan2(jnp.linalg.norm(u_a - u_b), jnp.linalg.norm(u_a + u_b))
  sine = jnp.sin(omega)
  degenerate = (sine < _MIN_SINE) | (jnp.minimum(norm_a, norm_b) < _MIN_NORM)
  safe_sine = jnp.where(degenerate, 1.0, sine)  # Keeps NaNs out of the unused branch.
  direction = (jnp.sin((1.0 - t) * omega) * u_a + jnp.sin(t * omega) * u_b) / safe_sine
  spherical = ((1.0 - t) * norm_a + t * norm_b) * direction
  return jnp.where(degenerate, linear, spherical)


def label_path(module, y_a: jax.Array, y_b: jax.Array, num_steps: int) -> jax.Array:
  """The label vectors (num_steps, K) from class y_a to class y_b: (1 - t) e_a + t e_b."""
  t = jnp.linspace(0.0, 1.0, num_steps, dtype=jnp.float32)[:, None]
  one_hot = lambda y: jax.nn.one_hot(y, module.num_classes)
  return (1.0 - t) * one_hot(y_a) + t * one_hot(y_b)


def _decode_path(module, variables, z_a, z_b, num_steps, method, path_labels=None):
  """One pair of codes (L,), (L,) -> the decoded path (num_steps, H, W, C); a conditional
  model's label moves along `path_labels` = (start, end) classes."""
  path = interpolation_path(z_a, z_b, num_steps, method)
  y = None if path_labels is None else label_path(module, *path_labels, num_steps)
  return module.apply(variables, path, y, method=_decode_mean)


def _image_pair(module, variables, x_a, x_b, num_steps, method, labels=None, path_labels=None):
  """One pair of images (H, W, C) twice -> (num_steps, H, W, C) between their posterior means
  (a conditional model's encoder given `labels` = (x_a's, x_b's))."""
  y_a, y_b = (None, None) if labels is None else labels
  (mean_a, _), (mean_b, _) = (module.apply(variables, x, method="encode",
                                           **_given(y))
                              for x, y in ((x_a, y_a), (x_b, y_b)))
  return _decode_path(module, variables, mean_a, mean_b, num_steps, method, path_labels)


@functools.partial(jax.jit, static_argnames=("module", "num_steps", "method"))
def _interpolate_images(module, variables, x_a, x_b, labels=None, path_labels=None, *, num_steps,
                        method):
  """(P, H, W, C) twice -> (P, num_steps, H, W, C): `_image_pair` vmapped over the pairs;
  labels, path_labels: None or pairs of (P,) int32."""
  pair = functools.partial(_image_pair, module, variables, num_steps=num_steps, method=method)
  return jax.vmap(lambda a, b, y, path: pair(a, b, labels=y, path_labels=path))(
      x_a, x_b, labels, path_labels)


@functools.partial(jax.jit, static_argnames=("module", "num_steps", "method"))
def _interpolate_codes(module, variables, z_a, z_b, path_labels=None, *, num_steps, method):
  """(P, L), (P, L) -> (P, num_steps, H, W, C): `_decode_path` vmapped over the pairs."""
  pair = functools.partial(_decode_path, module, variables, num_steps=num_steps, method=method)
  return jax.vmap(lambda a, b, path: pair(a, b, path_labels=path))(z_a, z_b, path_labels)


# ----------------------------------------------------------------------------
# The public API. Shapes below write (H, W) for a picture: (H, W) for grey
# images, (H, W, C) for colour ones.


def encode(model: TrainedModel, x: ArrayLike, labels=None) -> tuple[jax.Array, jax.Array]:
  """The posterior q(z|x) = N(mean, diag(exp(logvar))) (q(z|x, y) for a conditional model).

  Args:
    model: a trained model.
    x: images (N, H, W, C), (N, D), or for grey images (N, H, W); or one image without N.
    labels: a conditional model's labels of x: one int, or N ints (`as_labels`).

  Returns:
    (mean, logvar), each (N, L), or (L,) for one image without a batch axis. For a
    family with discrete codes: the code indices, int32 (N, h, w), or (h, w).
  """
  if _discrete(model):
    x, batched = as_images(x, model.image_shape)
    as_labels(model, labels, len(x))  # Refuses labels.
    with _precision(model):
      codes = _codes_of(model.family, model.variables, x)
    return codes if batched else codes[0]
  _latent(model, "encode")
  x, batched = as_images(x, model.image_shape)
  y = as_labels(model, labels, len(x))
  with _precision(model):
    mean, logvar = _encode(model.module, model.variables, x, y)
  return (mean, logvar) if batched else (mean[0], logvar[0])


def decode(model: TrainedModel, z: ArrayLike, labels=None) -> jax.Array:
  """Images E[x|z] of latent codes (E[x|z, y] for a conditional model).

  Args:
    model: a trained model.
    z: codes (..., L).
    labels: a conditional model's labels: one int for all, or one per code
      (of the codes' leading shape).

  Returns:
    (..., H, W) pictures in [0, 1]. A family with discrete codes takes z as int code
    indices (..., h, w) (what `encode` gives).
  """
  if _discrete(model):
    codes = as_code_grids(z, model.family.code_grid, model.family.num_codes)
    as_labels(model, labels, 1)  # Refuses labels.
    with _precision(model):
      return images_lib.as_pictures(_decoded_codes(model.family, model.variables, codes))
  _latent(model, "decode")
  z = as_codes(z, model.family.latents, max_ndim=None)
  y = None
  if labels is not None or model.family.num_classes:
    lead = z.shape[:-1]
    y = as_labels(model, np.ravel(labels) if np.ndim(labels) else labels, math.prod(lead))
    y = y.reshape(lead)
  with _precision(model):
    out = _decode(model.module, model.variables, z, y)
  return images_lib.as_pictures(out)


def reconstruct(model: TrainedModel, x: ArrayLike, key: jax.Array | None = None,
                labels=None) -> jax.Array:
  """Decodes the posterior mean of `x`, or one draw from q(z|x) when `key` is given.

  Args:
    model: a trained model.
    x: images, as `encode` takes them.
    key: a PRNG key for a stochastic reconstruction; None for the posterior mean.
    labels: a conditional model's labels of x, as `encode` takes them.

  Returns:
    (N, H, W) pictures E[x|z], or (H, W) for one image without a batch axis. For a
    family with discrete codes, E[x | z_q(x)] of the quantised encoding (deterministic:
    no key).
  """
  if _discrete(model):
    if key is not None:
      raise ValueError("a model with discrete codes encodes deterministically; "
                       "reconstruct takes no key")
    x, batched = as_images(x, model.image_shape)
    as_labels(model, labels, len(x))  # Refuses labels.
    with _precision(model):
      return _pictures(_quantised_reconstruction(model.family, model.variables, x), batched)
  _latent(model, "reconstruct")
  x, batched = as_images(x, model.image_shape)
  with _precision(model):
    return _pictures(_reconstruct(model.module, model.variables, x, key,
                                  as_labels(model, labels, len(x))), batched)


def sample(model: TrainedModel, key: jax.Array, n: int, labels=None, *,
           temperature: float = 1.0) -> jax.Array:
  """Decodes `n` codes drawn from the model's prior (N(0, I) unless it has another).

  Args:
    model: a trained model.
    key: a PRNG key; the same key gives the same images (and, for a conditional
      model, the same codes whatever the labels: only the class changes).
    n: number of images, >= 1.
    labels: a conditional model's classes to draw: one int for all n, or n ints.
    temperature: > 0, scales the prior's standard deviation (of every layer,
      top-down, for a hierarchy); 1 unless the prior is Gaussian.

  Returns:
    (n, H, W) pictures E[x|z]. For a family with discrete codes (a model of `DIR/prior`),
    code grids drawn from the prior over codes, each position from its conditional's
    softmax at `temperature`, decoded.
  """
  model.family.require(Capability.SAMPLE, "sample")
  if not isinstance(n, (int, np.integer)) or n < 1:
    raise ValueError(f"n must be an integer >= 1; got {n!r}")
  temperature = _temperature(temperature)
  if _discrete(model):
    as_labels(model, labels, int(n))  # Refuses labels.
    with _precision(model):
      return _pictures(_prior_draws(model.family, model.variables, key, int(n), temperature),
                       True)
  with _precision(model):
    return _pictures(_sample(model.module, model.variables, key, int(n),
                             as_labels(model, labels, int(n)), temperature), True)


def reconstruct_keeping(model: TrainedModel, x: ArrayLike, key: jax.Array, keep: int, *,
                        temperature: float = 1.0) -> jax.Array:
  """A hierarchy's reconstructions that keep its top `keep` layers and redraw the rest.

  The top `keep` layers of z are at their posterior means given x; each layer
  below is drawn from p(z_i | z_{i+1}) at `temperature`, down to z_1, which
  is decoded: what the layers above encode stays, what the layers below add
  is resampled (keep = L: the posterior-mean reconstruction; keep = 0: samples).

  Args:
    model: a trained model with stochastic_layers > 1.
    x: images, as `encode` takes them.
    key: a PRNG key for the redrawn layers.
    keep: layers kept, 0 .. L.
    temperature: > 0, scales the redrawn layers' standard deviations.

  Returns:
    (N, H, W) pictures, or (H, W) for one image without a batch axis.
  """
  layers = _layers(model, "reconstruct_keeping")
  if not isinstance(keep, (int, np.integer)) or not 0 <= keep <= layers:
    raise ValueError(f"keep must be an integer in 0 .. {layers}; got {keep!r}")
  temperature = _temperature(temperature)
  x, batched = as_images(x, model.image_shape)
  with _precision(model):
    out = _reconstruct_keeping(model.module, model.variables, x, key, int(keep), temperature)
  return _pictures(out, batched)


@functools.partial(jax.jit, static_argnames=("module", "num_steps", "method", "temperature"))
def _interpolate_top(module, variables, x_a, x_b, key, *, num_steps, method, temperature):
  """(P, H, W, C) twice -> (P, num_steps, H, W, C) along the top layer's posterior means."""
  def run(m):
    top = lambda x: m.posterior_means(x)[:, -m.layer_latents[-1]:]
    paths = jax.vmap(lambda a, b: interpolation_path(a, b, num_steps, method))(top(x_a), top(x_b))
    shape = (*paths.shape[:2], m.total_latents)
    noise = jnp.zeros(shape) if key is None else jax.random.normal(key, shape)
    return _decode_mean(m, m.from_top(paths, noise, temperature))
  return module.apply(variables, method=run)


def interpolate_top(model: TrainedModel, x_a: ArrayLike, x_b: ArrayLike, num_steps: int = 9, *,
                    method: str = "linear", key: jax.Array | None = None,
                    temperature: float = 1.0) -> jax.Array:
  """A hierarchy's paths between images in its top layer z_L.

  Each end is z_L's posterior mean (given the means above, as `encode`); the
  path between (see `interpolation_path`) goes down the hierarchy through
  p(z_i | z_{i+1}) to z_1, at the prior's means (`key` None) or drawn from it
  at `temperature`, the same noise at every step of a path.

  Args:
    model: a trained model with stochastic_layers > 1.
    x_a: the start images, P of them, as `interpolate` takes them.
    x_b: the end images, as many.
    num_steps: points on each path, >= 2.
    method: "linear" or "slerp".
    key: a PRNG key to draw the layers below z_L; None: their means.
    temperature: > 0, scales the drawn layers' standard deviations.

  Returns:
    (P, num_steps, H, W) pictures, or (num_steps, H, W) for one pair without a batch axis.
  """
  _layers(model, "interpolate_top")
  _check_interpolation(num_steps, method)
  temperature = _temperature(temperature)
  a, b, batched = _image_pairs(model, x_a, x_b)
  with _precision(model):
    out = _interpolate_top(model.module, model.variables, a, b, key, num_steps=int(num_steps),
                           method=method, temperature=temperature)
  return _pictures(out, batched)


def _image_pairs(model: TrainedModel, x_a: ArrayLike, x_b: ArrayLike):
  """(start images, end images, whether either had a batch axis), as many of each."""
  (a, batched_a), (b, batched_b) = (as_images(x, model.image_shape) for x in (x_a, x_b))
  if len(a) != len(b):
    raise ValueError(f"expected as many start as end images; got {len(a)} and {len(b)}")
  return a, b, batched_a or batched_b


def _temperature(temperature) -> float:
  if not isinstance(temperature, (int, float, np.floating)) or not temperature > 0:
    raise ValueError(f"temperature must be a number > 0; got {temperature!r}")
  return float(temperature)


def interpolate(model: TrainedModel, x_a: ArrayLike, x_b: ArrayLike, num_steps: int = 9,
                method: str = "linear", *, labels=None, path_labels=None) -> jax.Array:
  """Decodes paths between the posterior means of P pairs of images, in one jitted call.

  Args:
    model: a trained model.
    x_a: the start images, P of them, in any form `encode` takes.
    x_b: the end images, as many.
    num_steps: images per path, both endpoints included (t = i / (num_steps - 1)).
    method: "linear" or "slerp" (see `interpolation_path`).
    labels: a conditional model's (labels of x_a, labels of x_b), each one int
      or P ints: the encoder's.
    path_labels: (start, end) classes the path is decoded with, the label
      vector moving linearly from one to the other; default `labels` (the label
      changes with the images). Equal ones keep one class along the path.

  Returns:
    (P, num_steps, H, W); (num_steps, H, W) when neither input had a batch axis.
    Step 0 is the posterior-mean reconstruction of `x_a`, the last that of `x_b`.
    For a family with discrete codes the path runs between the encoder's continuous
    outputs (h, w, D), every point quantised before it is decoded (its ends are the
    reconstructions).
  """
  if _discrete(model):
    return _interpolate_discrete(model, x_a, x_b, num_steps, method, labels, path_labels)
  _latent(model, "interpolate")
  _check_interpolation(num_steps, method)
  a, b, batched = _image_pairs(model, x_a, x_b)
  labels = _pair_of_labels(model, labels, len(a))
  path_labels = labels if path_labels is None else _pair_of_labels(model, path_labels, len(a))
  labels, path_labels = (None if pair[0] is None else pair for pair in (labels, path_labels))
  with _precision(model):
    paths = _interpolate_images(model.module, model.variables, a, b, labels, path_labels,
                                num_steps=int(num_steps), method=method)
  return _pictures(paths, batched)


def _interpolate_discrete(model: TrainedModel, x_a, x_b, num_steps, method, labels,
                          path_labels) -> jax.Array:
  """`interpolate` for a family with discrete codes (no labels)."""
  _check_interpolation(num_steps, method)
  a, b, batched = _image_pairs(model, x_a, x_b)
  for pair in (labels, path_labels):
    _pair_of_labels(model, pair, len(a))  # Refuses labels.
  with _precision(model):
    paths = _interpolate_outputs(model.family, model.variables, a, b, num_steps=int(num_steps),
                                 method=method)
  return _pictures(paths, batched)


def interpolate_latents(model: TrainedModel, z_a: ArrayLike, z_b: ArrayLike,
                        num_steps: int = 9, method: str = "linear", *,
                        path_labels=None) -> jax.Array:
  """`interpolate` from codes: decodes the paths between P pairs of codes.

  Args:
    model: a trained model.
    z_a: the start codes (P, L), or (L,) for one pair.
    z_b: the end codes, of the same shape.
    num_steps: as for `interpolate`.
    method: as for `interpolate`.
    path_labels: a conditional model's (start, end) classes, as for `interpolate`.

  Returns:
    (P, num_steps, H, W), or (num_steps, H, W) for one pair without a batch axis.
  """
  _check_interpolation(num_steps, method)
  _latent(model, "interpolate_latents")
  latents = model.family.latents
  z_a, z_b = as_codes(z_a, latents), as_codes(z_b, latents)
  batched = z_a.ndim == 2 or z_b.ndim == 2
  z_a, z_b = z_a.reshape(-1, latents), z_b.reshape(-1, latents)
  if len(z_a) != len(z_b):
    raise ValueError(f"expected as many start as end codes; got {len(z_a)} and {len(z_b)}")
  path_labels = _pair_of_labels(model, path_labels, len(z_a))
  path_labels = None if path_labels[0] is None else path_labels
  with _precision(model):
    paths = _interpolate_codes(model.module, model.variables, z_a, z_b, path_labels,
                               num_steps=int(num_steps), method=method)
  return _pictures(paths, batched)


def traverse(model: TrainedModel, x: ArrayLike, dim: int, values: ArrayLike,
             labels=None) -> jax.Array:
  """Decodes the posterior mean of `x` while latent dimension `dim` sweeps `values`.

  Args:
    model: a trained model.
    x: images, as `encode` takes them.
    dim: the latent dimension to change, 0 <= dim < L.
    values: (V,) values given to z[dim]; the other dimensions keep x's mean.
    labels: a conditional model's labels of x, as `encode` takes them.

  Returns:
    (N, V, H, W), or (V, H, W) for one image without a batch axis.
  """
  _latent(model, "traverse")
  latents = model.family.latents
  if not isinstance(dim, (int, np.integer)) or not 0 <= dim < latents:
    raise ValueError(f"dim must be an integer in [0, {latents}); got {dim!r}")
  values = jnp.asarray(values, jnp.float32)
  if values.ndim != 1 or values.shape[0] == 0:
    raise ValueError(f"expected values of shape (V,) with V >= 1; got {tuple(values.shape)}")
  x, batched = as_images(x, model.image_shape)
  with _precision(model):
    return _pictures(_traverse(model.module, model.variables, x, int(dim), values,
                               as_labels(model, labels, len(x))), batched)


def kl_per_latent(model: TrainedModel, x: ArrayLike, labels=None) -> np.ndarray:
  """How much each latent carries: the mean over images x of KL(q(z_l|x) || N(0, 1)), nats.

  Args:
    model: a trained model with the N(0, I) prior (the Gaussian VAE, beta-TCVAE, FactorVAE,
      DIP-VAE, AnnealedVAE).
    x: images, as `encode` takes them.
    labels: a conditional model's labels of x.

  Returns:
    (L,) float64, in latent order.

  Raises:
    UsageError: a model whose prior is not N(0, I) (its KL does not split by latent).
  """
  _latent(model, "kl_per_latent")
  from vae_jax.families.vae import priors  # pylint: disable=g-import-not-at-top
  prior = getattr(model.module, "prior", None)
  if prior is not None and not isinstance(prior, priors.StandardNormal):
    raise UsageError(f"the KL per latent needs the N(0, I) prior; this model's is "
                     f"{type(prior).__name__}")
  mean, logvar = encode(model, x, labels)
  mean, logvar = np.asarray(mean, np.float64), np.asarray(logvar, np.float64)
  kl = 0.5 * (mean ** 2 + np.exp(logvar) - logvar - 1.0)
  return kl.reshape(-1, kl.shape[-1]).mean(axis=0)


def traversals(model: TrainedModel, x: ArrayLike, values: ArrayLike = np.linspace(-2, 2, 9),
               labels=None, kl_images: ArrayLike | None = None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Every latent's traversal of images x, one row per latent, the most informative first.

  Latent l's row decodes x's posterior mean with z[l] set to each of `values` (`traverse`);
  the rows are sorted by `kl_per_latent` over `kl_images` (default x), largest first: the
  latents a disentangling model uses come first, the collapsed ones (KL near 0, rows that
  do not change) last.

  Args:
    model: a trained model with continuous codes and the N(0, I) prior.
    x: images, as `encode` takes them.
    values: (V,) values given to each latent in turn.
    labels: a conditional model's labels of x.
    kl_images: the images the KL is averaged over; default x.

  Returns:
    (rows, order, kl): rows (N, L, V, H, W) ((L, V, H, W) for one image without a batch
    axis), row j showing latent order[j]; order (L,) the latents by decreasing KL; kl (L,)
    each latent's KL, in latent order.
  """
  kl = kl_per_latent(model, x if kl_images is None else kl_images,
                     labels if kl_images is None else None)
  order = np.argsort(-kl, kind="stable")
  rows = [np.asarray(traverse(model, x, int(dim), values, labels)) for dim in order]
  _, batched = as_images(x, model.image_shape)
  return np.stack(rows, axis=1 if batched else 0), order, kl


def manifold(model: TrainedModel, n: int = 20, quantiles: tuple[float, float] = (0.05, 0.95),
             labels=None) -> jax.Array:
  """The decoded grid of a 2-D latent space at Gaussian quantiles of the prior.

  Evenly spaced quantiles (not evenly spaced codes) give each cell the same
  prior mass, as in Kingma & Welling's figure.

  Args:
    model: a trained model with L = 2.
    n: cells per side.
    quantiles: the lowest and highest prior quantile on each axis.
    labels: a conditional model's class, one int for the whole grid.

  Returns:
    (n, n, H, W) pictures: row r has z_2 decreasing from the top, column c has z_1 increasing.
  """
  _latent(model, "manifold")
  if model.family.latents != 2:
    raise ValueError(f"a manifold grid needs a 2-D latent space; this model has "
                     f"{model.family.latents} latents")
  if not isinstance(n, (int, np.integer)) or n < 1:
    raise ValueError(f"n must be an integer >= 1; got {n!r}")
  return decode(model, _quantile_grid(n, *map(float, quantiles)), labels)


@functools.partial(jax.jit, static_argnames=("n",))
def _quantile_grid(n, low, high):
  """(n, n, 2) codes at prior quantiles, z_2 decreasing down the rows."""
  axis = jax.scipy.stats.norm.ppf(jnp.linspace(low, high, n))
  z1, z2 = jnp.meshgrid(axis, axis[::-1])
  return jnp.stack([z1, z2], axis=-1)
