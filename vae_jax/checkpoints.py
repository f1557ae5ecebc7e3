"""Checkpoint and workdir I/O: orbax checkpoints that detect damage, and the resolved `config.json`.

A workdir holds `config.json` (what rebuilds the model) and `checkpoints/STEP/`
with these orbax items:
  * `params` and `opt_state`: the stacked models' arrays (leading model axis);
  * `model_state`: the family's non-gradient collections (an EMA codebook), for
    a family that has any;
  * `meta`: JSON with the step, the train state's other counters (which models
    are alive, the epoch's metric sums, ...: `train_state.TrainState.COUNTERS`),
    what the run checks on resume (its steps per epoch), and per array item its
    layout (leaf paths, dtypes, shapes) and a SHA-256 digest of its contents.
A restore first compares the layout, so another model or optimizer is named
as such, then recomputes the digests, so truncated, deleted or overwritten
files are caught (orbax itself does not verify content). `restore_newest` is
the one restore path of training, `load` and `evaluate`: it falls back to the
newest intact checkpoint, and the run's writer moves the damaged ones to
`checkpoints.damaged/`. Orbax writes each checkpoint into
a temporary folder and renames it when complete, so readers never see half of
one; the writer deletes the temporary folders of saves killed midway.
"""
import contextlib
import errno
import gc
import hashlib
import inspect
import json
import logging
import pathlib
import re
import shutil
import sys

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from vae_jax import parallel
from vae_jax import schema
from vae_jax.errors import UsageError

CONFIG_FILE = "config.json"
CUSTOM_MODEL = schema.CUSTOM_MODEL  # config.model of a run trained with a user's own module.


class DamagedCheckpoint(Exception):
  """A checkpoint's files are missing, unreadable or fail their digest."""


class OtherLayout(UsageError):
  """A checkpoint holds arrays of other names or shapes than the state restored into:
  another model or optimizer, not damage."""


# ----------------------------------------------------------------------------
# config.json


def write_config(workdir, config: ml_collections.ConfigDict) -> None:
  """Writes `workdir/config.json` atomically (a temporary file, then a rename)."""
  path = pathlib.Path(workdir) / CONFIG_FILE
  temporary = path.with_name(CONFIG_FILE + ".tmp")
  temporary.write_text(json.dumps(config.to_dict(), indent=2, sort_keys=True) + "\n")
  temporary.replace(path)


def read_config(workdir) -> ml_collections.ConfigDict | None:
  """The workdir's resolved config, checked as `train` checks a config, or None when
  there is none.

  Raises:
    UsageError: config.json is unreadable, not a JSON object of a run's config, lacks a
      field that fixes the parameter shapes, or holds a value of the wrong type or out
      of range (one line naming config.json, the field and the value).
  """
  path = pathlib.Path(workdir) / CONFIG_FILE
  if not path.is_file():
    return None
  try:
    values = json.loads(path.read_text())
  except (OSError, ValueError) as e:
    raise UsageError(f"{path}: unreadable config ({_first_line(e)})") from None
  if not isinstance(values, dict) or "image_shape" not in values:
    raise UsageError(f"{path} is not the config.json of a vae_jax run (it holds "
                     f"{_describe_json(values)}); move it away or use a new --workdir")
  where = f"{path}: "
  values = schema.upgrade(values, where)
  config = ml_collections.ConfigDict(values)
  schema.check(config, where, resolved=True)
  config.image_shape = tuple(config.image_shape)
  return config


def _describe_json(values) -> str:
  if isinstance(values, dict):
    return "an object without image_shape" if values else "an empty object"
  return f"a JSON {type(values).__name__}"


def check_same_model(saved: ml_collections.ConfigDict, config: ml_collections.ConfigDict,
                     workdir) -> None:
  """Raises UsageError when `config` describes other parameter shapes than `saved`."""
  if CUSTOM_MODEL in (saved.get("model"), config.get("model")):
    return  # The restore itself checks a user-defined network's shapes.
  diffs = schema.differences(saved, config)
  if diffs:
    raise UsageError(f"workdir {workdir} holds a checkpoint of a different model "
                     f"({'; '.join(diffs)}); use a new --workdir or the same settings")


# ----------------------------------------------------------------------------
# Digests


