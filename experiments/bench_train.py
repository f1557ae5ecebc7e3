"""Training speed: epochs of 60,000 examples on the device, for 1 and N stacked models.

    python experiments/bench_train.py                       # the seed MLP, 1 and 4 models, baselines
    python experiments/bench_train.py --model=conv --num_models=1 --baselines=false
    python experiments/bench_train.py --compute_dtype=bfloat16 --num_models=1,4
    python experiments/bench_train.py --num_models=1,4,16,64 --baselines=false   # on a GPU
    python experiments/bench_train.py --stochastic_layers=1,2,1,2 --num_models=1 --baselines=false

Runs the trainer's own epoch (`vae_jax.epoch.Runner`: shuffle on the device,
`lax.scan` over chunks) and prints, from one process so the ratios are fair
on a noisy machine:
  * compile time, apart from running;
  * seconds per epoch (median of --epochs after a warm-up epoch), examples/s
    (times models), and GFLOP/s: FLOPs per step from XLA's cost analysis of
    the compiled step (for the MLP also the hand count, 3.28 MFLOP per example);
  * for N models, the time against one model's (vmap's overhead beyond the arithmetic);
  * baselines: the same step as a Python loop of jitted steps (one dispatch per
    batch), the step's 5 large GEMMs alone in the same `lax.scan` (what the MLP
    step can reach with XLA's GEMMs here), Adam's update alone (`--gemms` prints
    these two without the rest), and one 4096^3 GEMM.
"""
import functools
import statistics
import time

import bench_common
from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from vae_jax import epoch
from vae_jax import fields
from vae_jax import schema
from vae_jax import stacked
from vae_jax import train_state
from vae_jax.configs import default

_EPOCHS = flags.DEFINE_integer("epochs", 5, "Timed epochs (after one warm-up epoch).")
_DATA_DIR = flags.DEFINE_string("data_dir", "/usr/share/datasets/fashion-mnist",
                                "IDX folder; random bytes if missing.")
_NUM_MODELS = flags.DEFINE_list("num_models", ["1", "4"], "Stacked model counts to time.")
_MODEL = flags.DEFINE_enum("model", "mlp", fields.choices("model"), "The network.")
_COMPUTE_DTYPE = flags.DEFINE_enum("compute_dtype", "float32", schema.choices("compute_dtype"),
                                   "Dtype of matrix products and activations.")
_MAPPINGS = flags.DEFINE_list("model_mapping", ["vmap", "sequential"],
                              "How N > 1 models share the program; each is timed.")
_BASELINES = flags.DEFINE_bool("baselines", True, "Also time the baselines.")
_GEMMS = flags.DEFINE_bool("gemms", False, "Also time the step's 5 large GEMMs alone and Adam's "
                           "update alone (implied by --baselines for the MLP).")
_LAYERS = flags.DEFINE_list("stochastic_layers", ["1"], "Hierarchies to time, in this order "
                            "(repeat them to interleave); ratios are to the first's one model.")

EXAMPLES = 60_000


def mlp_flops_per_example(d: int, h: int, latents: int) -> int:
  """Forward + backward FLOPs of the MLP VAE's matrix products (2 per multiply-add)."""
  forward = d * h + h * 2 * latents + latents * h + h * d
  backward = 2 * forward - d * h  # Weight grads everywhere, input grads but the first layer's.
  return 2 * (forward + backward)


def _median_seconds(fn, repeats: int) -> tuple[float, list[float]]:
  fn()  # Warm-up.
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times), times


def _config(num_models: int, mapping: str = "auto", layers: int = 1):
  config = default.get_config()
  config.model, config.compute_dtype, config.num_models = (
      _MODEL.value, _COMPUTE_DTYPE.value, num_models)
  config.model_mapping, config.stochastic_layers = mapping, layers
  return config


def time_epoch(num_models: int, images, repeats: int, mapping: str = "auto", layers: int = 1):
  """The trainer's epoch for `num_models` stacked models: (compile s, median s, all, FLOP/step)."""
  exp = bench_common.build(_config(num_models, mapping, layers), images)
  runner, settings, state = exp.runner, exp.hyper, exp.create_state()
  shuffle_keys, step_keys = exp.keys.epoch(0)
  compile_seconds = runner.compile(state, shuffle_keys, step_keys, settings)
  flops = bench_common.step_flops(exp.step, state, settings,
                     jnp.asarray(images[:exp.config.batch_size]))
  holder = {"state": state}

  def one_epoch():
    holder["state"] = epoch.run_epoch(runner, holder["state"], shuffle_keys, step_keys, settings)

  median, times = _median_seconds(one_epoch, repeats)
  return compile_seconds, median, times, flops, runner, state


