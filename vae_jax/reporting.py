"""Everything a training run shows and writes besides its checkpoints: the `Reporter`.

metrics.jsonl holds one JSON object per epoch and model: whatever metrics the
run's family returns (`train_NAME`, `test_NAME`), its schedules, its bound,
the times. TensorBoard gets every number of a record but the bookkeeping
(`BOOKKEEPING`: epoch, step, model, a model's settings) against the training
step (a list as `NAME/1`, `NAME/2`, ...), the figures, and the resolved config
as text and as hyperparameters; with several models, one run per model
(`tensorboard/model_I/`, `images/model_I/`: `model_subdir`). The terminal gets
progress bars, one line per epoch (`epoch_line`), warnings on stderr and the
closing line. Only the main process writes; on the others a Reporter does
nothing. Nothing is created before the first write.
"""
import json
import pathlib
import sys

import numpy as np

from vae_jax import checkpoints
from vae_jax import images
from vae_jax.errors import UsageError

METRICS_FILE = "metrics.jsonl"
# Rows of metrics.jsonl beyond the checkpoint a rerun resumes from, kept when it trains them again.
DROPPED_FILE = "metrics.dropped.jsonl"
# What TensorBoard does not chart: where a record stands, not what it measures.
BOOKKEEPING = ("epoch", "step", "model", "iwae_k", "diverged_at_step")


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
    return self.workdir / "images" / images.model_subdir(self.num_models, model)

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
    dropped = [r for r in records if r["epoch"] > epoch]
    if dropped:  # Epochs the checkpoints do not hold: kept aside, not overwritten silently.
      aside = self.metrics_path.with_name(DROPPED_FILE)
      with open(aside, "a") as f:
        f.write("".join(json.dumps(r) + "\n" for r in dropped))
      epochs = sorted({r["epoch"] for r in dropped})
      span = f"epoch {epochs[0]}" if len(epochs) == 1 else f"epochs {epochs[0]}-{epochs[-1]}"
      held = (f"the run resumes after epoch {epoch}" if epoch else
              "no checkpoint holds any epoch (was checkpoints/ removed?)")
      print(f"warning: {self.metrics_path} records {span}, which the checkpoints do not hold "
            f"({held}); moved those rows to {aside} and training them again", file=sys.stderr,
            flush=True)
    if torn or len(kept) != len(records):
      temporary = self.metrics_path.with_name(METRICS_FILE + ".tmp")
      temporary.write_text("".join(json.dumps(r) + "\n" for r in kept))
      temporary.replace(self.metrics_path)

  def has_epoch(self, epoch: int) -> bool:
    """Whether metrics.jsonl records `epoch` (a torn last line does not count)."""
    return any(r.get("epoch") == epoch for r in _parse(self.metrics_path)[0])

  def write_metrics(self, records: list[dict], settings: tuple[str, ...] = ()) -> None:
    """Appends one epoch's records (one per model, with `epoch`, `step`, `model`) to
    metrics.jsonl, and their numbers to TensorBoard against `step` (`scalars`).

    Args:
      settings: the names of the models' sweepable settings in the records (not charted).
    """
    if not self.enabled:
      return
    self.workdir.mkdir(parents=True, exist_ok=True)
    with open(self.metrics_path, "a") as f:
      f.write("".join(json.dumps(r) + "\n" for r in records))
    for record in records:
      writer = self._writer(record.get("model", 0))
      for name, value in scalars(record, settings).items():
        writer.add_scalar(name, value, record["step"])
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

  def write_figures(self, epoch: int, step: int, figures: dict[str, np.ndarray]) -> None:
    """Each model's figures of an epoch: `images/[model_I/]NAME_EPOCH.png` per figure.

    Args:
      figures: name -> grids of images (N, rows, cols, H, W, C) in [0, 1], one per model.
    """
    for i in range(self.num_models):
      for name, grids in figures.items():
        rows, cols = grids.shape[1:3]
        grid = np.asarray(grids[i]).reshape(rows * cols, *grids.shape[3:])
        self.write_image(name, epoch, step, images.tile(grid, cols=cols), model=i)

  def write_config(self, config, settings: list[dict]) -> None:
    """config.json (the resolved config, which rebuilds the model) and the config as
    TensorBoard text and hyperparameters (each model's settings on top); once per run."""
    if self.config_written and self.enabled and not (
        self.workdir / checkpoints.CONFIG_FILE).exists():
      print(f"warning: {self.workdir / checkpoints.CONFIG_FILE} was removed while the run "
            "trained; written again", file=sys.stderr, flush=True)
      checkpoints.write_config(self.workdir, config)
      return
    if self.config_written or not self.enabled:
      self.config_written = True
      return
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
      logdir = self.workdir / "tensorboard" / images.model_subdir(self.num_models, model)
      self._writers[model] = SummaryWriter(logdir=str(logdir))
    return self._writers[model]


