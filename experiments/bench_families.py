"""What each model family costs per training step, against the seed VAE's, in one run.

    python experiments/bench_families.py                  # every family below, 3 rounds
    python experiments/bench_families.py --families=elbo,vamp500 --rounds=5

Each family trains one model of the 784-400-20 MLP on the first --examples
images of Fashion-MNIST (random bytes if missing) with the trainer's own epoch
(`vae_jax.epoch.Runner`). After compiling and one warm-up epoch each, the
families take turns, one epoch per turn, for --rounds rounds (interleaved, so
that a noisy machine slows all alike); printed: the median seconds per epoch,
its ratio to the plain VAE's, and GFLOP/s from XLA's count of the step's FLOPs.
The issue's targets: IWAE with K samples costs about K decoder passes per
example (so less than K times the VAE's step, whose encoder and optimizer are
shared), and the VampPrior with 500 pseudo-inputs adds less than 30%.
"""
import statistics

import bench_common
from absl import app
from absl import flags
import jax
import numpy as np

from vae_jax.configs import default

FAMILIES = {
    "elbo": {},
    "iwae5": {"objective": "iwae", "train_samples": 5},
    "iwae5_dreg": {"objective": "iwae", "train_samples": 5, "gradient_estimator": "dreg"},
    "iwae50": {"objective": "iwae", "train_samples": 50},
    "iwae50_dreg": {"objective": "iwae", "train_samples": 50, "gradient_estimator": "dreg"},
    "mog500": {"prior": "mog", "prior_components": 500},
    "vamp500": {"prior": "vamp", "prior_components": 500},
    "iaf2": {"posterior": "iaf", "flow_steps": 2},
}

_FAMILIES = flags.DEFINE_list("families", list(FAMILIES), f"Of: {', '.join(FAMILIES)}.")
_ROUNDS = flags.DEFINE_integer("rounds", 3, "Timed epochs per family, interleaved.")
_EXAMPLES = flags.DEFINE_integer("examples", 12_032, "Training images per epoch.")
_DATA_DIR = flags.DEFINE_string("data_dir", "/usr/share/datasets/fashion-mnist",
                                "IDX folder; random bytes if missing.")


class Family(bench_common.EpochTimer):
  """One family's compiled epoch and its state, timed one epoch at a time."""

  def __init__(self, name: str, images: np.ndarray):
    config = default.get_config()
    config.update(FAMILIES[name])
    super().__init__(config, images)
    self.name = name


def main(argv):
  del argv
  images = bench_common.images(_DATA_DIR.value, _EXAMPLES.value)
  print(f"jax {jax.__version__} on {jax.devices()[0].device_kind}; {len(images):,} images; "
        f"{_ROUNDS.value} interleaved rounds", flush=True)
  families = [Family(name, images) for name in _FAMILIES.value]
  for _ in range(_ROUNDS.value):
    for family in families:
      family.times.append(family.epoch())
  base = statistics.median(families[0].times)
  for family in families:
    median = statistics.median(family.times)
    steps = family.exp.runner.steps_per_epoch
    print(f"{family.name:<12} {median:7.3f} s per epoch ({', '.join(f'{t:.2f}' for t in family.times)}); "
          f"{median / base:5.2f}x {families[0].name}'s; {family.flops / 1e9:6.2f} GFLOP per step, "
          f"{family.flops * steps / median / 1e9:5.0f} GFLOP/s; compiled in {family.compile_seconds:.1f} s",
          flush=True)


if __name__ == "__main__":
  app.run(main)
