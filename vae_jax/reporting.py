"""Run outputs: `metrics.jsonl`, TensorBoard events (tensorboardX, no TensorFlow), PNGs.

metrics.jsonl holds one JSON object per epoch and model. TensorBoard gets the
metrics (`SCALARS`) against the training step, the figures, and the resolved
config as text and as hyperparameters; with several models, one run per
model (`tensorboard/model_I/`). Only the main process writes; on the others
a Reporter does nothing. Nothing is created before the first write.
"""
import json
import pathlib
import sys

import numpy as np

from vae_jax import images
from vae_jax.errors import UsageError

METRICS_FILE = "metrics.jsonl"
# What TensorBoard charts: metrics, not bookkeeping (epoch, step, model, k, settings).
SCALARS = ("train_loss", "train_objective", "test_loss", "test_recon", "test_kl",
           "test_iwae_nll", "test_iwae_nll_stderr", "learning_rate", "kl_weight",
           "epoch_seconds", "examples_per_second", "eval_seconds", "iwae_seconds",
           "compile_seconds")


def read_metrics(workdir) -> list[dict]:
  """The records of `workdir/metrics.jsonl`, one dict per line.

  A torn last line (a crash in the middle of writing it) is left out.

  Raises:
    UsageError: a line before the last is not JSON.
  """
  return _parse(pathlib.Path(workdir) / METRICS_FILE)[0]


def _parse(path: pathlib.Path) -> tuple[list[dict], bool]:
  """(records, whether the last line was torn)."""
  if not path.is_file():
    return [], False
  lines = [line for line in path.read_text().splitlines() if line.strip()]
  records = []
  for i, line in enumerate(lines):
    try:
      record = json.loads(line)
    except ValueError:
      if i + 1 == len(lines):
        return records, True
      raise UsageError(f"{path}: line {i + 1} is not JSON; repair or remove the file") from None
    records.append(record)
  return records, False


class Reporter:
  """Writes metric records and figures of a run, per model."""

  def __init__(self, workdir, enabled: bool = True, num_models: int = 1):
    self.workdir = pathlib.Path(workdir)
    self.enabled = enabled
    self.num_models = num_models
    self._writers = {}

  @property
  def metrics_path(self) -> pathlib.Path:
    return self.workdir / METRICS_FILE

  def image_dir(self, model: int = 0) -> pathlib.Path:
    """`images/`, or `images/model_I/` when the run has several models."""
    base = self.workdir / "images"
    return base / f"model_{model}" if self.num_models > 1 else base

  def keep_epochs(self, epoch: int) -> None:
    """Prepares metrics.jsonl for a run resuming after `epoch`: drops a torn last line
    (with a warning) and the records of later epochs, which the run writes again."""
    if not self.enabled:
      return
    records, torn = _parse(self.metrics_path)
    if torn:
      print(f"warning: {self.metrics_path}: dropped a torn last line (a crash while writing "
            "it); its epoch is evaluated again", file=sys.stderr, flush=True)
    kept = [r for r in records if r["epoch"] <= epoch]
    if torn or len(kept) != len(records):
      temporary = self.metrics_path.with_name(METRICS_FILE + ".tmp")
      temporary.write_text("".join(json.dumps(r) + "\n" for r in kept))
      temporary.replace(self.metrics_path)

  def write_metrics(self, records: list[dict]) -> None:
    """Appends one epoch's records (one per model, with `epoch`, `step`, `model`) to
    metrics.jsonl, and their `SCALARS` to TensorBoard against `step`."""
    if not self.enabled:
      return
    self.workdir.mkdir(parents=True, exist_ok=True)
    with open(self.metrics_path, "a") as f:
      f.write("".join(json.dumps(r) + "\n" for r in records))
    for record in records:
      writer = self._writer(record.get("model", 0))
      for name in SCALARS:
        if isinstance(record.get(name), (int, float)):
          writer.add_scalar(name, record[name], record["step"])
      writer.flush()

  def write_image(self, name: str, epoch: int, step: int, grid: np.ndarray,
                  model: int = 0) -> pathlib.Path | None:
    """Saves `images/[model_I/]NAME_EPOCH.png` and the image in TensorBoard at `step`."""
    if not self.enabled:
      return None
    path = images.save_png(self.image_dir(model) / f"{name}_{epoch}.png", grid)
    writer = self._writer(model)
    writer.add_image(name, grid, step, dataformats="HW" if grid.ndim == 2 else "HWC")
    writer.flush()
    return path

  def write_config(self, config: dict, settings: list[dict]) -> None:
    """The resolved config as TensorBoard text and hyperparameters (each model's settings on top)."""
    if not self.enabled:
      return
    from tensorboardX.summary import hparams  # pylint: disable=g-import-not-at-top
    for model, extra in enumerate(settings):
      writer = self._writer(model)
      text = json.dumps({**config, **extra}, indent=2, sort_keys=True)
      writer.add_text("config", f"```\n{text}\n```", 0)
      flat = {k: _hparam(v) for k, v in _flatten({**config, **extra}).items()}
      for summary in hparams(flat, {"test_loss": 0.0}):
        writer.file_writer.add_summary(summary)
      writer.flush()

  def close(self) -> None:
    for writer in self._writers.values():
      writer.close()
    self._writers = {}

  def _writer(self, model: int):
    if model not in self._writers:
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
      logdir = self.workdir / "tensorboard"
      if self.num_models > 1:
        logdir = logdir / f"model_{model}"
      self._writers[model] = SummaryWriter(logdir=str(logdir))
    return self._writers[model]


def _flatten(values: dict, prefix: str = "") -> dict:
  flat = {}
  for key, value in values.items():
    if isinstance(value, dict):
      flat.update(_flatten(value, f"{prefix}{key}."))
    else:
      flat[prefix + key] = value
  return flat


def _hparam(value):
  return value if isinstance(value, (bool, int, float, str)) else str(value)