def scalars(record: dict, settings: tuple[str, ...] = ()) -> dict[str, float]:
  """What TensorBoard charts of a record: every number but the bookkeeping and the
  settings, a list's items as `NAME/1`, `NAME/2`, ... (a hierarchy's KL per layer)."""
  charted = {}
  for name, value in record.items():
    if name in BOOKKEEPING or name in settings:
      continue
    if isinstance(value, (int, float)) and not isinstance(value, bool):
      charted[name] = value
    elif isinstance(value, list) and all(isinstance(v, (int, float)) for v in value):
      charted.update({f"{name}/{i + 1}": v for i, v in enumerate(value)})
  return charted


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


def epoch_line(records: list[dict], num_epochs: int, labels: dict[str, str] | None = None) -> str:
  """One line per epoch: the test metrics, the bound and the training metrics, or for
  several models their mean ± std (and the best by the first test metric).

  Args:
    records: the epoch's records, one per model.
    labels: short names of the family's metrics (`Family.labels`, e.g. `{"kl": "KL"}`);
      others are shown by name.
  """
  labels = labels or {}
  first = records[0]
  head = f"epoch {first['epoch']:>3}/{num_epochs}"
  speed = (f"{first['epoch_seconds']:6.2f} s  ({first['examples_per_second']:,.0f} "
           f"examples/s{f' x {len(records)} models' if len(records) > 1 else ''})")
  label = lambda name, prefix: labels.get(name[len(prefix):],
                                          name[len(prefix):].replace("_", " "))
  # The test metrics; a bound (the one with a standard error) with its k.
  shown = [(name, label(name, "test_") + (f" (k={first['iwae_k']})" if name + "_stderr" in first
                                          and "iwae_k" in first else ""))
           for name in first if name.startswith("test_") and not name.endswith("_stderr")
           and isinstance(first[name], (int, float, type(None)))]
  if len(records) == 1:
    parts = [f"{text} {_number(first[name])}" + _items(first.get(name + "_per_layer"))
             for name, text in shown]
    trains = [f"train {label(n, 'train_')} {_number(first[n])}"
              for n in first if n.startswith("train_")]
    return f"{head}  test {'  '.join(parts)}  {'  '.join(trains)}  {speed}"
  live = [r for r in records if "diverged_at_step" not in r]
  stat = lambda name: _mean_std([r[name] for r in live])
  key = shown[0][0]
  best = min(live, key=lambda r: r[key])
  parts = [f"{text} {stat(name)}" for name, text in shown]
  dead = f"  ({len(records) - len(live)} diverged)" if len(live) < len(records) else ""
  return (f"{head}  test {parts[0]} (best {best[key]:.2f}, model {best['model']})  "
          f"{'  '.join(parts[1:])}  {speed}{dead}")


def _number(value) -> str:
  return "     nan" if value is None else f"{value:8.2f}"


def _items(values) -> str:
  """A list metric beside its total: ` (1.23/4.56)`; "" without one."""
  return "" if not values else f" ({'/'.join(f'{v:.2f}' for v in values)})"


def _mean_std(values: list[float]) -> str:
  values = np.asarray(values, np.float64)
  return f"{values.mean():.2f} ± {values.std(ddof=1) if len(values) > 1 else 0.0:.2f}"


def settings_text(settings: dict) -> str:
  """A model's settings, e.g. "seed 1, learning_rate 0.001, beta 1"."""
  return ", ".join(f"{k} {v:g}" for k, v in settings.items())