def time_python_loop(images, repeats):
  """Baseline: one jitted step per batch of one model, dispatched from a Python loop."""
  exp = bench_common.build(_config(1), images)
  config = exp.config
  one = jax.jit(functools.partial(train_state.step_one, exp.step),
                donate_argnums=0)
  holder = {"state": stacked.index(exp.create_state(), 0)}
  settings = stacked.index(exp.hyper, 0)
  device_images = jnp.asarray(images)
  b = config.batch_size

  def one_epoch():
    perm = np.random.permutation(len(images))
    for i in range(len(images) // b):
      batch = device_images[perm[i * b:(i + 1) * b]]
      holder["state"], metrics = one(holder["state"], batch, jax.random.key(i), settings)
    jax.block_until_ready(metrics)

  return _median_seconds(one_epoch, repeats)[0]


def time_gemms(steps, repeats, batch=128, d=784, h=400):
  """The 5 large GEMMs of an MLP step (2 forward, 3 backward) in a lax.scan: XLA's ceiling."""
  k = jax.random.key(0)
  xs = jax.random.normal(k, (steps, batch, d))
  w = jax.random.normal(k, (d, h)) * 0.01
  g = jax.random.normal(k, (batch, d))

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
  return median, steps * 5 * 2 * batch * d * h / median / 1e9


def time_adam(steps, repeats, params):
  """`steps` Adam updates (optax, lr 1e-3) of `params`' shapes in a lax.scan, with a fresh
  gradient each step: the optimizer's share of the step, bound by memory traffic."""
  import optax  # pylint: disable=g-import-not-at-top
  tx = optax.adam(1e-3)
  grads = jax.tree.map(lambda p: jnp.full(p.shape, 1e-3, p.dtype), params)

  @jax.jit
  def run(params):
    def body(carry, i):
      p, opt = carry
      g = jax.tree.map(lambda g: g * i.astype(g.dtype), grads)  # Not a constant to fold.
      updates, opt = tx.update(g, opt, p)
      return (optax.apply_updates(p, updates), opt), None
    return jax.lax.scan(body, (params, tx.init(params)), jnp.arange(steps))[0][0]

  return _median_seconds(lambda: jax.block_until_ready(run(params)), repeats)[0]


def time_big_gemm(repeats):
  a = jax.random.normal(jax.random.key(0), (4096, 4096))
  f = jax.jit(lambda a: a @ a)
  median = _median_seconds(lambda: f(a).block_until_ready(), repeats)[0]
  return 2 * 4096**3 / median / 1e9


def main(argv):
  del argv
  images = bench_common.images(_DATA_DIR.value, EXAMPLES)
  print(f"jax {jax.__version__} on {jax.device_count()} {jax.devices()[0].device_kind} device(s); "
        f"model {_MODEL.value}, {_COMPUTE_DTYPE.value}, batch {default.get_config().batch_size}, "
        f"{len(images):,} examples of {images.shape[1:]}")
  single = None
  runs = [(int(l), n, mapping) for l in _LAYERS.value for n in (int(v) for v in _NUM_MODELS.value)
          for mapping in (_MAPPINGS.value if n > 1 else ["auto"])]
  for layers, n, mapping in runs:
    compile_s, median, times, flops, runner, state = time_epoch(n, images, _EPOCHS.value,
                                                                mapping, layers)
    examples = runner.examples_per_epoch
    gflops = flops * runner.steps_per_epoch / median / 1e9
    label = (f"{'' if len(_LAYERS.value) == 1 else f'L={layers} '}{n:>3} model(s)"
             + (f", {mapping}" if n > 1 else ""))
    line = (f"{label}: compile {compile_s:.2f} s; {median:.3f} s per epoch (median of "
            f"{len(times)}: {', '.join(f'{t:.2f}' for t in times)}); "
            f"{n * examples / median:,.0f} examples x models/s; {gflops:.0f} GFLOP/s "
            f"({flops / (n * runner.batch_size) / 1e6:.2f} MFLOP per example, XLA's count)")
    if single is None:
      single = median
    else:
      line += (f"; {median / single:.2f}x one model's time for {n}x the work"
               if len(_LAYERS.value) == 1 else f"; {median / single:.2f}x the first's time")
    print(line, flush=True)
  if _MODEL.value == "mlp":
    hand = mlp_flops_per_example(784, 400, 20)
    print(f"hand count for the MLP: {hand / 1e6:.2f} MFLOP per example "
          f"({hand * examples / 1e9:.0f} GFLOP per epoch of {examples:,})")
  if _BASELINES.value:
    loop = time_python_loop(images, max(2, _EPOCHS.value // 2))
    print(f"python loop of jitted steps (1 model): {loop:.3f} s per epoch "
          f"({loop / single:.2f}x the scan)")
  if (_BASELINES.value or _GEMMS.value) and _MODEL.value == "mlp":
    gemm_s, gemm_gflops = time_gemms(examples // 128, 3)
    print(f"the step's 5 large GEMMs alone: {gemm_s:.3f} s per epoch, {gemm_gflops:.0f} GFLOP/s "
          f"(the full step of 1 model reaches {gemm_s / single:.0%} of this speed)")
    # Model 0's shapes (the state's arrays were donated to the epoch).
    params = jax.tree.map(lambda a: jnp.zeros(a.shape[1:], a.dtype), state.params)
    adam_s = time_adam(examples // 128, 3, params)
    size = sum(p.size for p in jax.tree.leaves(params))
    print(f"Adam's update alone: {adam_s:.3f} s per epoch ({size:,} parameters; "
          f"{7 * 4 * size * (examples // 128) / adam_s / 1e9:.0f} GB/s reading 4 and writing 3 "
          "float32 arrays of them per step)")
  if _BASELINES.value:
    print(f"one 4096^3 GEMM: {time_big_gemm(3):.0f} GFLOP/s")


if __name__ == "__main__":
  app.run(main)
