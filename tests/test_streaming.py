"""The streamed epoch (`vae_jax.streaming`) against the resident one (`vae_jax.epoch`).

Both runners are driven as `trainer._train_epoch` drives them. On one
machine the streamed epoch must give the resident epoch's parameters bit for
bit: same permutation, same batches, same compiled step. Across device counts
the error model of `tests/test_parallel.py` applies.
"""
import functools
import os
import socket
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import REPO
from vae_jax import data
from vae_jax import epoch
from vae_jax import evaluation
from vae_jax import parallel
from vae_jax import streaming
from vae_jax.configs import tiny
from vae_jax.errors import UsageError
from vae_jax.sources import npy
from vae_jax.families import vae as vae_family
from conftest import vae_training
import vae_jax

NUM_IMAGES = 640  # 10 steps of 64.
RELATIVE_L2_TOLERANCE = 1e-4  # As in tests/test_parallel.py, whose docstring says why.


def _config(num_models=1):
  config = tiny.get_config()
  config.hidden, config.latents, config.num_models = 32, 4, num_models
  return config


def _images() -> np.ndarray:
  return data.load_idx_dir(data.SAMPLE_DIR).train.images[:NUM_IMAGES]


@pytest.fixture(scope="module")
def npy_dir(tmp_path_factory):
  folder = tmp_path_factory.mktemp("npy")
  images = _images()
  npy.write(folder, {"train": (images, np.arange(len(images)) % 10),
                     "test": (images[:50], np.zeros(50, np.int32))})
  return folder


def _setup(config, image_shape, mesh):
  """The step, a fresh initial state and the settings, all replicated."""
  step, state, settings = _initial(config.num_models, tuple(image_shape))
  put = lambda tree: jax.device_put(tree, parallel.replicated(mesh))
  return step, put(state), put(settings)


@functools.cache
def _initial(num_models, image_shape):
  """Made once per shape: initialisers run op by op, seconds of small compilations."""
  config = _config(num_models)
  state, step, settings = vae_training(config, vae_family.from_config(config, image_shape),
                                       num_models, total_steps=1_000)
  return step, parallel.to_host(state), parallel.to_host(settings)


def _epoch_keys(num_models, independent, epoch_index=0):
  """(shuffle keys, step keys) of an epoch, shaped as `trainer._epoch_keys` makes them."""
  keys = jnp.stack([jax.random.fold_in(jax.random.key(7), i) for i in range(num_models)])
  keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(keys, epoch_index)
  shuffle, steps = jax.vmap(jax.random.split, out_axes=1)(keys)
  return (shuffle if independent else shuffle[:1]), steps


def _train(kind, images, *, num_models=1, chunks=1, independent=False, epochs=1,
           max_chunk_bytes=epoch.MAX_CHUNK_BYTES, compile_first=False):
  """Parameters after `epochs` epochs through the `kind` runner, driven as the trainer does.

  Without `compile_first` the runners' jitted functions are called directly, as the
  trainer would without `compile`, so tests share jax's compilation cache.
  """
  config, mesh = _config(num_models), parallel.make_mesh()
  step, state, settings = _setup(config, images.shape[1:], mesh)
  common = dict(batch_size=config.batch_size, chunks_per_epoch=chunks, mesh=mesh,
                independent_orders=independent)
  if kind == "resident":
    runner = epoch.Runner(step, epoch.place_training_set(np.asarray(images), mesh),
                          len(images), **common)
  else:
    runner = epoch.StreamedRunner(step, images, len(images),
                                      max_chunk_bytes=max_chunk_bytes, **common)
  for e in range(epochs):
    shuffle_keys, step_keys = _epoch_keys(num_models, independent, e)
    if e == 0 and compile_first:
      runner.compile(state, shuffle_keys, step_keys, settings)
    batches = runner.batches(shuffle_keys)
    for start in range(0, runner.steps_per_epoch, runner.chunk):
      state, metrics = runner.run_chunk(state, batches, step_keys, settings, start)
      parallel.to_host(metrics)
  if kind == "streamed":
    runner.close()
  return parallel.to_host(state.params), runner


