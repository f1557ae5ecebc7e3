"""2-D convolutions as matrix products, for XLA's CPU backend inside loops.

XLA:CPU runs a convolution inside a `while` loop (every `lax.scan`: the
trainer's chunks of steps, the evaluation's chunks) 10 to 20 times slower than
the same convolution outside one (jax-ml/jax#12868): on 2 cores the conv VAE's
training step took 66 ms alone and 630 ms inside a scan. Its matrix products
do not slow down there, so on CPU `conv_general_dilated` gathers the kernel's
taps with strided slices into patches (im2col) and multiplies the patches by the
kernel; a transposed convolution takes one product per output phase, skipping
the zeros of its dilated input. Other
platforms, and convolutions it does not cover (grouped, kernel-dilated,
layouts other than NHWC/HWIO), go to `lax.conv_general_dilated` unchanged, so
results there are XLA's own bit for bit.
"""
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax import lax
import numpy as np

_NHWC = lax.ConvDimensionNumbers(lhs_spec=(0, 3, 1, 2), rhs_spec=(3, 2, 0, 1),
                                 out_spec=(0, 3, 1, 2))


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None,
                         rhs_dilation=None, dimension_numbers=None, feature_group_count=1,
                         batch_group_count=1, precision=None, preferred_element_type=None):
  """`lax.conv_general_dilated`'s signature and result; on CPU, by matrix products.

  The form `flax.linen.Conv(conv_general_dilated=...)` calls; a transposed
  convolution is this one with `lhs_dilation` (flax's `input_dilation`).
  """
  args = (lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
          feature_group_count, batch_group_count, precision, preferred_element_type)
  covered = (jax.default_backend() == "cpu" and lhs.ndim == 4
             and lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers) == _NHWC
             and feature_group_count == 1 and batch_group_count == 1
             and all(d == 1 for d in (rhs_dilation or (1, 1))))
  if not covered:
    return lax.conv_general_dilated(*args)
  return conv2d_by_matmul(lhs, rhs, tuple(window_strides), padding,
                          tuple(lhs_dilation or (1, 1)), precision, preferred_element_type)


def conv2d_by_matmul(x: jax.Array, kernel: jax.Array, strides: tuple[int, int],
                     padding: str | Sequence[tuple[int, int]],
                     lhs_dilation: tuple[int, int] = (1, 1), precision=None,
                     preferred_element_type=None) -> jax.Array:
  """A 2-D convolution (cross-correlation, as XLA's) through patches and matrix products.

  Args:
    x: (B, H, W, C).
    kernel: (KH, KW, C, F).
    strides: the window's strides (SH, SW).
    padding: "SAME", "VALID" or ((lo, hi), (lo, hi)) of the dilated input.
    lhs_dilation: (DH, DW): DH - 1 zeros between input rows (a transposed convolution).

  Returns:
    (B, HO, WO, F), as `lax.conv_general_dilated` gives.
  """
  kh, kw, c, f = kernel.shape
  dilated = [(n - 1) * d + 1 for n, d in zip(x.shape[1:3], lhs_dilation)]
  if isinstance(padding, str):
    padding = lax.padtype_to_pads(dilated, (kh, kw), strides, padding)
  out = [(n + lo + hi - k) // s + 1
         for n, (lo, hi), k, s in zip(dilated, padding, (kh, kw), strides)]
  product = lambda patches, taps: jnp.matmul(  # taps: (TH, TW, C, F) of the kernel.
      patches, taps.reshape(-1, f), precision=precision,
      preferred_element_type=preferred_element_type)
  if lhs_dilation != (1, 1) and strides == (1, 1) and all(
      o % d == 0 and k >= d for o, d, k in zip(out, lhs_dilation, (kh, kw))):
    return _by_phases(x, kernel, product, padding, lhs_dilation, out)
  zero = jnp.zeros((), x.dtype)
  x = lax.pad(x, zero, [(0, 0, 0), (*padding[0], lhs_dilation[0] - 1),
                        (*padding[1], lhs_dilation[1] - 1), (0, 0, 0)])
  return product(_patches(x, [(i, j) for i in range(kh) for j in range(kw)], out, strides), kernel)


def _patches(x: jax.Array, offsets: Sequence[tuple[int, int]], out: Sequence[int],
             strides: Sequence[int]) -> jax.Array:
  """(B, HO, WO, len(offsets) * C): for each output pixel (a, b), x at
  (a * SH + i, b * SW + j) for each (i, j) of `offsets`, channels last: the row
  order of a kernel's taps reshaped to (taps * C, F)."""
  (ho, wo), (sh, sw) = out, strides
  return jnp.concatenate(
      [lax.slice(x, (0, i, j, 0), (x.shape[0], i + sh * (ho - 1) + 1, j + sw * (wo - 1) + 1,
                                   x.shape[3]), (1, sh, sw, 1)) for i, j in offsets], axis=-1)


def _by_phases(x, kernel, product, padding, dilation, out):
  """A stride-1 convolution of the lhs-dilated x without multiplying its zeros.

  Output row o = D * a + r of the dilated input's convolution meets real input rows
  only at the taps i with (r + i - lo) divisible by D, at row a + (r + i - lo) // D.
  So each phase (r, s) of the output is a convolution of x itself with some of the
  kernel's taps (D^2 times fewer products in all), and the phases interleave.
  """
  phases = [_phases(*args) for args in zip(kernel.shape[:2], (lo for lo, _ in padding), dilation)]
  # x padded with zeros so that every row a + offset (a < out / D) of every phase is
  # inside it: rows outside x are zeros of the dilated input too.
  pads = [(max(0, -min(o for _, offs in p for o in offs)),
           max(0, max(o for _, offs in p for o in offs) + size // d - n))
          for p, size, d, n in zip(phases, out, dilation, x.shape[1:3])]
  x = jnp.pad(x, [(0, 0), *pads, (0, 0)])
  rows = []
  for taps_i, offs_i in phases[0]:
    row = []
    for taps_j, offs_j in phases[1]:
      offsets = [(oi + pads[0][0], oj + pads[1][0]) for oi in offs_i for oj in offs_j]
      patches = _patches(x, offsets, (out[0] // dilation[0], out[1] // dilation[1]), (1, 1))
      row.append(product(patches, kernel[np.ix_(taps_i, taps_j)]))
    rows.append(jnp.stack(row, axis=3))  # (B, A, Bw, DW, F)
  y = jnp.stack(rows, axis=2)  # (B, A, DH, Bw, DW, F)
  b, a, dh, bw, dw, f = y.shape
  return y.reshape(b, a * dh, bw * dw, f)


def _phases(k: int, lo: int, d: int) -> list[tuple[list[int], list[int]]]:
  """Per output phase r = 0 .. d - 1 along one axis: the kernel taps that meet real
  input rows, and the input row offsets they meet."""
  phases = []
  for r in range(d):
    taps = [i for i in range(k) if (r + i - lo) % d == 0]
    phases.append((taps, [(r + i - lo) // d for i in taps]))
  return phases
