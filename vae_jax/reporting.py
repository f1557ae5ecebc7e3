"""Everything a training run shows and writes besides its checkpoints: the `Reporter`.

metrics.jsonl holds one JSON object per epoch and model. TensorBoard gets the
metrics (`SCALARS`) against the training step, the figures, and the resolved
config as text and as hyperparameters; with several models, one run per
model (`tensorboard/model_I/`, `images/model_I/`: `model_subdir`). The
terminal gets progress bars, one line per epoch (`epoch_line`), warnings on
stderr and the closing line. Only the main process writes; on the others a
Reporter does nothing. Nothing is created before the first write.
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
           "compile_seconds", "skipped_updates")


def model_subdir(num_models: int, index: int) -> str:
  """The folder of model `index`'s figures and events: "" for one model, else "model_I"."""
  return f"model_{index}" if num_models > 1 else ""


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
  """Writes a run's metric records, figures, config and terminal lines, per model.

  Attributes:
    enabled: this process writes (the main process of a run).
    verbose: print progress bars and lines on the terminal.
  """

  def __init__(self, workdir, enabled: bool = True, num_models: int = 1, verbose: bool = False):
    self.workdir = pathlib.Path(workdir)
    self.enabled = enabled
    self.num_models = num_models
    self.verbose = verbose
    self.config_written = False
    self._writers = {}

  # The terminal.

  def say(self, message: str) -> None:
    """A line on stdout (verbose runs, main process)."""
    if self.verbose and self.enabled:
      print(message, flush=True)

  def warn(self, message: str) -> None:
    """A line on stderr (main process), verbose or not."""
    if self.enabled:
      print(message, file=sys.stderr, flush=True)

  def progress_bar(self, total: int, initial: int, description: str, unit: str = "step"):
    """A tqdm bar on a terminal (verbose runs, main process); a silent one elsewhere."""
    from tqdm.auto import tqdm  # pylint: disable=g-import-not-at-top
    return tqdm(total=total, initial=initial, desc=description, unit=unit, leave=False,
                disable=None if self.verbose and self.enabled else True)

  @property
  def metrics_path(self) -> pathlib.Path:
    return self.workdir / METRICS_FILE

  def image_dir(self, model: int = 0) -> pathlib.Path:
    """`images/`, or `images/model_I/` when the run has several models."""
    return self.workdir / "images" / model_subdir(self.num_models, model)

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

  def has_epoch(self, epoch: int) -> bool:
    """Whether metrics.jsonl records `epoch` (a torn last line does not count)."""
    return any(r.get("epoch") == epoch for r in _parse(self.metrics_path)[0])

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
      for i, kl in enumerate(record.get("test_kl_per_layer") or []):  # A hierarchy's layers.
        writer.add_scalar(f"test_kl_layer_{i + 1}", kl, record["step"])
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

  def write_figures(self, epoch: int, step: int, originals: np.ndarray, reconstructions,
                    samples, class_grid=None) -> None:
    """Each model's reconstructions (under the originals) and samples of an epoch, and a
    conditional model's class grid (`class_grid_EPOCH.png`, one row per class).

    Args:
      originals: (R, H, W, C) in [0, 1]; reconstructions (N, R, H, W, C); samples (N, S, H, W, C);
      class_grid: (N, K, G, H, W, C), or None.
    """
    for i in range(self.num_models):
      pairs = np.concatenate([originals, reconstructions[i]])
      self.write_image("reconstruction", epoch, step, images.tile(pairs, cols=len(originals)),
                       model=i)
      self.write_image("sample", epoch, step, images.tile(samples[i], cols=8), model=i)
      if class_grid is not None:
        rows, cols = class_grid.shape[1:3]
        grid = class_grid[i].reshape(rows * cols, *class_grid.shape[3:])
        self.write_image("class_grid", epoch, step, images.tile(grid, cols=cols), model=i)

  def write_config(self, config, settings: list[dict]) -> None:
    """config.json (the resolved config, which rebuilds the model) and the config as
    TensorBoard text and hyperparameters (each model's settings on top); once per run."""
    if self.config_written or not self.enabled:
      self.config_written = True
      return
    from vae_jax import checkpoints  # pylint: disable=g-import-not-at-top
    checkpoints.write_config(self.workdir, config)
    self.config_written = True
    self._write_tensorboard_config(config.to_dict(), settings)

  def _write_tensorboard_config(self, config: dict, settings: list[dict]) -> None:
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
      logdir = self.workdir / "tensorboard" / model_subdir(self.num_models, model)
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


# ----------------------------------------------------------------------------
# Lines.


def epoch_line(records: list[dict], num_epochs: int) -> str:
  """One line per epoch: the metrics, or for several models their mean ± std and the best."""
  first = records[0]
  head = f"epoch {first['epoch']:>3}/{num_epochs}"
  speed = (f"{first['epoch_seconds']:6.2f} s  ({first['examples_per_second']:,.0f} "
           f"examples/s{f' x {len(records)} models' if len(records) > 1 else ''})")
  if len(records) == 1:
    iwae = (f"  IWAE NLL (k={first['iwae_k']}) {first['test_iwae_nll']:8.2f}"
            if "test_iwae_nll" in first else "")
    train = (f"{first['train_loss']:8.2f}" if first["train_loss"] is not None else "     nan")
    layers = ("" if "test_kl_per_layer" not in first else
              f" ({'/'.join(f'{v:.2f}' for v in first['test_kl_per_layer'])})")
    return (f"{head}  test loss {first['test_loss']:8.2f}  recon {first['test_recon']:8.2f}  "
            f"KL {first['test_kl']:6.2f}{layers}{iwae}  train loss {train}  {speed}")
  live = [r for r in records if "diverged_at_step" not in r]
  stat = lambda name: _mean_std([r[name] for r in live])
  best = min(live, key=lambda r: r["test_loss"])
  iwae = (f"  IWAE NLL {stat('test_iwae_nll')}" if "test_iwae_nll" in first else "")
  dead = f"  ({len(records) - len(live)} diverged)" if len(live) < len(records) else ""
  return (f"{head}  test loss {stat('test_loss')} (best {best['test_loss']:.2f}, model "
          f"{best['model']})  recon {stat('test_recon')}  KL {stat('test_kl')}{iwae}  "
          f"{speed}{dead}")


def _mean_std(values: list[float]) -> str:
  values = np.asarray(values, np.float64)
  return f"{values.mean():.2f} ± {values.std(ddof=1) if len(values) > 1 else 0.0:.2f}"


def settings_text(settings: dict) -> str:
  """A model's settings, e.g. "seed 1, learning_rate 0.001, beta 1"."""
  return ", ".join(f"{k} {v:g}" for k, v in settings.items())