def _assert_identical(a, b):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y)


# ----------------------------------------------------------------------------
# Exactness.


def test_permutations_are_those_of_the_resident_shuffle():
  keys = jnp.stack([jax.random.key(3), jax.random.key(4)])
  host = streaming.permutations(keys, 1000)
  for key, order in zip(keys, host):
    np.testing.assert_array_equal(order, jax.jit(lambda k: jax.random.permutation(k, 1000))(key))


@pytest.mark.slow
def test_streamed_batches_are_the_resident_batches(npy_dir):
  images = data.read_path(npy_dir, "npy").train.images
  config, mesh = _config(), parallel.make_mesh()
  step, _, _ = _setup(config, images.shape[1:], mesh)
  shuffle_keys, _ = _epoch_keys(1, False)
  resident = epoch.Runner(step, epoch.place_training_set(np.asarray(images), mesh),
                          len(images), batch_size=64, chunks_per_epoch=5, mesh=mesh)
  streamed = epoch.StreamedRunner(step, images, len(images), batch_size=64,
                                      chunks_per_epoch=5, mesh=mesh)
  expected = np.asarray(resident.batches(shuffle_keys))
  stream = streamed.batches(shuffle_keys)
  got = np.concatenate([np.asarray(stream.take(s)) for s in range(0, 10, streamed.chunk)])
  streamed.close()
  np.testing.assert_array_equal(got, expected)


@pytest.mark.slow
def test_streamed_epoch_gives_the_resident_parameters_bit_for_bit(npy_dir):
  images = data.read_path(npy_dir, "npy").train.images
  assert isinstance(images, np.memmap)
  resident, _ = _train("resident", images, epochs=2, chunks=4, compile_first=True)
  streamed, runner = _train("streamed", images, epochs=2, chunks=4, compile_first=True)
  assert runner.reader.path is not None  # Read with pread, not through numpy indexing.
  _assert_identical(streamed, resident)


@pytest.fixture(scope="module")
def resident_epoch(npy_dir):
  """The parameters after one resident epoch in one chunk."""
  return _train("resident", data.read_path(npy_dir, "npy").train.images)[0]


@pytest.mark.parametrize("chunks", [1, 10])
@pytest.mark.slow
def test_chunking_never_changes_the_streamed_result(npy_dir, resident_epoch, chunks):
  streamed, runner = _train("streamed", data.read_path(npy_dir, "npy").train.images,
                            chunks=chunks)
  assert runner.chunk == {1: 10, 10: 1}[chunks]
  _assert_identical(streamed, resident_epoch)


def test_a_byte_budget_shortens_the_chunk(npy_dir, resident_epoch):
  one_step = 64 * 28 * 28
  streamed, runner = _train("streamed", data.read_path(npy_dir, "npy").train.images,
                            max_chunk_bytes=2 * one_step)
  assert runner.chunk == 2
  _assert_identical(streamed, resident_epoch)


def test_a_streamed_epoch_resumes_a_resident_one_mid_epoch(npy_dir, resident_epoch):
  """A resumed run starts at a chunk boundary; the stream then reads that chunk first."""
  images = data.read_path(npy_dir, "npy").train.images
  config, mesh = _config(), parallel.make_mesh()
  step, state, settings = _setup(config, images.shape[1:], mesh)
  common = dict(batch_size=64, chunks_per_epoch=5, mesh=mesh)
  resident = epoch.Runner(step, epoch.place_training_set(np.asarray(images), mesh),
                          len(images), **common)
  streamed = epoch.StreamedRunner(step, images, len(images), **common)
  shuffle_keys, step_keys = _epoch_keys(1, False)
  batches = resident.batches(shuffle_keys)
  for start in (0, 2):
    state, _ = resident.run_chunk(state, batches, step_keys, settings, start)
  stream = streamed.batches(shuffle_keys)
  for start in (4, 6, 8):
    state, _ = streamed.run_chunk(state, stream, step_keys, settings, start)
  streamed.close()
  _assert_identical(parallel.to_host(state.params), resident_epoch)


