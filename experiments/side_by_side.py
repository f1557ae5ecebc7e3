"""Puts the figures of a run's models side by side, each under its settings.

    python experiments/side_by_side.py runs/fashion_beta --epoch=20 --out=beta_samples.png

Reads `WORKDIR/images/model_I/NAME_EPOCH.png` for every model of the run
and the swept settings from metrics.jsonl, and writes one PNG.
"""
import argparse
import pathlib

import numpy as np
from PIL import Image
from PIL import ImageDraw

from vae_jax import reporting
from vae_jax import sweep

GAP = 8
CAPTION = 14  # Pixels of caption above each figure.


def caption(record: dict) -> str:
  """The settings that tell the run's models apart, e.g. 'beta 0.5'."""
  return ", ".join(f"{name} {record[name]:g}" for name in sweep.SWEEPABLE
                   if name in record and name != "seed") or f"model {record['model']}"


def side_by_side(workdir: pathlib.Path, name: str, epoch: int) -> Image.Image:
  records = [r for r in reporting.read_metrics(workdir) if r["epoch"] == epoch]
  varying = {k for k in sweep.SWEEPABLE if len({r.get(k) for r in records}) > 1}
  figures = [np.asarray(Image.open(workdir / "images" / f"model_{r['model']}" /
                                   f"{name}_{epoch}.png").convert("RGB")) for r in records]
  height = max(f.shape[0] for f in figures) + CAPTION
  width = sum(f.shape[1] for f in figures) + GAP * (len(figures) - 1)
  canvas = Image.new("RGB", (width, height), "white")
  draw = ImageDraw.Draw(canvas)
  x = 0
  for figure, record in zip(figures, records):
    canvas.paste(Image.fromarray(figure), (x, CAPTION))
    label = ", ".join(f"{k} {record[k]:g}" for k in sorted(varying)) or caption(record)
    draw.text((x + 2, 1), label, fill="black")
    x += figure.shape[1] + GAP
  return canvas


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("workdir", type=pathlib.Path)
  parser.add_argument("--epoch", type=int, required=True)
  parser.add_argument("--name", default="sample", help="sample or reconstruction")
  parser.add_argument("--out", type=pathlib.Path, required=True)
  args = parser.parse_args()
  args.out.parent.mkdir(parents=True, exist_ok=True)
  side_by_side(args.workdir, args.name, args.epoch).save(args.out)
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
