"""Times `vae_jax.interpolate` on 1,000 pairs x 9 steps in one call, after compilation.

    python experiments/bench_latent.py                    # fresh 784-400-20 model, random digits
    python experiments/bench_latent.py --workdir=/tmp/vae # a trained model and its test digits

The cost does not depend on the parameter values, so a freshly initialised
default model times the same as a trained one. Each timed call is the public
API end to end: input checks and uint8 -> float conversion on the host,
encoding 2 x 1,000 images, 9,000 decodes, and the wait for the result.

Result on the 2-core CPU machine (jax 0.10.2, other jobs running, fresh
default model, random digits): first call 0.80 s with compilation, then a
median of 0.114 s per call over 10 calls (linear; slerp 0.108 s), about
80,000 decoded images/s. The target was under 1 s.
"""
import argparse
import os
import statistics
import time

import jax
import numpy as np

import vae_jax
from vae_jax.families import vae as vae_family
from vae_jax.configs import default


def build_model(workdir: str | None) -> vae_jax.TrainedModel:
  """The workdir's trained model, or the default 784-400-20 VAE freshly initialised."""
  if workdir:
    return vae_jax.load(workdir)
  config = default.get_config()
  module = vae_family.from_config(config, (28, 28, 1))
  params = jax.jit(vae_family.init_params, static_argnums=0)(module, jax.random.key(0))
  return vae_jax.TrainedModel(vae_family.GaussianVAE(module), params, config, 0)


def inputs(model: vae_jax.TrainedModel, pairs: int, from_test_set: bool):
  """Two uint8 batches (pairs, H, W): test images when trained, else random pixels."""
  rng = np.random.default_rng(0)
  if from_test_set:
    from vae_jax import figures  # pylint: disable=g-import-not-at-top
    test, _ = figures.test_set(model)
    chosen = test[rng.integers(0, len(test), 2 * pairs)].reshape(2, pairs, *model.image_shape)
    return chosen[0], chosen[1]
  return tuple(rng.integers(0, 256, (2, pairs, *model.image_shape), dtype=np.uint8))


def time_calls(call, repeats: int) -> tuple[float, list[float]]:
  """(seconds of the first call, compilation included; seconds of each later call)."""
  start = time.perf_counter()
  jax.block_until_ready(call())
  first = time.perf_counter() - start
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(call())
    times.append(time.perf_counter() - start)
  return first, times


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", help="a trained workdir; default a fresh default model")
  parser.add_argument("--pairs", type=int, default=1000)
  parser.add_argument("--steps", type=int, default=9)
  parser.add_argument("--method", default="linear", choices=("linear", "slerp"))
  parser.add_argument("--repeats", type=int, default=10)
  args = parser.parse_args()

  model = build_model(args.workdir)
  x_a, x_b = inputs(model, args.pairs, from_test_set=bool(args.workdir))
  call = lambda: vae_jax.interpolate(model, x_a, x_b, args.steps, args.method)
  first, times = time_calls(call, args.repeats)
  print(f"{model.family.describe(model.params)}, "
        f"{'trained' if args.workdir else 'fresh'} parameters")
  print(f"interpolate: {args.pairs:,} pairs x {args.steps} steps ({args.method}) in one call, "
        f"output {call().shape}, on {jax.device_count()} {jax.devices()[0].platform} device(s), "
        f"{os.cpu_count()} CPU cores")
  print(f"  first call (compilation included): {first:.2f} s")
  print(f"  after compilation: median {statistics.median(times):.3f} s over {len(times)} calls "
        f"(min {min(times):.3f} s, max {max(times):.3f} s); "
        f"{args.pairs * args.steps / statistics.median(times):,.0f} decoded images/s")


if __name__ == "__main__":
  main()
