"""Draws digits from the prior:
`vae-jax sample --workdir=DIR [--num=64 --seed=0 --label=6 --temperature=0.7]`.

Decodes `--num` codes z ~ N(0, I) with the workdir's latest checkpoint (or
`--step`) and writes them as one grid, `samples.png`, into `DIR/images/` or
`--out`. `--temperature` T scales the prior's standard deviation (of every
layer, top-down, for a hierarchy; the name becomes `samples_t0.7.png`); priors
other than N(0, I) sample at 1 only. A conditional model (`conditional=True`)
draws `--label`'s class (`samples_6.png`), or without it sample i of class i
mod K. A VQ-VAE or FSQ workdir draws code grids from its prior over codes
(`DIR/prior`, fitted by `vae-jax train-prior`; `--temperature` divides each
position's logits) and decodes them; without a prior it is refused. Exit status 2 on
bad input (no checkpoint, --num < 1, a label out of range or given to an
unconditional model, a temperature <= 0 or one the prior does not take).
"""
import jax
import numpy as np
from absl import flags

from vae_jax import trained as trained_lib
from vae_jax.families.base import Capability
from vae_jax import cli
from vae_jax import figures
from vae_jax import images
from vae_jax import latent
from vae_jax.errors import counted

_WORKDIR, _STEP, _OUT, _MODEL = cli.define_trained_model_flags()
_NUM = flags.DEFINE_integer("num", 64, "Number of samples; the grid is ceil(sqrt(num)) wide.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the prior draws.")
_LABEL = flags.DEFINE_integer("label", None, "A conditional model's class to draw; default "
                              "sample i of class i mod K.")
_TEMPERATURE = flags.DEFINE_float("temperature", 1.0, "> 0: scales the prior's standard "
                                  "deviation (every layer's, for a hierarchy).")


def main(argv):
  del argv  # cli.run_command refuses stray arguments.
  if _NUM.value < 1:
    cli.fail(f"num must be >= 1, got {_NUM.value}")
  with cli.errors_to_exit():
    model = trained_lib.load_for(_WORKDIR.value, Capability.SAMPLE, "sampling", _STEP.value,
                                 index=_MODEL.value)
  classes = model.family.num_classes
  labels, what = _LABEL.value, ""
  if classes and labels is None:
    labels, what = np.arange(_NUM.value) % classes, f", sample i of class i mod {classes}"
  elif labels is not None:
    what = f" of class {labels}"
  temperature = _TEMPERATURE.value
  try:
    pictures = np.asarray(latent.sample(model, jax.random.key(_SEED.value), _NUM.value,
                                        labels=labels, temperature=temperature))
  except ValueError as e:
    cli.fail(str(e))
  suffix = ("" if _LABEL.value is None else f"_{_LABEL.value}") + (
      "" if temperature == 1.0 else f"_t{temperature:g}")
  path = figures.output_dir(_WORKDIR.value, _OUT.value, model) / f"samples{suffix}.png"
  images.save_png(path, figures.square_grid(pictures))
  warmth = "" if temperature == 1.0 else f" at temperature {temperature:g}"
  source = "the prior over codes" if model.family.can(Capability.CODES) else "N(0, I)"
  print(f"wrote {path}: {counted(_NUM.value, 'sample')} from {source}{warmth}{what}, "
        f"seed {_SEED.value}, "
        f"checkpoint step {model.step}")