def layout(tree) -> dict[str, list]:
  """{leaf path: [dtype, *shape]} of a pytree of arrays or ShapeDtypeStructs, JSON-ready."""
  return {jax.tree_util.keystr(path): [str(np.dtype(leaf.dtype)), *map(int, leaf.shape)]
          for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def digest(tree) -> str:
  """SHA-256 over a pytree's leaves: their paths, dtypes, shapes and bytes."""
  h = hashlib.sha256()
  for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
    # Replicated global arrays: every process holds the whole array.
    array = np.asarray(leaf.addressable_data(0) if isinstance(leaf, jax.Array) else leaf)
    h.update(f"{jax.tree_util.keystr(path)}|{array.dtype}|{array.shape}|".encode())
    h.update(np.ascontiguousarray(array).tobytes())
  return h.hexdigest()


# ----------------------------------------------------------------------------
# The checkpointer


class Checkpointer:
  """Saves and restores train states under `workdir/checkpoints`.

  The state is a `train_step.TrainState`: `save` writes its arrays and its
  counters; `restore` and `restore_newest` give back the arrays asked for and
  the record, from which `counters` reads the rest.
  """

  def __init__(self, workdir, keep: int = 3, create: bool = True):
    """
    Args:
      workdir: the run's folder; checkpoints go to `workdir/checkpoints`.
      keep: how many checkpoints to keep.
      create: this is the run's writer (it holds the workdir's lock): create the
        folder, and delete what saves killed midway left behind. Readers pass False
        and touch nothing, so they never remove a save in progress.
    """
    workdir = pathlib.Path(workdir).absolute()
    self._damaged_dir = workdir / "checkpoints.damaged"
    self.last_good_step: int | None = None  # The newest checkpoint known intact (read or written).
    self._manager = ocp.CheckpointManager(
        workdir / "checkpoints",
        options=ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=create, cleanup_tmp_directories=create,
            enable_async_checkpointing=False))

  @property
  def directory(self) -> pathlib.Path:
    return pathlib.Path(self._manager.directory)

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def save(self, state, info: dict | None = None) -> bool:
    """Writes a checkpoint at `state.steps_done` unless one exists there; returns whether it wrote.

    The parameters and optimizer state are orbax items; the state's small
    `COUNTERS` (steps, alive, the epoch's sums, ...) and `info` (what the run
    checks on resume, e.g. the steps per epoch) go into its JSON record.

    Raises:
      UsageError: the disk is full: checked before orbax starts writing (so that
        none of its threads fail), and caught if the space runs out while it
        writes (the partial checkpoint is removed); older checkpoints stay.
    """
    step = state.steps_done
    self._recreate_if_removed(step)
    if step in self._manager.all_steps():
      return False
    needed = sum(x.nbytes for x in jax.tree.leaves(array_items(state)))
    if shutil.disk_usage(self.directory).free < needed:
      raise self._disk_full(step, needed, "nothing was written")
    arrays = array_items(state)
    meta = {"step": step, "counters": state.counters(), "info": dict(info or {}),
            "digests": {item: digest(tree) for item, tree in arrays.items()},
            "layout": {item: layout(tree) for item, tree in arrays.items()}}
    try:
      with _orbax_reports_held_back():
        self._manager.save(step, args=ocp.args.Composite(
            **{item: ocp.args.StandardSave(tree) for item, tree in arrays.items()},
            meta=ocp.args.JsonSave(meta)), force=True)
        self._manager.wait_until_finished()
    except Exception as e:  # pylint: disable=broad-except
      self._remove_partial(step)
      if _is_disk_full(e):
        raise self._disk_full(step, needed, "the partial checkpoint was removed") from None
      raise
    if parallel.is_main_process():
      _write_manifest(self.directory / str(step))
    self.last_good_step = step
    return True

  def _recreate_if_removed(self, step: int) -> None:
    """Creates the checkpoint folder again, with a warning, when it was removed while the
    run trained (its checkpoints are lost; the run's state is not)."""
    if self.directory.is_dir() or not parallel.is_main_process():
      return
    lost = self.all_steps()
    self.directory.mkdir(parents=True, exist_ok=True)
    self._manager.reload()
    self.last_good_step = None
    held = f"its checkpoints of steps {', '.join(map(str, lost))} are lost" if lost else (
        "it held no checkpoint yet")
    _warn(f"warning: {self.directory} was removed while the run trained ({held}); created it "
          f"again to save step {step}")

  def _disk_full(self, step: int, needed: int, what_happened: str) -> UsageError:
    free = shutil.disk_usage(self.directory).free
    return UsageError(f"disk full while saving checkpoint {step} to {self.directory} "
                      f"(about {needed / 2**20:.1f} MiB needed, {free / 2**20:.1f} MiB free); "
                      f"{what_happened} and older checkpoints are intact")

  def restore(self, abstract: dict, step: int | None = None) -> tuple[dict, dict]:
    """The array items `abstract` names ("params", "opt_state", "model_state") at
    `step` (default: the latest), verified, and the checkpoint's record.

    Only the items asked for are read: a reader of the parameters alone is not
    stopped by any optimizer setting.

    Raises:
      UsageError: no checkpoint at `step`.
      OtherLayout: it holds another model's or optimizer's arrays.
      DamagedCheckpoint: its files are missing, unreadable or altered.
    """
    step = self._existing(step)
    _check_files(self.directory / str(step), ["meta", *abstract])
    meta = self._meta(step)
    return self._restore_items(step, meta, abstract), meta

  def restore_newest(self, abstract: dict, *, set_aside: bool) -> tuple[dict, dict, int]:
    """The newest checkpoint that restores and verifies: (items, record, step).

    The one restore path of training, `load` and `evaluate`: each newer damaged
    checkpoint gets one warning line naming its step and why. The run's writer
    (`set_aside`, holding the workdir's lock) moves them to `checkpoints.damaged/`,
    so that it can save those steps again; readers move nothing.

    Raises:
      UsageError: no checkpoint, or every one damaged (nothing is moved), or they
        hold another model (`OtherLayout`).
    """
    damaged = []
    for step in reversed(self.all_steps()):
      try:
        items, meta = self.restore(abstract, step)
      except DamagedCheckpoint as e:
        damaged.append((step, str(e)))
        continue
      if set_aside:
        self._set_aside(damaged, step)
      for bad, why in ([] if set_aside else damaged):
        _warn(f"warning: checkpoint {bad} in {self.directory} is damaged ({why}); "
              f"using step {step}, the newest intact one")
      self.last_good_step = step
      return items, meta, step
    if not damaged:
      raise UsageError(f"no checkpoint in {self.directory}")
    reasons = "; ".join(f"step {s}: {why}" for s, why in damaged)
    raise UsageError(f"every checkpoint in {self.directory} is damaged ({reasons}): their "
                     "files are corrupt or incomplete, not those of another model. Restore "
                     "them from a backup, or move checkpoints/ away to train from scratch")

  def _meta(self, step: int) -> dict:
    """The checked meta record of `step`."""
    try:
      with _orbax_reports_held_back():
        meta = self._manager.restore(step, args=ocp.args.Composite(
            meta=ocp.args.JsonRestore())).meta
    except Exception as e:  # pylint: disable=broad-except
      raise DamagedCheckpoint(f"its meta record is unreadable: {_reason(e)}") from None
    return _checked_meta(meta, step)

  def _restore_items(self, step: int, meta: dict, abstract: dict) -> dict:
    """The array items `abstract` names at `step`, checked against the layout and the
    digests in `meta`."""
    for item, tree in abstract.items():
      _check_layout(step, item, meta, tree)
    try:
      with _orbax_reports_held_back():
        restored = self._manager.restore(step, args=ocp.args.Composite(
            **{item: ocp.args.StandardRestore(tree) for item, tree in abstract.items()}))
    except Exception as e:  # pylint: disable=broad-except
      raise DamagedCheckpoint(_reason(e)) from None
    for item in abstract:
      _verify(restored[item], meta, item)
    return {item: restored[item] for item in abstract}

  def _set_aside(self, damaged: list[tuple[int, str]], restored_step: int) -> None:
    """Moves the `damaged` (step, reason) checkpoints into `checkpoints.damaged/`."""
    if not damaged:
      return
    if parallel.is_main_process():
      for step, why in damaged:
        target = self._damaged_dir / str(step)
        for n in range(1, 1000):  # An earlier damaged copy of the step stays too.
          if not target.exists():
            break
          target = self._damaged_dir / f"{step}.{n}"
        self._damaged_dir.mkdir(exist_ok=True)
        shutil.move(self.directory / str(step), target)
        _warn(f"warning: checkpoint {step} in {self.directory} is damaged ({why}); moved it to "
             f"{target}, resuming from step {restored_step}")
    parallel.any_process(False)  # The others wait for the move before looking again.
    self._manager.reload()

  def close(self) -> None:
    self._manager.close()

  def _existing(self, step: int | None) -> int:
    step = self.latest_step() if step is None else step
    if step not in self._manager.all_steps():
      raise UsageError(f"no checkpoint at step {step} in {self.directory} "
                       f"(steps: {', '.join(map(str, self.all_steps())) or 'none'})")
    return step

  def _remove_partial(self, step: int) -> None:
    """Deletes what a failed save of `step` left behind (orbax's temporary folders)."""
    # `save` only writes steps that had no checkpoint, so nothing valid is lost here.
    for path in [self.directory / str(step), *self.directory.glob(f"{step}.*")]:
      shutil.rmtree(path, ignore_errors=True)
    self._manager.reload()


