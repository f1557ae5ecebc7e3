"""Benchmark of the IWAE evaluation: time and FLOP rate at k = 5,000, peak memory vs k.

    python experiments/bench_eval.py                                  # the full run
    python experiments/bench_eval.py --num_images=200 --memory_images=20   # a smoke test

(a) Times `evaluation.evaluate` with k importance samples on `--num_images`
    images for the default 784-400-20 Bernoulli VAE with random parameters
    and mnist_sample's test digits (repeated), or for the model and test set
    of `--workdir` (the cost does not depend on the values), and reports the
    achieved GFLOP/s next to the sustained rate of a bare XLA matmul of the
    decoder's largest shape, measured in the same process before and after:
    the cores' FLOP rate for this work on a machine shared with others.
(b) Runs the same evaluation for each k in `--memory_ks` on `--memory_images`
    images in fresh subprocesses and prints each one's peak resident memory
    (`ru_maxrss`), so the figures compare.
"""
import json
import math
import os
import resource
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app
from absl import flags

import vae_jax
from vae_jax import data
from vae_jax import evaluation
from vae_jax.families import vae as vae_family
from vae_jax.configs import default

_WORKDIR = flags.DEFINE_string("workdir", None, "A trained model; default random parameters.")
_NUM_IMAGES = flags.DEFINE_integer("num_images", 10_000, "Images for the timing run.")
_K = flags.DEFINE_integer("k", 5000, "Importance samples per image for the timing run.")
_SAMPLE_CHUNK = flags.DEFINE_integer(
    "sample_chunk", 100, "Samples drawn at once per image; 100 x 100 images = 10,000 decoder "
    "rows per step, the fastest size on a 2-core CPU (50,000 rows: 1.5 times slower).")
_EXAMPLE_CHUNK = flags.DEFINE_integer("example_chunk", 100, "Images evaluated at once.")
_MEMORY_KS = flags.DEFINE_list("memory_ks", ["1", "100", "1000", "5000"], "k values for (b).")
_MEMORY_IMAGES = flags.DEFINE_integer("memory_images", 100, "Images per memory run.")
_SKIP_TIME = flags.DEFINE_bool("skip_time", False, "Skip (a).")
_SKIP_MEMORY = flags.DEFINE_bool("skip_memory", False, "Skip (b).")
_CHILD_K = flags.DEFINE_integer("child_k", None, "Internal: one memory run with this k.")
# The contrast without sample chunks stops here: 200,000 rows of 784 float32
# logits are 0.6 GB per buffer, and the machine is shared.
MAX_UNCHUNKED_ROWS = 200_000


def load_model() -> vae_jax.TrainedModel:
  """The trained model of --workdir, or the default config's VAE with random parameters."""
  if _WORKDIR.value:
    return vae_jax.load(_WORKDIR.value)
  config = default.get_config()
  module = vae_family.from_config(config, (28, 28, 1))
  return vae_jax.TrainedModel(vae_family.GaussianVAE(module),
                              vae_family.init_params(module, jax.random.key(0)), config, 0)


def evaluation_images(trained: vae_jax.TrainedModel, n: int) -> np.ndarray:
  """n test images, uint8 (n, H, W, C): those of --workdir's dataset as `vae_jax.evaluate`
  sees them, else mnist_sample's digits; repeated when the split has fewer."""
  if _WORKDIR.value:
    dataset = data.load(data.settings(trained.config))
    images = evaluation.evaluation_inputs(dataset.test.images, binarize=trained.config.binarize,
                                          seed=trained.config.seed)
  else:
    images = data.load_idx_dir(data.SAMPLE_DIR).test.images
  return np.resize(images, (n, *images.shape[1:]))


def flop_count(trained, n: int, k: int) -> int:
  """Multiply-adds x 2 of the matmuls run: per sample the decoder (L->H->D), per
  image the encoder (D->H->2L) twice (once for the samples, once for the
  posterior means). Elementwise work (ReLU, the Bernoulli log-likelihood,
  the sampling) is not counted."""
  d, h, l = math.prod(trained.image_shape), trained.config.hidden, trained.module.latents
  return n * (k * 2 * (l * h + h * d) + 2 * 2 * (d * h + h * 2 * l))


def matmul_rate(rows: int, hidden: int, features: int, seconds: float = 3.0) -> float:
  """GFLOP/s of a jitted float32 (rows, hidden) @ (hidden, features) matmul: the median
  call in `seconds` of repeats, a sustained rate (the best call is 10-25% faster)."""
  a = jnp.ones((rows, hidden), jnp.float32)
  w = jnp.ones((hidden, features), jnp.float32)
  f = jax.jit(lambda a, w: a @ w)
  f(a, w).block_until_ready()
  times, end = [], time.perf_counter() + seconds
  while time.perf_counter() < end:
    start = time.perf_counter()
    f(a, w).block_until_ready()
    times.append(time.perf_counter() - start)
  return 2 * rows * hidden * features / float(np.median(times)) / 1e9


