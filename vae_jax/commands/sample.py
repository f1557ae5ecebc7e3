"""Draws digits from the prior: `vae-jax sample --workdir=DIR [--num=64 --seed=0]`.

Decodes `--num` codes z ~ N(0, I) with the workdir's latest checkpoint (or
`--step`) and writes them as one grid, `samples.png`, into `DIR/images/` or
`--out`. Exit status 2 on bad input (no checkpoint, --num < 1).
"""
import jax
import numpy as np
from absl import flags

from vae_jax import checkpoints
from vae_jax import cli
from vae_jax import figures
from vae_jax import images
from vae_jax import latent

_WORKDIR, _STEP, _OUT, _MODEL = cli.define_trained_model_flags()
_NUM = flags.DEFINE_integer("num", 64, "Number of samples; the grid is ceil(sqrt(num)) wide.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the prior draws.")


def main(argv):
  del argv  # cli.run_command refuses stray arguments.
  if _NUM.value < 1:
    cli.fail(f"num must be >= 1, got {_NUM.value}")
  with cli.errors_to_exit():
    model = checkpoints.load(_WORKDIR.value, _STEP.value, index=_MODEL.value)
  pictures = np.asarray(latent.sample(model, jax.random.key(_SEED.value), _NUM.value))
  path = figures.output_dir(_WORKDIR.value, _OUT.value, model) / "samples.png"
  images.save_png(path, figures.square_grid(pictures))
  print(f"wrote {path}: {_NUM.value} samples from N(0, I), seed {_SEED.value}, "
        f"checkpoint step {model.step}")

