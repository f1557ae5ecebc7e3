"""Maps the latent space: `vae-jax latent-map --workdir=DIR`.

Writes into `DIR/images/` (or `--out`):
  * `latent_map.png`: the posterior means of the test set, coloured by label,
    projected on their two principal axes when there are more than two latents;
  * `manifold.png`, for a 2-D latent space only: the decoded grid of
    `--size` x `--size` codes at evenly spaced prior quantiles.
"""
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
_SIZE = flags.DEFINE_integer("size", 20, "Manifold grid: images per side (2-D latents only).")


def main(argv):
  del argv  # cli.run_command refuses stray arguments.
  if _SIZE.value < 1:
    cli.fail(f"size must be >= 1, got {_SIZE.value}")
  with cli.errors_to_exit():
    model = trained_lib.load(_WORKDIR.value, _STEP.value, index=_MODEL.value)
    model.family.require(Capability.LATENT, "a latent map")
    inputs, labels = figures.test_set(model)
  conditional = bool(model.family.num_classes)
  # 10,000 MNIST digits: one call. A conditional model's q(z|x, y) is given the true labels.
  means = np.asarray(latent.encode(model, inputs, labels if conditional else None)[0])
  out = figures.output_dir(_WORKDIR.value, _OUT.value, model)
  path = figures.save_latent_scatter(out / "latent_map.png", means, labels,
                                     title=f"{model.config.dataset} test set, step {model.step}")
  print(f"wrote {path}: {counted(len(means), 'test image')}")
  if model.family.latents != 2:
    print(f"no manifold grid: it needs 2 latents, this model has {model.family.latents}")
    return
  if conditional:
    print("no manifold grid: the model is conditional (vae-jax sample --label draws a class)")
    return
  grid = np.asarray(latent.manifold(model, _SIZE.value))
  path = images.save_png(out / "manifold.png", images.tile(
      grid.reshape(-1, *model.image_shape), cols=_SIZE.value))
  print(f"wrote {path}: {_SIZE.value} x {_SIZE.value} decoded codes")