MANIFEST = "files.json"  # In each step's folder: its files' sizes and SHA-256 digests.


def _file_digest(path: pathlib.Path) -> str:
  with open(path, "rb") as f:
    return hashlib.file_digest(f, "sha256").hexdigest()


def _write_manifest(step_dir: pathlib.Path) -> None:
  """Records the size and SHA-256 of every file of a saved checkpoint (written last,
  to a temporary name and renamed), so that a restore finds damage before orbax reads
  the files: a failed read leaves orbax's threads reporting errors long after."""
  files = {str(p.relative_to(step_dir)): [p.stat().st_size, _file_digest(p)]
           for p in sorted(step_dir.rglob("*")) if p.is_file() and p.name != MANIFEST}
  temporary = step_dir / f"{MANIFEST}.tmp"
  temporary.write_text(json.dumps(files, indent=0) + "\n")
  temporary.rename(step_dir / MANIFEST)


def _check_files(step_dir: pathlib.Path, items: list[str]) -> None:
  """Raises DamagedCheckpoint when a file of `items` (subfolders of the step) is
  missing, of another size or altered, by the manifest; checkpoints saved before
  manifests were written are checked by orbax's read and the array digests alone."""
  try:
    files = json.loads((step_dir / MANIFEST).read_text())
  except FileNotFoundError:
    return
  except (OSError, ValueError) as e:
    raise DamagedCheckpoint(f"its {MANIFEST} is unreadable: {_first_line(e)}") from None
  for name, (size, sha256) in files.items():
    if name.split("/", 1)[0] not in items:
      continue
    path = step_dir / name
    if not path.is_file():
      raise DamagedCheckpoint(f"its file {name} is missing")
    if path.stat().st_size != size:
      raise DamagedCheckpoint(f"its file {name} has {path.stat().st_size} bytes, not the "
                              f"{size} it was saved with")
    if _file_digest(path) != sha256:
      raise DamagedCheckpoint(f"its file {name} does not match the SHA-256 it was saved with")


