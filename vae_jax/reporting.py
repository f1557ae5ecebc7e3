"""Run outputs: `metrics.jsonl`, TensorBoard events (tensorboardX, no TensorFlow), PNGs.

Only the main process writes; on the others a Reporter does nothing.
"""
import json
import pathlib

import numpy as np

from vae_jax import images

METRICS_FILE = "metrics.jsonl"


def read_metrics(workdir) -> list[dict]:
  """The records of `workdir/metrics.jsonl`, one dict per line."""
  path = pathlib.Path(workdir) / METRICS_FILE
  if not path.is_file():
    return []
  return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class Reporter:
  """Writes one JSON line and TensorBoard scalars per epoch, and figures."""

  def __init__(self, workdir, enabled: bool = True):
    self.workdir = pathlib.Path(workdir)
    self.enabled = enabled
    self._tb = None
    if enabled:
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
      self._tb = SummaryWriter(logdir=str(self.workdir / "tensorboard"))

  @property
  def image_dir(self) -> pathlib.Path:
    return self.workdir / "images"

  def forget_after(self, epoch: int) -> None:
    """Drops records of epochs after `epoch`: a resumed run writes them again."""
    if not self.enabled:
      return
    kept = [r for r in read_metrics(self.workdir) if r["epoch"] <= epoch]
    if len(kept) != len(read_metrics(self.workdir)):
      (self.workdir / METRICS_FILE).write_text("".join(json.dumps(r) + "\n" for r in kept))

  def write_metrics(self, record: dict) -> None:
    """Appends `record` (with an `epoch` key) to metrics.jsonl and TensorBoard."""
    if not self.enabled:
      return
    with open(self.workdir / METRICS_FILE, "a") as f:
      f.write(json.dumps(record) + "\n")
    for name, value in record.items():
      if name != "epoch" and isinstance(value, (int, float)):
        self._tb.add_scalar(name, value, record["epoch"])
    self._tb.flush()

  def write_image(self, name: str, epoch: int, grid: np.ndarray) -> pathlib.Path | None:
    """Saves `images/NAME_EPOCH.png` and the same image in TensorBoard."""
    if not self.enabled:
      return None
    path = images.save_png(self.image_dir / f"{name}_{epoch}.png", grid)
    self._tb.add_image(name, grid, epoch, dataformats="HW")
    self._tb.flush()
    return path

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()
