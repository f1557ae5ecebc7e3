"""What the discrete families' maths costs, at Fashion-MNIST shapes, before they are families.

    python experiments/bench_discrete.py                 # 5 interleaved rounds of 10 calls
    python experiments/bench_discrete.py --rounds=9 --steps=20 --codes=1024

Printed, from XLA's FLOP count and the median wall time of interleaved rounds
(so that a busy machine slows every contender alike):

  1. one training step (Adam, batch 128 of 28x28x1) of the continuous conv VAE
     (`model=conv`: conv_features 32,64 and 20 latents), against a VQ-VAE of the
     same convolutions, whose 7x7x64 grid is quantised against K = 512 codes of
     D = 64 (EMA update and restarts included) and decoded by the same
     transposed convolutions (the issue's target: at most 1.3x the VAE's time);
  2. the quantiser's share: its training apply (search, losses, EMA update,
     restarts) and its evaluation apply (search and losses) against the
     encoder's forward pass;
  3. the code prior (`CodePrior`'s defaults, 7x7 grid, K codes): one training
     step on 128 grids, and drawing 64 grids.

Random bytes stand in for the images and codes: costs do not depend on values.

    python experiments/bench_discrete.py --epoch_examples=6400 --epoch_rounds=3

  4. the families themselves, with the trainer's own epoch (`vae_jax.epoch.Runner`,
     as `bench_families.py`) on the first --epoch_examples Fashion-MNIST training
     images: `--config.model=conv` (conv_features 32,64) as `family=vae` (20
     latents), `family=vqvae` (7x7 grid of D = 64, K codes, EMA codebook and
     restarts) and `family=fsq` (levels 8,5,5,5), each compiled and warmed up, then
     one epoch each in turn for --epoch_rounds rounds; printed: the median seconds
     per epoch, its ratio to the VAE's, and XLA's FLOP count of one step.

    python experiments/bench_discrete.py --usage_steps=800

also trains that VQ-VAE (Adam 1e-3, batch 128) on the shipped `mnist_sample`
digits for that many steps, with and without dead-code restarts, printing per
epoch of it the codes in use, the codebook's perplexity, the quantisation
error and the restarts: how much of the codebook the EMA update and the
restarts keep alive.
"""
import statistics
import time

import bench_common

from absl import app
from absl import flags
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from vae_jax import convolution
from vae_jax import data
from vae_jax.configs import default
from vae_jax import model as model_lib
from vae_jax import objectives
from vae_jax.families.discrete import code_prior
from vae_jax.families.discrete import quantizers

_ROUNDS = flags.DEFINE_integer("rounds", 5, "Timed rounds, the contenders interleaved.")
_STEPS = flags.DEFINE_integer("steps", 10, "Calls per contender per round.")
_CODES = flags.DEFINE_integer("codes", 512, "K, the codebook size (and the prior's).")
_USAGE_STEPS = flags.DEFINE_integer("usage_steps", 0, "Train the VQ-VAE this many steps on "
                                    "mnist_sample, with and without restarts; 0: do not.")
_EPOCH_EXAMPLES = flags.DEFINE_integer("epoch_examples", 0, "Time the families' trainer epochs "
                                      "on this many Fashion-MNIST images (4.); 0: do not.")
_EPOCH_ROUNDS = flags.DEFINE_integer("epoch_rounds", 3, "Timed epochs per family, interleaved.")
_DATA_DIR = flags.DEFINE_string("data_dir", "/usr/share/datasets/fashion-mnist",
                                "IDX folder; random bytes if missing.")
BATCH, FEATURES, IMAGE, LATENTS = 128, (32, 64), (28, 28, 1), 20
COLLECTION = quantizers.COLLECTION


class GridEncoder(nn.Module):
  """ConvEncoder's convolutions, stopping at the grid: (B, 28, 28, 1) -> (B, 7, 7, 64)."""

  @nn.compact
  def __call__(self, x):
    return model_lib.conv_stack(x, FEATURES)