def run_evaluation(trained, images, k: int) -> dict:
  return evaluation.evaluate(trained, images, k=k, key=jax.random.key(0),
                             sample_chunk=_SAMPLE_CHUNK.value,
                             example_chunk=_EXAMPLE_CHUNK.value, progress=True)


def time_full_run() -> None:
  """(a): k samples on num_images images; prints seconds and GFLOP/s."""
  trained = load_model()
  n, k = _NUM_IMAGES.value, _K.value
  hidden, features = trained.config.hidden, math.prod(trained.image_shape)
  images = evaluation_images(trained, n)
  rows = min(_EXAMPLE_CHUNK.value, n) * min(_SAMPLE_CHUNK.value, k)
  reference = [matmul_rate(rows, hidden, features)]
  load = [os.getloadavg()[0]]
  warm = run_evaluation(trained, images[:_EXAMPLE_CHUNK.value], k)  # Compiles.
  result = run_evaluation(trained, images, k)
  load.append(os.getloadavg()[0])
  reference.append(matmul_rate(rows, hidden, features))
  rate = flop_count(trained, n, k) / result["seconds"] / 1e9
  print(f"\n(a) k = {k:,} on {n:,} images, {trained.family.describe(trained.params)}, "
        f"{jax.device_count()} {jax.devices()[0].platform} device(s), "
        f"{os.cpu_count()} CPU cores, load average {load[0]:.2f} before, {load[1]:.2f} after")
  print(f"    first chunk (compile + {_EXAMPLE_CHUNK.value} images): {warm['seconds']:.1f} s")
  print(f"    evaluation: {result['seconds']:.1f} s, {flop_count(trained, n, k) / 1e12:.2f} "
        f"TFLOP of matmuls -> {rate:.1f} GFLOP/s")
  print(f"    bare XLA matmul ({rows} x {hidden}) @ ({hidden} x {features}), "
        f"median call in 3 s: {reference[0]:.1f} GFLOP/s before, {reference[1]:.1f} after -> "
        f"the evaluation runs at {100 * rate / max(reference):.0f}% of the better")
  print(f"    NLL {result['nll']:.2f} ± {result['nll_stderr']:.2f}, "
        f"ELBO {result['elbo']:.2f}, active units {result['active_units']}")


def child_run(k: int) -> None:
  """One memory run in this fresh process: prints a JSON line with its peak RSS."""
  trained = load_model()
  result = run_evaluation(trained, evaluation_images(trained, _MEMORY_IMAGES.value), k)
  peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux.
  print(json.dumps({"k": k, "seconds": result["seconds"], "peak_rss_mib": peak_kib / 1024,
                    "nll": result["nll"]}))


def memory_table() -> None:
  """(b): one fresh subprocess per k; prints k, seconds and peak RSS, chunked and not."""
  images, example_chunk = _MEMORY_IMAGES.value, _EXAMPLE_CHUNK.value
  print(f"\n(b) peak memory vs k on {images} images, example chunk {example_chunk}, sample "
        f"chunk {_SAMPLE_CHUNK.value} (a fresh process each); for contrast, one sample chunk "
        f"of all k (up to {MAX_UNCHUNKED_ROWS:,} decoder rows)")
  print(f"    {'k':>6}  {'rows/step':>9}  {'seconds':>8}  {'peak RSS MiB':>12}  "
        f"{'unchunked: seconds':>18}  {'peak RSS MiB':>12}")
  for k in map(int, _MEMORY_KS.value):
    rows = min(example_chunk, images) * min(_SAMPLE_CHUNK.value, k)
    chunked = _child(k, _SAMPLE_CHUNK.value)
    line = f"    {k:>6}  {rows:>9,}  {chunked['seconds']:>8.2f}  {chunked['peak_rss_mib']:>12.0f}"
    if min(example_chunk, images) * k <= MAX_UNCHUNKED_ROWS:
      whole = _child(k, k)
      line += f"  {whole['seconds']:>18.2f}  {whole['peak_rss_mib']:>12.0f}"
    print(line, flush=True)


def _child(k: int, sample_chunk: int) -> dict:
  """Runs `child_run(k)` in a fresh process with `sample_chunk`; returns its JSON record."""
  passed = [f"--{name}={flags.FLAGS[name].value}" for name in
            ("num_images", "example_chunk", "memory_images")]
  passed += [f"--workdir={_WORKDIR.value}"] if _WORKDIR.value else []
  out = subprocess.run([sys.executable, __file__, f"--child_k={k}",
                        f"--sample_chunk={sample_chunk}", *passed],
                       capture_output=True, text=True, check=True).stdout
  return json.loads(out.strip().splitlines()[-1])


def main(argv):
  del argv
  if _CHILD_K.value is not None:
    child_run(_CHILD_K.value)
    return
  if not _SKIP_TIME.value:
    time_full_run()
  if not _SKIP_MEMORY.value:
    memory_table()


if __name__ == "__main__":
  app.run(main)
