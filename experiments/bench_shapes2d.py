"""How to feed shapes2d (`vae_jax.sources.shapes2d`): render when read, or generate once.

    python experiments/bench_shapes2d.py              # a few minutes on 2 cores; 2.8 GiB of scratch
    python experiments/bench_shapes2d.py --runs=5 --scratch=/big/disk

Prints the CPU, then medians of `--runs` runs of:
  * rendering throughput, images/s, on `--batch` random factor rows: numpy
    `render` (stamps pasted at their positions: what the library uses), numpy
    `render_on_canvas` (the inside test at every pixel, float64), and in jax,
    jitted, with the indices already on the device: the inside test at every
    pixel (float32) and the stamps pasted with `dynamic_update_slice` (what
    rendering on the device inside the step would cost); and how many of the
    jax float32 images equal the float64 ones;
  * the one-time generation of a cache: all 737,280 images rendered and written
    to an `.npy` (written, fsynced): seconds and bytes;
  * an epoch's input on the host, as `vae_jax.streaming` reads it: the 663,552
    training images in a random order, chunks of 32,768 through
    `streaming.Reader`, from that `.npy` (in the page cache, just written: the
    best case for a cache) and from `RenderedImages` (rendered as read);
  * a resident run's one-off load: `np.asarray(RenderedImages)` of the training
    split against `np.load` of the cached `.npy` (page cache).
"""
import os
import platform
import statistics
import tempfile
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from vae_jax import data
from vae_jax import streaming
from vae_jax.configs import default
from vae_jax.sources import factors as factors_lib
from vae_jax.sources import shapes2d

_RUNS = flags.DEFINE_integer("runs", 3, "Runs of each measurement; the median is printed.")
_BATCH = flags.DEFINE_integer("batch", 8192, "Factor rows per rendering call.")
_CHUNK = flags.DEFINE_integer("chunk", 32_768, "Rows per read of the epoch's input.")
_SCRATCH = flags.DEFINE_string("scratch", None, "Where the generated .npy goes (default: /tmp).")


def cpu_model() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      lines = f.read().splitlines()
  except OSError:
    return platform.processor() or "unknown CPU"
  name = next((l.split(":", 1)[1].strip() for l in lines if l.startswith("model name")), "?")
  flags_line = next((l for l in lines if l.startswith("flags")), "")
  simd = "AVX-512" if " avx512f" in flags_line else "AVX2" if " avx2" in flags_line else "no AVX2"
  return f"{name}, {os.cpu_count()} cores, {simd}"


def timed(fn, runs: int) -> tuple[float, list[float]]:
  """(median seconds, all) of `runs` calls of fn after one warm-up call."""
  fn()
  times = []
  for _ in range(runs):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times), times


def rate_line(what: str, count: int, median: float, times: list[float]) -> str:
  rates = ", ".join(f"{count / t:,.0f}" for t in times)
  return f"{what}: {count / median:,.0f} images/s (median of {len(times)}: {rates})"


def jax_renderers():
  """(inside test at every pixel, stamps pasted), jitted, int32 (B, 5) -> uint8 (B, 64, 64, 1)."""
  cos, sin = (jnp.asarray(t, jnp.float32) for t in shapes2d.rotations())
  lengths = jnp.asarray(shapes2d.SCALES, jnp.float32) * shapes2d.UNIT
  pixel = jnp.arange(shapes2d.IMAGE_SIZE, dtype=jnp.float32)
  stamps = jnp.asarray(shapes2d.stamps())
  first = shapes2d.FIRST_CENTRE - shapes2d.WINDOW

  @jax.jit
  def canvas(f):
    per_image = lambda t: t[:, None, None]
    c, s, length = (per_image(t[i]) for t, i in ((cos, f[:, 2]), (sin, f[:, 2]),
                                                  (lengths, f[:, 1])))
    dx = pixel[None, None, :] - per_image(shapes2d.FIRST_CENTRE + f[:, 3]).astype(jnp.float32)
    dy = pixel[None, :, None] - per_image(shapes2d.FIRST_CENTRE + f[:, 4]).astype(jnp.float32)
    u, v = (c * dx - s * dy) / length, (-c * dy - s * dx) / length
    shape = per_image(f[:, 0])
    ins = jnp.where(shape == 0, shapes2d.inside(0, u, v),
                    jnp.where(shape == 1, shapes2d.inside(1, u, v), shapes2d.inside(2, u, v)))
    return jnp.where(ins, 255, 0).astype(jnp.uint8)[..., None]

  @jax.jit
  def pasted(f):
    sprites = stamps[f[:, 0], f[:, 1], f[:, 2]]
    blank = jnp.zeros((shapes2d.IMAGE_SIZE, shapes2d.IMAGE_SIZE), jnp.uint8)
    paste = lambda sprite, x, y: jax.lax.dynamic_update_slice(blank, sprite, (first + y, first + x))
    return jax.vmap(paste)(sprites, f[:, 3], f[:, 4])[..., None]

  return canvas, pasted