class VQVAE(nn.Module):
  """The conv VAE's convolutions with a VectorQuantizer on their 7x7x64 grid in between."""

  num_codes: int

  @nn.compact
  def __call__(self, x, restart_key=None, train=True):
    grid = GridEncoder(name="encoder")(x)
    out = quantizers.VectorQuantizer(self.num_codes, name="quantizer")(
        grid, train=train, restart_key=restart_key)
    h = out.z_q
    for i, f in enumerate((FEATURES[0], IMAGE[-1])):  # ConvDecoder's transposed convolutions.
      h = nn.Conv(f, (3, 3), input_dilation=2, padding=((2, 1), (2, 1)), name=f"deconv{i}",
                  conv_general_dilated=convolution.conv_general_dilated)(h)
      h = nn.relu(h) if i == 0 else h
    return h, out


def _flops(fn, *args) -> float:
  analysis = jax.jit(fn).lower(*args).compile().cost_analysis()
  analysis = analysis[0] if isinstance(analysis, (list, tuple)) else analysis
  return float(analysis.get("flops", float("nan")))


def _adam_step(loss_fn, tx):
  """(params, opt_state, aux_state, *args) -> the same after one Adam step, and the loss."""
  def step(params, opt_state, aux, *args):
    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, aux, *args)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, aux, loss
  return step


def conv_vae(x, key, tx):
  """The continuous conv VAE's step and its initial arguments."""
  vae = model_lib.VAE(model_lib.ConvEncoder(FEATURES, LATENTS),
                      model_lib.ConvDecoder(FEATURES, IMAGE), LATENTS, IMAGE)
  params = model_lib.init_params(vae, key)

  def loss_fn(params, aux, x, key):
    terms = vae.apply({"params": params}, x, key, method=model_lib.VAE.elbo_terms)
    return jnp.mean(terms["loss"]), aux

  return _adam_step(loss_fn, tx), (params, tx.init(params), (), x, key)


def vq_vae(x, key, tx):
  """The VQ-VAE's step (EMA codebook, restarts on) and its initial arguments."""
  module = VQVAE(_CODES.value)
  variables = module.init(key, x)
  params, codebook = variables["params"], variables[COLLECTION]

  def loss_fn(params, codebook, x, key):
    (logits, out), state = module.apply({"params": params, COLLECTION: codebook}, x, key,
                                        mutable=[COLLECTION])
    recon = -objectives.bernoulli_log_likelihood(x.reshape(len(x), -1),
                                                 logits.reshape(len(x), -1))
    # The quantiser's losses summed over the grid, like the reconstruction over pixels.
    return jnp.mean(recon + jnp.sum(out.loss, axis=(-2, -1))), state[COLLECTION]

  return _adam_step(loss_fn, tx), (params, tx.init(params), codebook, x, key)


def prior_step(codes, key, tx):
  prior = code_prior.CodePrior(_CODES.value, codes.shape[1:])
  params = jax.jit(prior.init)(key, codes)["params"]

  def loss_fn(params, aux, codes):
    log_p = prior.apply({"params": params}, codes, method=code_prior.CodePrior.log_prob)
    return -jnp.mean(log_p), aux  # nats per grid

  return prior, _adam_step(loss_fn, tx), (params, tx.init(params), (), codes)


