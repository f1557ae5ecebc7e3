"""shapes2d: dSprites' factor grid, rendered procedurally (`--config.dataset=shapes2d`).

    3 shapes (square, ellipse, heart) x 6 scales (0.5 .. 1) x 40 orientations
    (2 pi k / 40, k = 0 .. 39) x 32 x positions x 32 y positions
    = 737,280 binary 64 x 64 images, each a deterministic function of its
    factor indices (shape, scale, orientation, x, y).

Geometry. A shape is an inside test in its own coordinates (y up): the
square |u|, |v| <= 1; the ellipse (u / 1.3)^2 + (v / 0.65)^2 <= 1; the heart
(u^2 + w^2 - 1)^3 - u^2 w^3 <= 0 (the standard implicit heart) with
w = v + `HEART_CENTROID`, which puts its centroid at the origin, point down.
Scale s makes one shape unit `s * UNIT` pixels; orientation k turns the
shape by 2 pi k / 40 counter-clockwise as seen in the image. Position (x, y)
puts the shape's centre on the centre of pixel (column 16 + x, row 16 + y):
x = 0 .. 31 is the value x / 31 in [0, 1], left to right, y likewise top to
bottom, so the centres span the middle half of the image and no shape ever
touches its border. A pixel is 255 when its centre is inside the shape, else 0
(no antialiasing).

How it is computed. Positions are whole pixels, so moving a shape is an
exact integer shift of its pixels: the inside test is evaluated once for
each (shape, scale, orientation) on the 31 x 31 pixels around the centre
(`stamps`: 720 stamps, 0.7 MB, computed in float64 from a tabulated
cosine table completed by exact quarter-turn symmetry, so a quarter turn of
the square and a half turn of the ellipse give the very same pixels), and
`render` pastes each image's stamp at its position. That equals the inside
test evaluated on the whole canvas (`render_on_canvas`, its definition) bit
for bit, and uses only + - * / and comparisons of float64, no libm: the
same bytes on every machine.

Why images are rendered on the host when read, not stored. Pasting stamps
runs at memory speed, as fast as reading the same images from a page-cached
`.npy` and far faster than reading them from disk, without the one-time
generation and the 3.0 GB file that a cache would cost: `RenderedImages` is a
lazy uint8 array `(N, 64, 64, 1)` with the protocol of
`vae_jax.sources.tfds_records.RecordImages` (`read(rows)`, `subset`,
indexing, `np.asarray`), so a streamed run renders each chunk as it reads it
and a device-resident run renders the training set once (`np.asarray`).
Rendering inside the jitted step from the indices alone would save the
device the images' memory but needs the trainer to take indices instead of
images; at 64 x 64 the images fit. `experiments/bench_shapes2d.py` measures
the alternatives (docs/your-images.md has the figures).

How it differs from the real dSprites file (`vae_jax.sources.dsprites`): its
shapes are drawn from these formulas, not dSprites' sprites, so sizes,
outlines and pixel positions differ; orientations are 2 pi k / 40 without
dSprites' duplicate at 2 pi (its linspace(0, 2 pi, 40) holds both ends);
positions are whole-pixel steps. As in dSprites, the square repeats every
10 orientations and the ellipse every 20.
"""
import functools

import numpy as np

from vae_jax.sources import factors as factors_lib
from vae_jax.sources import lazy
from vae_jax.sources import pixels

NAME = "shapes2d"
SHAPES = ("square", "ellipse", "heart")
SCALES = tuple(np.linspace(0.5, 1.0, 6).tolist())  # Factor values, as dSprites'.
NUM_ORIENTATIONS = 40
NUM_POSITIONS = 32
FACTOR_NAMES = ("shape", "scale", "orientation", "x", "y")
FACTOR_SIZES = (len(SHAPES), len(SCALES), NUM_ORIENTATIONS, NUM_POSITIONS, NUM_POSITIONS)
IMAGE_SIZE = 64
UNIT = 9.75  # Pixels per shape unit at scale 1; no multiple by a scale is an integer (no ties).
ELLIPSE_AXES = (1.3, 0.65)
# The centroid of the heart (x^2 + y^2 - 1)^3 <= x^2 y^3 lies at (0, 0.29348); from a
# 3001 x 3001 grid on [-1.5, 1.5]^2 (tests/test_shapes2d.py checks it).
HEART_CENTROID = 0.29348
FIRST_CENTRE = 16  # The pixel (row or column) of position 0.
WINDOW = 15  # A stamp covers offsets -WINDOW .. WINDOW from the centre pixel.
RENDER_BATCH = 8192  # Images rendered at once by `np.asarray(RenderedImages)`.