def bench_rendering(runs: int, batch: int) -> float:
  """Prints the rendering throughputs; returns numpy `render_on_canvas`'s images/s."""
  rows = np.random.default_rng(0).integers(0, len(shapes2d.all_factors()), batch)
  factors = shapes2d.all_factors()[rows]
  median, times = timed(lambda: shapes2d.render(factors), runs)
  print(rate_line("numpy render (stamps)", batch, median, times), flush=True)
  median, times = timed(lambda: shapes2d.render_on_canvas(factors), runs)
  canvas_rate = batch / median
  print(rate_line("numpy render_on_canvas (inside test per pixel, float64)", batch, median,
                  times), flush=True)
  on_device = jnp.asarray(factors)
  canvas, pasted = jax_renderers()
  for what, fn in (("inside test per pixel, float32", canvas), ("stamps pasted", pasted)):
    median, times = timed(lambda fn=fn: fn(on_device).block_until_ready(), runs)
    print(rate_line(f"jax on {jax.devices()[0].platform}, jitted, {what}", batch, median, times),
          flush=True)
  reference = shapes2d.render(factors)
  same = [np.mean(np.all(np.asarray(fn(on_device)) == reference, axis=(1, 2, 3)))
          for fn in (canvas, pasted)]
  print(f"jax images equal to numpy's: inside test {same[0]:.2%}, stamps {same[1]:.2%}")
  return canvas_rate


def generate(path: str) -> None:
  """All 737,280 images into an .npy at `path`, written in batches and fsynced."""
  factors = shapes2d.all_factors()
  with open(path, "wb") as f:
    np.lib.format.write_array_header_1_0(f, {"descr": "|u1", "fortran_order": False,
                                             "shape": (len(factors), 64, 64, 1)})
    for start in range(0, len(factors), 8192):
      f.write(shapes2d.render(factors[start:start + 8192]).tobytes())
    f.flush()
    os.fsync(f.fileno())


def read_epoch(images, rows: np.ndarray, chunk: int) -> None:
  reader = streaming.Reader(images)
  try:
    for start in range(0, len(rows), chunk):
      reader.read(rows[start:start + chunk])
  finally:
    reader.close()


def main(argv) -> None:
  del argv
  runs = _RUNS.value
  print(f"{cpu_model()}; numpy {np.__version__}, jax {jax.__version__}", flush=True)
  canvas_rate = bench_rendering(runs, _BATCH.value)
  total = len(shapes2d.all_factors())
  print(f"(generating all {total:,} with render_on_canvas would take about "
        f"{total / canvas_rate:,.0f} s at that rate)")
  config = default.get_config()
  config.dataset = shapes2d.NAME
  train = data.load(config).train
  with tempfile.TemporaryDirectory(dir=_SCRATCH.value) as scratch:
    path = os.path.join(scratch, "shapes2d.npy")
    median, times = timed(lambda: generate(path), runs)
    size = os.path.getsize(path)
    print(f"one-time generation into an .npy: {median:.1f} s (median of {len(times)}: "
          f"{', '.join(f'{t:.1f}' for t in times)}), {size:,} bytes ({size / 2**30:.2f} GiB)",
          flush=True)
    cached = np.load(path, mmap_mode="r")
    grid_rows = factors_lib.grid_index(train.factors.astype(np.int64), shapes2d.FACTOR_SIZES)
    order = np.random.default_rng(1).permutation(len(train.images))
    n = len(order)
    median, times = timed(lambda: read_epoch(cached, grid_rows[order], _CHUNK.value), runs)
    print(f"epoch input, streamed from the cached .npy (page cache): {median:.2f} s per epoch "
          f"of {n:,}; " + rate_line("", n, median, times).removeprefix(": "), flush=True)
    median, times = timed(lambda: read_epoch(train.images, order, _CHUNK.value), runs)
    print(f"epoch input, rendered as read (RenderedImages): {median:.2f} s per epoch of {n:,}; "
          + rate_line("", n, median, times).removeprefix(": "), flush=True)
    median, times = timed(lambda: np.asarray(train.images), runs)
    print(f"resident load, np.asarray(RenderedImages) of the training split: {median:.2f} s "
          f"(median of {len(times)}: {', '.join(f'{t:.2f}' for t in times)})", flush=True)
    median, times = timed(lambda: np.load(path), runs)
    print(f"resident load, np.load of the cached .npy (all {total:,}, page cache): {median:.2f} s "
          f"(median of {len(times)}: {', '.join(f'{t:.2f}' for t in times)})", flush=True)


if __name__ == "__main__":
  app.run(main)