def array_items(state) -> dict:
  """The orbax items of a train state's arrays: `params`, `opt_state`, and `model_state`
  where the family has non-gradient state."""
  items = {"params": state.params, "opt_state": state.opt_state}
  if jax.tree.leaves(state.model_state):
    items["model_state"] = state.model_state
  return items


def counters(meta: dict, metrics) -> dict:
  """A checkpoint record's `TrainState.COUNTERS` and the epoch's `sums` of `metrics`, one
  value per model (a metric's sum: a list of its shape), also from records written before
  (with a `progress` record, or with `loss_sum` and `objective_sum` for the sums of the
  Gaussian VAE's loss and objective); a metric without a saved sum is left out."""
  if "counters" in meta:
    saved = meta["counters"]
    n = len(saved["step"])
    sums = saved.get("sums") or {"loss": saved["loss_sum"], "objective": saved["objective_sum"]}
    # Counters added since (0 for each model): the state restores with them.
    values = {"grad_norm_level": [0.0] * n, "skipped": [0] * n, **saved}
  else:
    progress, n = meta["progress"], len(meta["alive"])
    sums = {"loss": progress["loss_sums"], "objective": progress["objective_sums"]}
    values = {"step": [meta["step"]] * n, "alive": meta["alive"],
              "diverged_at": [d or 0 for d in progress["diverged_at"]],
              "seconds": [progress["seconds"]] * n, "grad_norm_level": [0.0] * n,
              "skipped": [0] * n}
  values = {name: values[name] for name in ("step", "alive", "diverged_at", "seconds",
                                            "grad_norm_level", "skipped")}
  return {**values, "sums": {name: sums[name] for name in metrics if name in sums}}


def _checked_meta(meta, step: int) -> dict:
  if not isinstance(meta, dict) or not {"step", "digests"} <= meta.keys() or not (
      "counters" in meta or {"alive", "progress"} <= meta.keys()):  # Before: progress.
    raise DamagedCheckpoint("its meta record is missing or incomplete")
  if meta["step"] != step:
    raise DamagedCheckpoint(f"its meta record says step {meta['step']}")
  return meta