# cos and sin of 2 pi k / 40 for k = 0 .. 9 (the first quarter turn), as math.cos and math.sin
# gave them (glibc), written out so that no machine's libm enters the pixels.
_QUARTER_COS = (1.0, 0.9876883405951378, 0.9510565162951535, 0.8910065241883679,
                0.8090169943749475, 0.7071067811865476, 0.5877852522924731, 0.4539904997395468,
                0.30901699437494745, 0.15643446504023092)
_QUARTER_SIN = (0.0, 0.15643446504023087, 0.3090169943749474, 0.45399049973954675,
                0.5877852522924731, 0.7071067811865475, 0.8090169943749475, 0.8910065241883678,
                0.9510565162951535, 0.9876883405951378)


def rotations() -> tuple[np.ndarray, np.ndarray]:
  """cos and sin of 2 pi k / 40, k = 0 .. 39, float64 (40,): the first quarter tabulated, the
  others by exact symmetry (a quarter turn maps (c, s) to (-s, c))."""
  c, s = list(_QUARTER_COS), list(_QUARTER_SIN)
  cos, sin = list(c), list(s)
  for _ in range(3):
    c, s = [-v for v in s], c
    cos, sin = cos + c, sin + s
  return np.array(cos), np.array(sin)


def inside(shape: int, u, v):
  """Whether points (u, v) (shape units, y up, any array shape) are inside shape `shape`.

  Products, not powers: `**` may call a libm or SIMD `pow` whose last bit varies by machine.
  """
  if shape == 0:
    return (abs(u) <= 1) & (abs(v) <= 1)
  if shape == 1:
    a, b = u / ELLIPSE_AXES[0], v / ELLIPSE_AXES[1]
    return a * a + b * b <= 1
  w = v + HEART_CENTROID
  r = u * u + w * w - 1
  return r * r * r - u * u * w * w * w <= 0


def _shape_coordinates(dx, dy, scale: int, orientation, xp=np):
  """Pixel offsets from the centre (dx right, dy down) -> shape coordinates (u, v) of the
  shape at `scale` (index) turned by `orientation` (indices, broadcast with dx)."""
  cos, sin = (xp.asarray(t) for t in rotations())
  c, s = cos[orientation % NUM_ORIENTATIONS], sin[orientation % NUM_ORIENTATIONS]
  length = SCALES[scale] * UNIT
  x, y = dx, -dy
  return (c * x + s * y) / length, (c * y - s * x) / length


@functools.cache
def stamps() -> np.ndarray:
  """uint8 (3, 6, 40, 31, 31): the pixels (0 or 255) of each (shape, scale, orientation)
  around the centre pixel, offsets -WINDOW .. WINDOW (rows down, columns right)."""
  d = np.arange(-WINDOW, WINDOW + 1, dtype=np.float64)
  dy, dx = d[None, :, None], d[None, None, :]
  orientation = np.arange(NUM_ORIENTATIONS)[:, None, None]
  out = np.zeros((*FACTOR_SIZES[:3], 2 * WINDOW + 1, 2 * WINDOW + 1), np.uint8)
  for scale in range(len(SCALES)):
    u, v = _shape_coordinates(dx, dy, scale, orientation)
    for shape in range(len(SHAPES)):
      out[shape, scale] = np.where(inside(shape, u, v), 255, 0)
  out.setflags(write=False)
  return out


def render(factors, out: np.ndarray | None = None) -> np.ndarray:
  """The images of factor indices.

  Args:
    factors: integers `(n, 5)`: shape, scale, orientation, x, y (`FACTOR_SIZES`);
      orientation may be any integer (k + 40 is a full turn from k).
    out: uint8 `(n, 64, 64, 1)` zeros to render into (saves a copy); None: a new array.

  Returns:
    uint8 `(n, 64, 64, 1)`, 0 or 255 (`out` when given).

  Raises:
    ValueError: factors of the wrong shape or type, or outside the grid.
  """
  factors = _checked(factors)
  if out is None:
    out = np.zeros((len(factors), IMAGE_SIZE, IMAGE_SIZE, 1), np.uint8)
  side = 2 * WINDOW + 1
  # Writable views of every side x side window of each image: out[i, r:r+side, c:c+side].
  windows = np.lib.stride_tricks.sliding_window_view(out[..., 0], (side, side), axis=(1, 2),
                                                     writeable=True)
  shape, scale, orientation, x, y = factors.T
  first = FIRST_CENTRE - WINDOW
  windows[np.arange(len(factors)), first + y, first + x] = stamps()[
      shape, scale, orientation % NUM_ORIENTATIONS]
  return out