@pytest.mark.slow
def test_independent_orders_match_the_resident_path(npy_dir):
  images = data.read_path(npy_dir, "npy").train.images
  resident, _ = _train("resident", images, num_models=2, independent=True)
  streamed, _ = _train("streamed", images, num_models=2, independent=True)
  _assert_identical(streamed, resident)


@pytest.mark.parametrize("chunks, budget_steps, expected", [(2, 5, 5), (2, 4, 1), (1, 2, 2),
                                                           (1, 0, 1)])
def test_the_budgeted_chunk_divides_the_resident_one(chunks, budget_steps, expected):
  """So every chunk boundary of one runner is one of the other's (a resume may switch)."""
  images, mesh = _images(), parallel.make_mesh()
  step, _, _ = _setup(_config(), images.shape[1:], mesh)
  runner = epoch.StreamedRunner(step, images, len(images), batch_size=64,
                                    chunks_per_epoch=chunks, mesh=mesh,
                                    max_chunk_bytes=budget_steps * 64 * 28 * 28)
  runner.close()
  resident = epoch.chunk_size(10, chunks)
  assert runner.chunk == expected and resident % runner.chunk == 0


def test_an_in_memory_array_streams_too(resident_epoch):
  streamed, runner = _train("streamed", _images())
  assert runner.reader.path is None
  _assert_identical(streamed, resident_epoch)


_FOUR_DEVICES = """
import sys, numpy as np, jax
sys.path.insert(0, {tests!r})
import test_streaming as t
from vae_jax import data
from vae_jax import evaluation, parallel, streaming
images = data.read_path({folder!r}, "npy").train.images
params, _ = t._train("streamed", images)
test, mesh = data.read_path({folder!r}, "npy").test.images, parallel.make_mesh()
placed, streamed = evaluation.Chunks.place(np.asarray(test), 16, mesh), streaming.StreamedChunks(
    test, 16, mesh)
for c in range(len(placed)):  # The test chunks, streamed: the same rows on the same devices.
  got, want = streamed.chunk_input(c), placed.images[c]
  assert got.sharding.is_equivalent_to(want.sharding, 4), (got.sharding, want.sharding)
  np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
streamed.close()
np.savez({out!r}, *[np.asarray(x) for x in jax.tree.leaves(params)], devices=jax.device_count())
"""


@pytest.mark.slow
def test_four_devices_give_the_parameters_of_one(npy_dir, resident_epoch, tmp_path):
  one = resident_epoch
  out = tmp_path / "four.npz"
  script = _FOUR_DEVICES.format(tests=str(REPO / "tests"), folder=str(npy_dir), out=str(out))
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
             PYTHONPATH=str(REPO))
  done = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True,
                        text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-3000:]
  four = np.load(out)
  assert int(four["devices"]) == 4
  for i, y in enumerate(jax.tree.leaves(one)):
    x = four[f"arr_{i}"].astype(np.float64)
    assert np.linalg.norm(x - y) / np.linalg.norm(y) < RELATIVE_L2_TOLERANCE


_TWO_PROCESSES = """
import sys, numpy as np, jax
sys.path.insert(0, {tests!r})
from vae_jax import parallel, streaming
parallel.initialize_distributed("localhost:{port}", 2, {process})
import test_streaming as t
from vae_jax import data
read, rows = streaming.Reader.read, []
def counted(self, indices):
  rows.append(np.size(indices))
  return read(self, indices)
streaming.Reader.read = counted
images = data.read_path({folder!r}, "npy").train.images
params, _ = t._train("streamed", images)
np.savez({out!r}, *[np.asarray(x) for x in jax.tree.leaves(params)], rows=sum(rows),
         devices=jax.device_count())
"""


