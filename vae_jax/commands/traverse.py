"""Every latent's traversal, the most informative first: `vae-jax traverse --workdir=DIR`.

    vae-jax traverse --workdir=DIR [--index=0,1,2] [--steps=9] [--limit=2] [--model=I]

For each test image of `--index`, one row per latent: the image's posterior mean decoded
with that latent set to `--steps` values from -limit to +limit (the others kept), the rows
sorted by each latent's mean KL over the first 1,000 test images, largest first
(`vae_jax.traversals`), so that the latents a disentangling model uses (beta-TCVAE,
FactorVAE, DIP-VAE, AnnealedVAE, a beta-VAE) come first and the collapsed ones last. Writes
`traversals_INDEX.png` per image in `DIR/images/` (or `--out`) and prints the order and each
latent's KL. Needs continuous codes and the N(0, I) prior; other models are refused in one
line.
"""
import numpy as np
from absl import flags

from vae_jax import cli
from vae_jax import figures
from vae_jax import images
from vae_jax import latent
from vae_jax import trained as trained_lib

_WORKDIR, _STEP, _OUT, _MODEL = cli.define_trained_model_flags()
_INDEX = flags.DEFINE_list("index", ["0"], "Test-set indices of the images to traverse.")
_STEPS = flags.DEFINE_integer("steps", 9, "Values per latent, from -limit to +limit.")
_LIMIT = flags.DEFINE_float("limit", 2.0, "The traversal's range: -limit .. +limit (prior sds).")
KL_IMAGES = 1000  # Test images each latent's KL is averaged over.


def main(argv):
  del argv  # cli.run_command refuses stray arguments.
  if _STEPS.value < 2:
    cli.fail(f"steps must be >= 2, got {_STEPS.value}")
  if not _LIMIT.value > 0:
    cli.fail(f"limit must be > 0, got {_LIMIT.value}")
  with cli.errors_to_exit():
    model = trained_lib.load(_WORKDIR.value, _STEP.value, index=_MODEL.value)
    inputs, _ = figures.test_set(model)
    try:
      indices = figures.check_indices([int(i) for i in _INDEX.value], len(inputs))
    except ValueError:
      cli.fail(f"--index takes integers, got {','.join(_INDEX.value)}")
    if model.family.num_classes:
      cli.fail("traverse is for unconditional models")
    rows, order, kl = latent.traversals(
        model, inputs[indices], np.linspace(-_LIMIT.value, _LIMIT.value, _STEPS.value),
        kl_images=inputs[:KL_IMAGES])
  out = figures.output_dir(_WORKDIR.value, _OUT.value, model)
  print("latents by KL (nats): " + ", ".join(f"z{d} {kl[d]:.2f}" for d in order))
  for index, grid in zip(indices, rows):
    path = images.save_png(out / f"traversals_{index}.png",
                           images.tile(grid.reshape(-1, *grid.shape[2:]), cols=grid.shape[1]))
    print(f"wrote {path}: {len(order)} latents x {_STEPS.value} values in "
          f"[-{_LIMIT.value:g}, {_LIMIT.value:g}], test image {index}")