def render_on_canvas(factors, xp=np) -> np.ndarray:
  """What `render` returns, by the inside test at every pixel of the canvas (its definition;
  many times slower). `xp=jax.numpy` evaluates it with jax (in float32 unless x64 is on).

  Args, Returns: as for `render`.
  """
  factors = _checked(factors)
  pixel = xp.arange(IMAGE_SIZE, dtype=xp.float64 if xp is np else None)
  out = []
  for shape in range(len(SHAPES)):
    for scale in range(len(SCALES)):
      mine = np.flatnonzero((factors[:, 0] == shape) & (factors[:, 1] == scale))
      if not len(mine):
        continue
      f = factors[mine]
      dx = pixel[None, None, :] - (FIRST_CENTRE + f[:, 3])[:, None, None]
      dy = pixel[None, :, None] - (FIRST_CENTRE + f[:, 4])[:, None, None]
      u, v = _shape_coordinates(dx, dy, scale, f[:, 2][:, None, None], xp)
      out.append((mine, np.asarray(xp.where(inside(shape, u, v), 255, 0), np.uint8)))
  images = np.zeros((len(factors), IMAGE_SIZE, IMAGE_SIZE), np.uint8)
  for mine, part in out:
    images[mine] = part
  return images[..., None]


def _checked(factors) -> np.ndarray:
  """int64 (n, 5) factors, shape, scale, x and y inside the grid, orientation any integer."""
  factors = np.asarray(factors)
  if factors.ndim == 2 and factors.shape[1] == len(FACTOR_SIZES) and len(factors):
    factors = factors.copy()
    factors[:, 2] %= NUM_ORIENTATIONS
  checked = factors_lib.check(factors, FACTOR_SIZES)
  return checked


def ground_truth(image_size: int = 0) -> factors_lib.GroundTruth:
  """The grid's observations by factor indices (rendered), resized to image_size when > 0."""
  return factors_lib.GroundTruth(FACTOR_NAMES, FACTOR_SIZES, render, image_size)


def all_factors() -> np.ndarray:
  """int32 (737280, 5): every combination, in the dSprites file's order (y fastest)."""
  return factors_lib.grid(FACTOR_SIZES)


class RenderedImages(lazy.LazyRows):
  """The images of factor rows as a lazy uint8 array (N, S, S, 1), rendered when read.

  Indexing (an int, a slice, an array of indices or a boolean mask) and
  `read(rows)` render those rows; `subset(rows)` is a lazy subset (how a
  test set is split off); `np.asarray` renders all of them.
  """

  ndim = 4

  def __init__(self, factors: np.ndarray, image_size: int = 0):
    """
    Args:
      factors: int (N, 5), the rows' factor indices.
      image_size: S > 0 resizes each image to S x S; 0 keeps 64 x 64.
    """
    self.factors = np.asarray(factors, np.int32)
    self.image_size = image_size
    size = image_size or IMAGE_SIZE
    self.shape = (len(self.factors), size, size, 1)
    self.dtype = np.dtype(np.uint8)

  @property
  def nbytes(self) -> int:
    return int(np.prod(self.shape))

  def __len__(self) -> int:
    return self.shape[0]

  def subset(self, rows) -> "RenderedImages":
    """Images `rows` (indices or a boolean mask), lazily: nothing is rendered."""
    return RenderedImages(self.factors[rows], self.image_size)

  def read(self, rows) -> np.ndarray:
    """Images `rows` (int (K,)) -> uint8 (K, S, S, 1), rendered now."""
    images = render(self.factors[np.asarray(rows, np.int64).reshape(-1)])
    return pixels.resize(images, self.image_size) if self.image_size else images

  def __array__(self, dtype=None, copy=None) -> np.ndarray:
    """All images, rendered in batches."""
    del copy  # Always a fresh array.
    out = np.zeros(self.shape, np.uint8)
    for start in range(0, len(self), RENDER_BATCH):
      rows = slice(start, start + RENDER_BATCH)
      if self.image_size:
        out[rows] = self.read(np.arange(len(self))[rows])
      else:
        render(self.factors[rows], out=out[rows])
    return out if dtype is None else out.astype(dtype)