def codebook_usage(images: np.ndarray, steps: int, restarts: bool) -> None:
  """Trains the VQ-VAE, printing the codebook's use per pass over `images`."""
  module, tx, num = VQVAE(_CODES.value), optax.adam(1e-3), _CODES.value
  variables = module.init(jax.random.key(0), jnp.asarray(images[:BATCH]))
  params, codebook = variables["params"], variables[COLLECTION]
  opt_state = tx.init(params)

  def loss_fn(params, codebook, x, key):
    (logits, out), state = module.apply({"params": params, COLLECTION: codebook}, x,
                                        key if restarts else None, mutable=[COLLECTION])
    recon = -objectives.bernoulli_log_likelihood(x.reshape(len(x), -1),
                                                 logits.reshape(len(x), -1))
    error = jnp.mean(jnp.sum(out.commitment, axis=(-2, -1)))
    return (jnp.mean(recon + jnp.sum(out.loss, axis=(-2, -1))),
            (state[COLLECTION], quantizers.code_counts(out.indices, num), error))

  @jax.jit
  def step(params, opt_state, codebook, x, key):
    (loss, (codebook, counts, error)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        params, codebook, x, key)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, codebook, loss, counts, error

  per_epoch = len(images) // BATCH
  print(f"VQ-VAE on {len(images)} mnist_sample digits, K = {num}, restarts "
        f"{'on' if restarts else 'off'}: per epoch, the last batch's loss (nats), codes in use, "
        "perplexity, quantisation error (sum over the grid), restarts so far")
  counts, start = np.zeros(num, np.int64), time.perf_counter()
  for s in range(steps):
    order = np.random.default_rng(s // per_epoch).permutation(len(images))
    x = jnp.asarray(images[order[(s % per_epoch) * BATCH:(s % per_epoch + 1) * BATCH]])
    params, opt_state, codebook, loss, batch_counts, error = step(
        params, opt_state, codebook, x, jax.random.fold_in(jax.random.key(1), s))
    counts += np.asarray(batch_counts)
    if (s + 1) % per_epoch == 0 or s + 1 == steps:
      print(f"  step {s + 1:5d}  loss {float(loss):7.2f}  in use {int(np.sum(counts > 0)):4d}  "
            f"perplexity {float(quantizers.perplexity(counts)):7.1f}  error {float(error):7.2f}  "
            f"restarts {int(codebook['quantizer']['restarts']):5d}  "
            f"({time.perf_counter() - start:.0f} s)")
      counts[:] = 0


def _timed(contenders: dict) -> dict:
  """name -> (fn, args): the median seconds per call over interleaved rounds."""
  jitted = {name: jax.jit(fn) for name, (fn, _) in contenders.items()}
  for name, (_, args) in contenders.items():
    jax.block_until_ready(jitted[name](*args))  # Compile and warm up.
  times = {name: [] for name in contenders}
  for _ in range(_ROUNDS.value):
    for name, (_, args) in contenders.items():
      start = time.perf_counter()
      for _ in range(_STEPS.value):
        out = jitted[name](*args)
      jax.block_until_ready(out)
      times[name].append((time.perf_counter() - start) / _STEPS.value)
  return {name: statistics.median(t) for name, t in times.items()}


def _report(title: str, contenders: dict, baseline: str | None = None) -> None:
  seconds = _timed(contenders)
  print(title)
  for name, (fn, args) in contenders.items():
    flops = _flops(fn, *args)
    ratio = f"  {seconds[name] / seconds[baseline]:5.2f}x time" if baseline else ""
    print(f"  {name:34s} {flops / 1e9:8.3f} GFLOP  {seconds[name] * 1e3:9.2f} ms{ratio}"
          f"  {flops / seconds[name] / 1e9:6.1f} GFLOP/s")


def trainer_epoch(fields: dict, images: np.ndarray) -> bench_common.EpochTimer:
  """One family's compiled trainer epoch (the conv networks and `fields`), timed per epoch."""
  config = default.get_config()
  config.update(model="conv", conv_features=FEATURES, **fields)
  return bench_common.EpochTimer(config, images)


def trainer_epochs(count: int, rounds: int) -> None:
  """4.: the conv VAE's, the VQ-VAE's and FSQ's trainer epochs on `count` images."""
  images = bench_common.images(_DATA_DIR.value, count)
  contenders = {"vae (conv, 20 latents)": {"family": "vae", "latents": LATENTS},
                f"vqvae (7x7x64, {_CODES.value} codes, EMA)": {
                    "family": "vqvae", "codebook_size": _CODES.value},
                "fsq (7x7, levels 8,5,5,5)": {"family": "fsq"}}
  runs = {name: trainer_epoch(fields, images) for name, fields in contenders.items()}
  for _ in range(rounds):
    for run in runs.values():
      run.times.append(run.epoch())
  steps = next(iter(runs.values())).exp.runner.steps_per_epoch
  print(f"4. the trainer's epoch, {len(images):,} images ({steps} steps of {BATCH}), median of "
        f"{rounds} interleaved rounds")
  base = statistics.median(next(iter(runs.values())).times)
  base_flops = next(iter(runs.values())).flops
  for name, run in runs.items():
    median = statistics.median(run.times)
    print(f"  {name:34s} {median:7.3f} s/epoch  {median / base:5.2f}x time  "
          f"{run.flops / 1e9:7.3f} GFLOP/step  {run.flops / base_flops:5.2f}x FLOPs  "
          f"(epochs: {', '.join(f'{t:.3f}' for t in run.times)})")


def main(argv):
  del argv
  if _EPOCH_EXAMPLES.value:
    trainer_epochs(_EPOCH_EXAMPLES.value, _EPOCH_ROUNDS.value)
    return
  print(f"jax {jax.__version__} on {jax.devices()[0].device_kind}, {jax.device_count()} device(s); "
        f"K = {_CODES.value}")
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.integers(0, 256, (BATCH, *IMAGE)) / 255.0, jnp.float32)
  key, tx = jax.random.key(0), optax.adam(1e-3)
  conv_fn, conv_args = conv_vae(x, key, tx)
  vq_fn, vq_args = vq_vae(x, key, tx)
  _report("1. one training step, batch 128", {
      "conv VAE (20 latents)": (conv_fn, conv_args),
      f"VQ-VAE (7x7x64 grid, {_CODES.value} codes)": (vq_fn, vq_args)},
          baseline="conv VAE (20 latents)")

  encode = lambda params, x: GridEncoder().apply({"params": params["encoder"]}, x)
  grid = jax.jit(encode)(vq_args[0], x)
  quantizer = quantizers.VectorQuantizer(_CODES.value)
  codebook = {COLLECTION: vq_args[2]["quantizer"]}
  train = lambda codebook, z, key: quantizer.apply(codebook, z, train=True, restart_key=key,
                                                    mutable=[COLLECTION])
  evaluate = lambda codebook, z: quantizer.apply(codebook, z)
  _report("2. the quantiser against the encoder, forward, batch 128", {
      "conv encoder to the 7x7x64 grid": (encode, (vq_args[0], x)),
      "quantiser, training (EMA, restarts)": (train, (codebook, grid, key)),
      "quantiser, evaluation": (evaluate, (codebook, grid))},
          baseline="conv encoder to the 7x7x64 grid")

  codes = jnp.asarray(rng.integers(0, _CODES.value, (BATCH, 7, 7)), jnp.int32)
  prior, step, args = prior_step(codes, key, tx)
  sample = lambda params, key: prior.apply({"params": params}, key, 64,
                                           method=code_prior.CodePrior.sample)
  count = sum(a.size for a in jax.tree.leaves(args[0]))
  _report(f"3. the code prior ({prior.layers} layers of {prior.features}, {count:,} parameters)", {
      "training step, 128 grids of 7x7": (step, args),
      "drawing 64 grids of 7x7": (sample, (args[0], key))})
  if _USAGE_STEPS.value:
    digits = data.load_idx_dir(data.SAMPLE_DIR, name="mnist_sample").train.images
    for restarts in (True, False):
      codebook_usage((digits / 255.0).astype(np.float32), _USAGE_STEPS.value, restarts)


if __name__ == "__main__":
  app.run(main)
