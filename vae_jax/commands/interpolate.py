"""Turns one digit into another: `vae-jax interpolate --workdir=DIR`.

    vae-jax interpolate --workdir=DIR --from_digit=0 --to_digit=6 --steps=9 --pairs=4
    vae-jax interpolate --workdir=DIR --from_index=3,10 --to_index=0,7 --method=slerp

Picks `--pairs` test images of each label (or the test images at the given
indices), decodes `--steps` codes on the path between their posterior means
and writes one row per pair: the original, the path (its ends are the
reconstructions), the other original. Output: `interpolation_0_to_6.png` in
`DIR/images/` or `--out`, and with `--gif` an animation of the paths.

A conditional model encodes each image with its label and decodes the path
with a label that moves from the start image's to the end image's; with
`--label=N` the whole path is decoded as class N (the label kept, the style
moving): `interpolation_0_to_6_as_6.png`.

A VQ-VAE or FSQ model interpolates between its encoder's continuous outputs,
quantising every point of the path before decoding it.
"""
import numpy as np
from absl import flags

from vae_jax import trained as trained_lib
from vae_jax.families.base import Capability
from vae_jax import cli
from vae_jax import figures
from vae_jax import images
from vae_jax import latent
from vae_jax.errors import UsageError
from vae_jax.errors import counted

_WORKDIR, _STEP, _OUT, _MODEL = cli.define_trained_model_flags()
_FROM_DIGIT = flags.DEFINE_integer("from_digit", 0, "Label of the start images.")
_TO_DIGIT = flags.DEFINE_integer("to_digit", 6, "Label of the end images.")
_PAIRS = flags.DEFINE_integer("pairs", 4, "Pairs of test images picked by label, one row each.")
_FROM_INDEX = flags.DEFINE_list("from_index", [], "Test-set indices of the start images "
                                "(comma-separated); overrides the digits.")
_TO_INDEX = flags.DEFINE_list("to_index", [], "Test-set indices of the end images.")
_STEPS = flags.DEFINE_integer("steps", 9, "Images per path, both ends included.")
_METHOD = flags.DEFINE_enum("method", "linear", latent.METHODS, "Path between the codes.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the choice of test images by label.")
_GIF = flags.DEFINE_bool("gif", False, "Also write an animated GIF of the paths.")
_LABEL = flags.DEFINE_integer("label", None, "A conditional model: decode the whole path as "
                              "this class; default the label moves with the images.")


def main(argv):
  del argv  # cli.run_command refuses stray arguments.
  _check_flags()
  with cli.errors_to_exit():
    model = trained_lib.load(_WORKDIR.value, _STEP.value, index=_MODEL.value)
    if not model.family.can(Capability.CODES):  # Discrete codes: between encoder outputs.
      model.family.require(Capability.LATENT, "interpolation")
    inputs, labels = figures.test_set(model)
    start, end, stem = _choose_pairs(labels)
  conditional = bool(model.family.num_classes)
  if _LABEL.value is not None and not conditional:
    cli.fail("--label is for a conditional model (conditional=True); this one is not")
  pair = (labels[start], labels[end]) if conditional else None
  path_labels = None if _LABEL.value is None else (_LABEL.value, _LABEL.value)
  stem += "" if _LABEL.value is None else f"_as_{_LABEL.value}"
  try:
    paths = np.asarray(latent.interpolate(model, inputs[start], inputs[end], _STEPS.value,
                                          _METHOD.value, labels=pair, path_labels=path_labels))
  except ValueError as e:
    cli.fail(str(e))
  originals = images.as_pictures(inputs / 255.0)
  out = figures.output_dir(_WORKDIR.value, _OUT.value, model)
  path = images.save_png(out / f"{stem}.png", figures.interpolation_grid(
      originals[start], paths, originals[end]))
  print(f"wrote {path}: {counted(len(start), 'pair')} x {_STEPS.value} {_METHOD.value} steps "
        f"(test images {_listed(start)} to {_listed(end)})")
  if _GIF.value:
    path = images.save_gif(out / f"{stem}.gif", figures.interpolation_frames(paths))
    print(f"wrote {path}")


def _check_flags() -> None:
  if _STEPS.value < 2:
    cli.fail(f"steps must be >= 2 (both ends included), got {_STEPS.value}")
  if _PAIRS.value < 1:
    cli.fail(f"pairs must be >= 1, got {_PAIRS.value}")
  if bool(_FROM_INDEX.value) != bool(_TO_INDEX.value):
    cli.fail("--from_index and --to_index go together")
  if len(_FROM_INDEX.value) != len(_TO_INDEX.value):
    cli.fail(f"--from_index has {len(_FROM_INDEX.value)} indices, --to_index "
             f"{len(_TO_INDEX.value)}; give as many of each")


def _choose_pairs(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, str]:
  """Test-set indices of the start and end images, and the output file stem."""
  suffix = "" if _METHOD.value == "linear" else f"_{_METHOD.value}"
  if _FROM_INDEX.value:
    start = figures.check_indices(_integers(_FROM_INDEX), len(labels))
    end = figures.check_indices(_integers(_TO_INDEX), len(labels))
    return start, end, f"interpolation_test{_listed(start, '-')}_to_test{_listed(end, '-')}{suffix}"
  rng = np.random.default_rng(_SEED.value)
  start = figures.pick_by_label(labels, _FROM_DIGIT.value, _PAIRS.value, rng)
  end = figures.pick_by_label(labels, _TO_DIGIT.value, _PAIRS.value, rng, exclude=start)
  return start, end, f"interpolation_{_FROM_DIGIT.value}_to_{_TO_DIGIT.value}{suffix}"


def _integers(flag) -> list[int]:
  try:
    return [int(v) for v in flag.value]
  except ValueError:
    raise UsageError(f"--{flag.name} takes comma-separated integers, got "
                     f"{','.join(flag.value)!r}") from None


def _listed(indices: np.ndarray, sep: str = ",") -> str:
  return sep.join(str(i) for i in indices)