@pytest.mark.slow
def test_two_processes_read_their_halves_and_give_the_parameters_of_one(npy_dir, resident_epoch,
                                                                       tmp_path):
  with socket.socket() as s:  # A free port for the coordinator.
    s.bind(("localhost", 0))
    port = s.getsockname()[1]
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2",
             PYTHONPATH=str(REPO))
  processes = [subprocess.Popen(
      [sys.executable, "-c", _TWO_PROCESSES.format(
          tests=str(REPO / "tests"), port=port, process=i, folder=str(npy_dir),
          out=str(tmp_path / f"{i}.npz"))],
      cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
      for i in range(2)]
  try:
    for p in processes:
      _, err = p.communicate(timeout=300)
      assert p.returncode == 0, err[-3000:]
  finally:
    for p in processes:  # One that failed may leave the other waiting in a collective.
      if p.poll() is None:
        p.kill()
        p.communicate()
  for i in range(2):
    result = np.load(tmp_path / f"{i}.npz")
    assert int(result["devices"]) == 4
    assert int(result["rows"]) == NUM_IMAGES // 2  # Each process read its devices' half.
    for j, y in enumerate(jax.tree.leaves(resident_epoch)):
      x = result[f"arr_{j}"].astype(np.float64)
      assert np.linalg.norm(x - y) / np.linalg.norm(y) < RELATIVE_L2_TOLERANCE


# ----------------------------------------------------------------------------
# Faults and placement.


def _copy(npy_dir, tmp_path):
  folder = tmp_path / "copy"
  folder.mkdir()
  for name in ("train.npy", "test.npy"):
    (folder / name).write_bytes((npy_dir / name).read_bytes())
  return folder


def _stream_one_chunk(images):
  config, mesh = _config(), parallel.make_mesh()
  step, state, settings = _setup(config, images.shape[1:], mesh)
  runner = epoch.StreamedRunner(step, images, len(images), batch_size=64,
                                    chunks_per_epoch=10, mesh=mesh)
  shuffle_keys, step_keys = _epoch_keys(1, False)
  stream = runner.batches(shuffle_keys)
  state, _ = runner.run_chunk(state, stream, step_keys, settings, 0)  # Prefetches step 1.
  return runner, stream, state, step_keys, settings


def test_a_file_truncated_under_the_reader_is_one_usage_error(npy_dir, tmp_path):
  folder = _copy(npy_dir, tmp_path)
  images = data.read_path(folder, "npy").train.images
  runner, stream, state, step_keys, settings = _stream_one_chunk(images)
  stream.close()  # The prefetched chunk was read before the truncation.
  os.truncate(folder / "train.npy", 1000)
  with pytest.raises(UsageError, match="was truncated while training read it") as e:
    runner.run_chunk(state, stream, step_keys, settings, 1)
  assert "\n" not in str(e.value)
  runner.close()


def test_a_file_removed_under_the_reader_is_still_read(npy_dir, tmp_path):
  folder = _copy(npy_dir, tmp_path)
  images = data.read_path(folder, "npy").train.images
  runner, stream, state, step_keys, settings = _stream_one_chunk(images)
  os.remove(folder / "train.npy")
  for start in range(1, 10):
    state, metrics = runner.run_chunk(state, stream, step_keys, settings, start)
  assert np.isfinite(parallel.to_host(metrics)["loss"]).all()
  runner.close()


def test_placement_auto_keeps_what_fits_and_streams_what_does_not(npy_dir, monkeypatch):
  dataset = data.read_path(npy_dir, "npy")
  assert streaming.choose_placement("auto", dataset)[0] == "device"
  assert streaming.choose_placement("stream", dataset)[0] == "stream"
  monkeypatch.setattr(data, "_host_available_bytes", lambda: dataset.train.images.nbytes)
  placement, why = streaming.choose_placement("auto", dataset, devices=jax.devices("cpu"))
  assert placement == "stream" and why.endswith("do not fit the devices' free memory")
  data.check_fits(dataset, jax.devices("cpu"), train_copies=0)  # Streamed: the test set only.
  with pytest.raises(UsageError, match="data_placement must be one of"):
    streaming.choose_placement("disk", dataset)


# ----------------------------------------------------------------------------
# Evaluation: the test set streamed a chunk at a time.


@pytest.mark.slow
def test_streamed_evaluation_gives_the_resident_statistics_bit_for_bit(npy_dir):
  size = 16  # 50 test images: 4 chunks, the last one padded.
  test = data.read_path(npy_dir, "npy").test.images
  step, state, _ = _initial(1, tuple(test.shape[1:]))  # The model the other tests built.
  keys, mesh = jax.random.key(3)[None], parallel.make_mesh()
  resident = evaluation.Chunks.place(np.asarray(test), size, mesh)
  streamed = streaming.StreamedChunks(test, size, mesh)
  assert len(streamed) == len(resident) and streamed.num_examples == 50
  variables = {"params": state.params}
  for statistic in (functools.partial(evaluation.test_statistics, step.family, variables, keys),
                    functools.partial(evaluation.bound_statistics, step.family, variables,
                                      keys, k=4, sample_chunk=2)):
    want, got = evaluation.over_chunks(statistic, resident), evaluation.over_chunks(statistic, streamed)
    assert want.keys() == got.keys()
    for name in want:
      np.testing.assert_array_equal(got[name], want[name])
  streamed.close()


def test_a_test_file_removed_under_a_streamed_evaluation_is_still_read(npy_dir, tmp_path):
  folder = _copy(npy_dir, tmp_path)
  test = data.read_path(folder, "npy").test.images
  step, state, _ = _initial(1, tuple(test.shape[1:]))
  streamed = streaming.StreamedChunks(test, 16, parallel.make_mesh())
  os.remove(folder / "test.npy")
  stats = evaluation.test_metrics(step.family, {"params": state.params},
                                  jax.random.key(0)[None], streamed)
  assert np.isfinite(stats[0]["loss"])
  streamed.close()


def test_binarised_evaluation_inputs_are_the_same_made_on_the_host(npy_dir, tiny_config):
  test = data.read_path(npy_dir, "npy").test.images
  tiny_config.binarize = "dynamic"
  on_host = evaluation.evaluation_inputs(test, binarize="dynamic", seed=0, on_host=True)
  np.testing.assert_array_equal(on_host, evaluation.evaluation_inputs(test, binarize="dynamic",
                                                                      seed=0))
  assert set(np.unique(on_host)) == {0, 255}


# ----------------------------------------------------------------------------
# Through train_and_evaluate: --config.data_placement.


def _placed_run(tiny_config, workdir, placement, **options):
  from vae_jax import train  # pylint: disable=g-import-not-at-top
  tiny_config.update(data_placement=placement, **options)
  return train.train_and_evaluate(tiny_config, workdir, verbose=False)


@pytest.mark.slow
def test_a_streamed_run_gives_the_resident_runs_test_losses_bit_for_bit(tiny_config, tmp_path):
  from vae_jax import reporting  # pylint: disable=g-import-not-at-top
  tiny_config.update(num_epochs=1, eval_iwae_every=1, eval_iwae_k=4)
  _placed_run(tiny_config.copy_and_resolve_references(), tmp_path / "device", "device")
  built = []
  with pytest.MonkeyPatch.context() as patch:  # The test set streams too: never all placed.
    patch.setattr(streaming.StreamedChunks, "__init__", _recorded(built))
    patch.setattr(evaluation.Chunks, "place", _refused)
    _placed_run(tiny_config, tmp_path / "stream", "stream")
  assert len(built) == 2  # The per-epoch test loss's chunks and the IWAE bound's.
  untimed = lambda w: [{k: v for k, v in r.items() if "seconds" not in k and "per_second" not in k}
                       for r in reporting.read_metrics(w)]
  assert untimed(tmp_path / "stream") == untimed(tmp_path / "device")
  _assert_identical(vae_jax.load(tmp_path / "stream").params,
                    vae_jax.load(tmp_path / "device").params)


def _recorded(built):
  init = streaming.StreamedChunks.__init__

  def recording(self, *args, **kwargs):
    built.append(self)
    init(self, *args, **kwargs)
  return recording


def _refused(*args, **kwargs):
  raise AssertionError("a streamed run placed the whole test set on the devices")


@pytest.mark.slow
def test_a_streamed_run_stopped_mid_epoch_resumes_bit_for_bit(tiny_config, tmp_path,
                                                              monkeypatch):
  from conftest import StopFlag  # pylint: disable=g-import-not-at-top
  from vae_jax import train  # pylint: disable=g-import-not-at-top
  tiny_config.data_placement = "stream"
  train.train_and_evaluate(tiny_config, tmp_path / "whole", verbose=False)
  flag, run_chunk, calls = StopFlag(), epoch.StreamedRunner.run_chunk, []

  def counted(self, *args):
    calls.append(1)
    flag.set = len(calls) == 6  # 125 steps in chunks of 25: one chunk into epoch 2.
    return run_chunk(self, *args)

  with monkeypatch.context() as patch:
    patch.setattr(epoch.StreamedRunner, "run_chunk", counted)
    result = train.train_and_evaluate(tiny_config, tmp_path / "cut", verbose=False,
                                      should_stop=flag)
  assert result.stopped and result.state.steps_done == 150
  other = tiny_config.copy_and_resolve_references()
  other.chunks_per_epoch = 1  # One chunk of 125 steps: step 150 is inside it.
  with pytest.raises(UsageError, match="not at a boundary of this run's chunks of 125 steps"):
    train.train_and_evaluate(other, tmp_path / "cut", verbose=False)
  train.train_and_evaluate(tiny_config, tmp_path / "cut", verbose=False)
  _assert_identical(vae_jax.load(tmp_path / "cut").params,
                    vae_jax.load(tmp_path / "whole").params)


@pytest.mark.slow
def test_a_run_whose_npy_files_are_removed_under_it_ends_as_usual(npy_dir, tiny_config, tmp_path,
                                                                   monkeypatch):
  """The memmaps and descriptors opened at start keep the removed files' data."""
  from vae_jax import reporting  # pylint: disable=g-import-not-at-top
  from vae_jax import train  # pylint: disable=g-import-not-at-top
  folder = _copy(npy_dir, tmp_path)
  tiny_config.update(data_dir=str(folder), dataset="npy", num_epochs=1, data_placement="stream")
  run_chunk = epoch.StreamedRunner.run_chunk

  def removing(self, *args):
    for name in ("train.npy", "test.npy"):
      if (folder / name).exists():
        os.remove(folder / name)
    return run_chunk(self, *args)

  monkeypatch.setattr(epoch.StreamedRunner, "run_chunk", removing)
  result = train.train_and_evaluate(tiny_config, tmp_path / "run", verbose=False)
  assert not result.stopped and result.epochs_done == 1 and not (folder / "train.npy").exists()
  assert np.isfinite(reporting.read_metrics(tmp_path / "run")[-1]["test_loss"])


@pytest.mark.slow
def test_auto_streams_what_exceeds_the_budget_and_says_so(tiny_config, tmp_path, capsys):
  from vae_jax import train  # pylint: disable=g-import-not-at-top
  tiny_config.update(num_epochs=1, device_data_budget=0.001)  # 1 MiB: mnist_sample is 12.
  train.train_and_evaluate(tiny_config, tmp_path)
  out = capsys.readouterr().out
  assert "streaming the training and test sets from the host" in out
  assert "exceed device_data_budget=0.001 GiB" in out
  placement, why = streaming.choose_placement("auto", data.read_path(
      data.SAMPLE_DIR, "mnist_sample"), budget_gib=1.0)
  assert placement == "device" and "fit device_data_budget=1 GiB" in why
