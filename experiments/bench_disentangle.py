"""What the disentanglement families cost per training step, against the beta-VAE's, in one run.

    python experiments/bench_disentangle.py                 # 3 interleaved rounds
    python experiments/bench_disentangle.py --rounds=5 --examples=6400

Each family trains one model near disentanglement_lib's size (the library's conv model with
disentanglement_lib's channels: 4 stride-2 3x3 convolutions of 32, 32, 64, 64 and their
transposes, 10 latents, batch 64; not its 4x4 kernels and 256-unit dense layers, which the
library's conv model does not have; `hidden` is unused by it) on
--examples shapes2d images (64 x 64, random factors), with the trainer's own epoch
(`vae_jax.epoch.Runner`), as experiments/bench_families.py times the others: after compiling
and one warm-up epoch each, the families take turns, one epoch per turn, for --rounds rounds
(interleaved, so that a busy machine slows all alike). Printed: the median seconds per epoch
and its ratio to the beta-VAE's (family vae, beta 4). The issue's targets: beta-TCVAE and
DIP-VAE at most 1.2x, FactorVAE (its 6 x 1000 discriminator and second Adam) at most 2x.
"""
import statistics
import sys

import bench_common
from absl import app
from absl import flags
import jax
import numpy as np

from vae_jax.configs import default
from vae_jax.sources import shapes2d

NETWORK = {"model": "conv", "conv_features": (32, 32, 64, 64), "hidden": 256, "latents": 10,
           "batch_size": 64}
FAMILIES = {
    "beta_vae": {"beta": 4.0},
    "betatc": {"family": "betatc", "tc_beta": 6.0},
    "dipvae_i": {"family": "dipvae", "dip_type": "i", "lambda_od": 10.0},
    "dipvae_ii": {"family": "dipvae", "dip_type": "ii", "lambda_od": 10.0},
    "annealed": {"family": "annealed"},
    "factorvae": {"family": "factorvae", "tc_gamma": 40.0},
}

_FAMILIES = flags.DEFINE_list("families", list(FAMILIES), f"Of: {', '.join(FAMILIES)}; the "
                              "first is the baseline.")
_ROUNDS = flags.DEFINE_integer("rounds", 3, "Timed epochs per family, interleaved.")
_EXAMPLES = flags.DEFINE_integer("examples", 2_560, "Training images per epoch (40 steps).")


class Family(bench_common.EpochTimer):
  """One family's compiled epoch and its state, timed one epoch at a time."""

  def __init__(self, name: str, images: np.ndarray):
    config = default.get_config()
    config.update(NETWORK)
    config.update(FAMILIES[name])
    super().__init__(config, images, count_flops=False)
    self.name = name


def main(argv):
  del argv
  rng = np.random.default_rng(0)
  factors = np.stack([rng.integers(0, k, _EXAMPLES.value) for k in shapes2d.FACTOR_SIZES], 1)
  images = shapes2d.render(factors)
  print(f"jax {jax.__version__} on {jax.devices()[0].device_kind}; {len(images):,} shapes2d "
        f"images; {_ROUNDS.value} interleaved rounds; {' '.join(sys.argv[1:])}", flush=True)
  families = [Family(name, images) for name in _FAMILIES.value]
  for _ in range(_ROUNDS.value):
    for family in families:
      family.times.append(family.epoch())
  base = statistics.median(families[0].times)
  for family in families:
    median = statistics.median(family.times)
    steps = family.exp.runner.steps_per_epoch
    print(f"{family.name:<10} {median:7.3f} s per epoch of {steps} steps "
          f"({', '.join(f'{t:.2f}' for t in family.times)}); {median / base:5.2f}x "
          f"{families[0].name}'s; compiled in {family.compile_seconds:.1f} s", flush=True)


if __name__ == "__main__":
  app.run(main)