def _check_layout(step: int, item: str, meta: dict, abstract) -> None:
  """Raises OtherLayout when the arrays `meta` records for `item` are not `abstract`'s."""
  saved = meta.get("layout", {}).get(item)
  if saved is None:
    return  # Saved before layouts were recorded; the restore itself will fail on a mismatch.
  ours = layout(abstract)
  if saved == ours:
    return
  diffs = [f"{path} {saved.get(path, 'absent')} vs {ours.get(path, 'absent')}"
           for path in sorted(saved.keys() | ours.keys()) if saved.get(path) != ours.get(path)]
  detail = f"{len(diffs)} differ: {'; '.join(diffs[:3])}{' ...' if len(diffs) > 3 else ''}"
  error = OtherLayout(f"checkpoint {step} holds other {item} arrays than this model and "
                      f"optimizer ({detail}); use the settings it was trained with, or a new "
                      "--workdir")
  error.detail = detail
  raise error


def _verify(tree, meta: dict, item: str) -> None:
  if digest(tree) != meta["digests"].get(item):
    raise DamagedCheckpoint(f"the {item} arrays do not match their SHA-256 digest")


@contextlib.contextmanager
def _orbax_reports_held_back():
  """Drops orbax's own log reports while it saves or restores: on a failed write or
  read each of its threads logs a traceback, and asyncio logs its failed futures that
  nobody awaited ("exception was never retrieved"); the error raised here says it all
  in a line. Logging filters on those two loggers only: no process-wide hook is
  replaced. A full disk is checked before a save starts, so that orbax's threads
  rarely fail at all. After a failure the filters stay, since those threads and
  futures live on."""
  orbax_dir = str(pathlib.Path(ocp.__file__).parent)
  drop = logging.Filter()
  drop.filter = lambda record: not record.pathname.startswith(orbax_dir)
  logger = logging.getLogger("absl")
  logger.addFilter(drop)
  # The futures' exceptions come from orbax's code or straight from tensorstore's
  # C++ (no Python traceback); nothing else in a vae_jax process uses asyncio.
  unretrieved = logging.Filter()
  unretrieved.filter = lambda record: not (record.exc_info and (
      record.exc_info[2] is None or _raised_in(record.exc_info[2], orbax_dir)))
  logging.getLogger("asyncio").addFilter(unretrieved)
  try:
    yield
  except BaseException:
    _close_abandoned(orbax_dir)
    raise
  logger.removeFilter(drop)
  logging.getLogger("asyncio").removeFilter(unretrieved)


def _close_abandoned(folder: str) -> None:
  """Closes the coroutines of `folder`'s code that a failed save or restore left
  suspended, dropping what they raise. Orbax runs its reads and writes as tasks of an
  event loop that it closes when the first one fails; the others stay suspended until
  the garbage collector finalises them, and each then reports its own error as
  "Exception ignored in: <coroutine ...>". Closed here, they have nothing left to say.
  """
  for obj in gc.get_objects():
    if (inspect.iscoroutine(obj) and obj.cr_frame is not None
        and obj.cr_code.co_filename.startswith(folder)):
      try:
        obj.close()
      except BaseException:  # pylint: disable=broad-except
        pass  # The error the caller raises says it in a line.


def _raised_in(traceback, folder: str) -> bool:
  while traceback is not None:
    if traceback.tb_frame.f_code.co_filename.startswith(folder):
      return True
    traceback = traceback.tb_next
  return False


def _is_disk_full(e: BaseException) -> bool:
  while e is not None:
    if isinstance(e, OSError) and e.errno == errno.ENOSPC or "No space left" in str(e):
      return True
    e = e.__cause__ or e.__context__
  return False


def _first_line(e: BaseException) -> str:
  text = str(e).strip()
  return (text.splitlines()[0][:200] if text else type(e).__name__)


def _reason(e: BaseException) -> str:
  """Why orbax or tensorstore could not read a checkpoint, in a line: the start and the
  end of the innermost error's message, which hold the kind of error and its cause."""
  while e.__cause__ is not None:  # Orbax wraps tensorstore's error in one that prints specs.
    e = e.__cause__
  text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
  text = re.sub(r" \[tensorstore_spec.*", "", text)
  return text if len(text) <= 160 else f"{text[:60]} ... {text[-95:]}"


def _warn(message: str) -> None:
  print(message, file=sys.stderr, flush=True)


def abstract_like(tree, sharding) -> object:
  """ShapeDtypeStructs of `tree`, all placed with `sharding`."""
  return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding), tree)
