"""Training speed of the seed model: one 60,000-example epoch on the device.

    python experiments/bench_train.py                 # Fashion-MNIST if installed, else random bytes
    python experiments/bench_train.py --epochs=7 --baselines=false

Prints, from one process so the ratios are fair on a noisy machine:
  * compile time of the epoch (shuffle + lax.scan chunks), apart from running;
  * seconds per epoch (median of --epochs), examples/s and achieved GFLOP/s,
    counting 3.28 MFLOP per example (forward 651,200 multiply-adds, backward
    twice that less the unneeded input gradient of the first layer);
  * baselines measured in the same run: the same step as a Python loop of
    jitted steps (one dispatch per batch), and the matrix products alone
    (the 5 large GEMMs of a step, in the same lax.scan), which bound what the
    step can reach with XLA's GEMMs on this machine, and a 4096^3 GEMM.
"""
import functools
import statistics
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from vae_jax import data
from vae_jax import model as model_lib
from vae_jax import parallel
from vae_jax import trainer
from vae_jax.configs import default

_EPOCHS = flags.DEFINE_integer("epochs", 5, "Timed epochs (after one warm-up epoch).")
_DATA_DIR = flags.DEFINE_string("data_dir", "/usr/share/datasets/fashion-mnist",
                                "IDX folder; random bytes if missing.")
_BASELINES = flags.DEFINE_bool("baselines", True, "Also time the baselines.")

EXAMPLES = 60_000


def flops_per_example(d: int, h: int, latents: int) -> int:
  """Forward + backward FLOPs of the MLP VAE (2 per multiply-add)."""
  forward = d * h + h * 2 * latents + latents * h + h * d
  backward = 2 * forward - d * h  # Weight grads everywhere, input grads but the first layer's.
  return 2 * (forward + backward)


def _images() -> np.ndarray:
  try:
    return data.load_idx_dir(_DATA_DIR.value).train.images.reshape(EXAMPLES, -1)
  except Exception:  # pylint: disable=broad-except
    return np.random.default_rng(0).integers(0, 256, (EXAMPLES, 784), np.uint8)


def _median_seconds(fn, repeats: int) -> tuple[float, list[float]]:
  fn()  # Warm-up.
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times), times


def time_scan_epoch(config, images, repeats):
  """The trainer's epoch: shuffle on the device, lax.scan over chunks."""
  mesh = parallel.make_mesh()
  model = model_lib.from_config(config, (28, 28))
  state = jax.device_put(trainer.create_train_state(model, config, jax.random.key(0)),
                         parallel.replicated(mesh))
  device_data = trainer._DeviceData(  # pylint: disable=protected-access
      parallel.put(images, parallel.sharded(mesh, 0, 2)), len(images), None, None, None)
  steps = len(images) // config.batch_size
  chunk = trainer._chunk_size(steps, config.chunks_per_epoch)  # pylint: disable=protected-access
  start = time.perf_counter()
  fns = trainer._compile_epoch(model, state, device_data, config, chunk, mesh)  # pylint: disable=protected-access
  compile_seconds = time.perf_counter() - start
  holder = {"state": state, "epoch": 0}

  def epoch():
    key = jax.random.fold_in(jax.random.key(1), holder["epoch"])
    holder["epoch"] += 1
    shuffle_key, steps_key = jax.random.split(key)
    batches = fns.shuffle(device_data.train, shuffle_key)
    for start_step in range(0, steps, chunk):
      holder["state"], losses = fns.chunk(holder["state"], batches, steps_key, jnp.int32(start_step))
      losses.block_until_ready()  # As in the trainer: one sync per chunk.

  median, times = _median_seconds(epoch, repeats)
  return compile_seconds, median, times, steps * config.batch_size


def time_python_loop(config, images, repeats):
  """Baseline: one jitted step per batch, dispatched from a Python loop."""
  model = model_lib.from_config(config, (28, 28))
  state = trainer.create_train_state(model, config, jax.random.key(0))
  step_fn = jax.jit(functools.partial(trainer.train_step, model, binarize=False),
                    donate_argnums=0)
  device_images = jnp.asarray(images)
  b = config.batch_size
  holder = {"state": state}

  def epoch():
    perm = np.random.permutation(len(images))
    for i in range(len(images) // b):
      batch = device_images[perm[i * b:(i + 1) * b]]
      holder["state"], loss = step_fn(holder["state"], batch, jax.random.key(i))
    loss.block_until_ready()

  return _median_seconds(epoch, repeats)[0]


def time_gemms(config, steps, repeats):
  """The 5 large GEMMs of a step (2 forward, 3 backward) in a lax.scan: XLA's ceiling."""
  b, d, h = config.batch_size, 784, config.hidden
  k = jax.random.key(0)
  xs = jax.random.normal(k, (steps, b, d))
  w = jax.random.normal(k, (d, h)) * 0.01
  g = jax.random.normal(k, (b, d))

  @jax.jit
  def run(xs, w, g):
    def body(carry, x):
      hid = x @ w  # Encoder input layer.
      out = hid @ w.T  # Decoder output layer (400 -> 784).
      dw_out = hid.T @ (g + out)  # Its weight gradient.
      dhid = (g + out) @ w  # Its input gradient.
      dw_in = x.T @ dhid  # Encoder weight gradient.
      return carry + jnp.sum(dw_in) + jnp.sum(dw_out), None
    return jax.lax.scan(body, 0.0, xs)[0]

  median = _median_seconds(lambda: run(xs, w, g).block_until_ready(), repeats)[0]
  return median, steps * 5 * 2 * b * d * h / median / 1e9


def time_big_gemm(repeats):
  a = jax.random.normal(jax.random.key(0), (4096, 4096))
  f = jax.jit(lambda a: a @ a)
  median = _median_seconds(lambda: f(a).block_until_ready(), repeats)[0]
  return 2 * 4096**3 / median / 1e9


def main(argv):
  del argv
  config = default.get_config()
  images = _images()
  flop = flops_per_example(784, config.hidden, config.latents)
  print(f"jax {jax.__version__} on {jax.device_count()} {jax.devices()[0].device_kind} device(s); "
        f"model 784-{config.hidden}-{config.latents}, batch {config.batch_size}, "
        f"{flop / 1e6:.2f} MFLOP per example")
  compile_s, median, times, examples = time_scan_epoch(config, images, _EPOCHS.value)
  gflops = flop * examples / median / 1e9
  print(f"on-device epoch: compile {compile_s:.2f} s; {median:.3f} s per epoch (median of "
        f"{len(times)}: {', '.join(f'{t:.2f}' for t in times)}); {examples / median:,.0f} "
        f"examples/s; {gflops:.0f} GFLOP/s ({flop * examples / 1e9:.0f} GFLOP per epoch)")
  if _BASELINES.value:
    loop = time_python_loop(config, images, max(2, _EPOCHS.value // 2))
    print(f"python loop of jitted steps: {loop:.3f} s per epoch ({loop / median:.2f}x the scan)")
    gemm_s, gemm_gflops = time_gemms(config, examples // config.batch_size, 3)
    print(f"the step's 5 large GEMMs alone: {gemm_s:.3f} s per epoch, {gemm_gflops:.0f} GFLOP/s "
          f"(the full step reaches {gemm_s / median:.0%} of this speed)")
    print(f"one 4096^3 GEMM: {time_big_gemm(3):.0f} GFLOP/s")


if __name__ == "__main__":
  app.run(main)
