"""vae_jax.convolution: the CPU convolution by matrix products equals XLA's.

Error model: both sides sum the same K = KH * KW * C products per output in
float32, in different orders, so each differs from the exact sum by at most
about K * eps * sum|products| (Higham's bound for recursive summation; blocked
or pairwise orders do better). The tests allow 2 K eps times the convolution
of |x| with |kernel|, which bounds both, so they hold on any CPU.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from vae_jax import configs
from vae_jax import convolution
from vae_jax.families import vae as vae_family

NHWC = ("NHWC", "HWIO", "NHWC")
EPS = float(jnp.finfo(jnp.float32).eps)

# (H, W, C, F, K, stride, padding, lhs dilation): the conv VAE's four layers, then
# odd sizes, larger kernels and dilations, asymmetric and negative padding.
CASES = [
    (28, 28, 1, 32, 3, 2, "SAME", 1),
    (14, 14, 32, 64, 3, 2, "SAME", 1),
    (7, 7, 64, 32, 3, 1, ((2, 1), (2, 1)), 2),
    (14, 14, 32, 1, 3, 1, ((2, 1), (2, 1)), 2),
    (8, 6, 3, 5, 3, 1, ((2, 1), (2, 1)), 2),
    (8, 8, 3, 5, 5, 1, ((3, 2), (3, 2)), 2),
    (9, 9, 2, 3, 3, 1, ((1, 1), (1, 1)), 3),
    (8, 8, 3, 4, 4, 1, ((2, 2), (2, 2)), 2),
    (10, 10, 3, 4, 3, 2, ((1, 1), (0, 2)), 1),
    (5, 7, 2, 3, 3, 1, ((0, -1), (1, 0)), 2),
    (6, 6, 3, 2, 1, 1, "VALID", 1),
]


def _xla(x, kernel, stride, padding, dilation):
  return lax.conv_general_dilated(x, kernel, (stride, stride), padding,
                                  lhs_dilation=(dilation, dilation), dimension_numbers=NHWC)


def _ours(x, kernel, stride, padding, dilation):
  return convolution.conv2d_by_matmul(x, kernel, (stride, stride), padding,
                                      (dilation, dilation))


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=str)
def test_values_and_gradients_equal_xlas_convolution(case):
  h, w, c, f, k, stride, padding, dilation = case
  x = jax.random.normal(jax.random.key(0), (2, h, w, c))
  kernel = jax.random.normal(jax.random.key(1), (k, k, c, f))
  # Compiled whole (op by op, the gradients took seconds to dispatch).
  conv = lambda f: jax.jit(lambda x, k: f(x, k, stride, padding, dilation))
  expected, got = conv(_xla)(x, kernel), conv(_ours)(x, kernel)
  assert got.shape == expected.shape
  bound = 2 * k * k * c * EPS * conv(_xla)(jnp.abs(x), jnp.abs(kernel))
  assert bool(jnp.all(jnp.abs(got - expected) <= bound + 1e-30)), float(
      jnp.max(jnp.abs(got - expected) - bound))

  # Gradients: sums of products of the same values too; checked relative to their
  # largest entry with the same per-sum allowance.
  loss = lambda conv: lambda x, kernel: jnp.sum(jnp.sin(conv(x, kernel, stride, padding,
                                                             dilation)))
  for a, b in zip(jax.jit(jax.grad(loss(_xla), (0, 1)))(x, kernel),
                  jax.jit(jax.grad(loss(_ours), (0, 1)))(x, kernel)):
    terms = max(k * k * f, 2 * h * w * k * k)  # products summed per gradient entry, at most
    np.testing.assert_allclose(b, a, rtol=0, atol=2 * terms * EPS * float(jnp.max(jnp.abs(a))))


@pytest.mark.slow
def test_on_cpu_flax_conv_layers_use_no_xla_convolution():
  """The point of the module: inside a scan XLA:CPU's convolutions are 10-20x slower."""
  layer = nn.Conv(4, (3, 3), input_dilation=2, padding=((2, 1), (2, 1)),
                  conv_general_dilated=convolution.conv_general_dilated)
  x = jnp.ones((2, 7, 7, 3))
  params = layer.init(jax.random.key(0), x)
  primitives = {e.primitive.name for e in jax.make_jaxpr(layer.apply)(params, x).eqns}
  assert jax.default_backend() == "cpu"
  assert "conv_general_dilated" not in primitives and "dot_general" in primitives, primitives


@pytest.mark.slow
def test_what_it_does_not_cover_goes_to_xla_unchanged():
  x = jnp.ones((2, 8, 8, 4))
  grouped = jax.random.normal(jax.random.key(0), (3, 3, 2, 4))
  args = (x, grouped, (1, 1), "SAME", None, None, NHWC, 2)
  jaxpr = jax.make_jaxpr(lambda x, k: convolution.conv_general_dilated(x, k, *args[2:]))(
      x, grouped)
  assert [e.primitive.name for e in jaxpr.eqns] == ["conv_general_dilated"]
  np.testing.assert_array_equal(convolution.conv_general_dilated(*args),
                                lax.conv_general_dilated(*args))


@pytest.mark.slow
@pytest.mark.parametrize("image_shape", [(28, 28, 1), (32, 32, 3)])
def test_the_conv_decoder_is_flaxs_transposed_convolution(image_shape):
  """Its layers were nn.ConvTranspose: the same parameter tree, the same initial
  values for a key (so checkpoints and seeds carry over), the same outputs."""
  config = configs.load("default")
  config.model = "conv"
  decoder = vae_family.from_config(config, image_shape).decoder
  features = tuple(config.conv_features)

  class Transposed(nn.Module):
    @nn.compact
    def __call__(self, z):
      x = nn.relu(nn.Dense(image_shape[0] // 4 * image_shape[1] // 4 * features[-1],
                           name="project")(z))
      x = x.reshape(*x.shape[:-1], image_shape[0] // 4, image_shape[1] // 4, features[-1])
      x = nn.relu(nn.ConvTranspose(features[0], (3, 3), strides=(2, 2), name="deconv0")(x))
      return nn.ConvTranspose(image_shape[2], (3, 3), strides=(2, 2), name="deconv1")(x)

  z = jax.random.normal(jax.random.key(0), (4, config.latents))
  ours, theirs = decoder.init(jax.random.key(1), z), Transposed().init(jax.random.key(1), z)
  assert jax.tree.structure(ours) == jax.tree.structure(theirs)
  for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs)):
    np.testing.assert_array_equal(a, b)
  expected, got = Transposed().apply(theirs, z), decoder.apply(theirs, z)
  # deconv1 sums 9 * 32 products of relu'd values that deconv0 summed over 9 * 64.
  np.testing.assert_allclose(got, expected, rtol=0,
                             atol=2 * 9 * 64 * 9 * 32 * EPS * float(jnp.max(jnp.abs(expected))))
