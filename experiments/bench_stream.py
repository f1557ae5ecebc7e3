"""Benchmarks of the streamed epoch (`vae_jax.streaming`).

    python experiments/bench_stream.py --mode=reader   # images/s of 64x64x3 from an .npy memmap
    python experiments/bench_stream.py --mode=epoch    # streamed vs resident seed epoch
    python experiments/bench_stream.py --mode=memory   # a 3 GB set streamed: peak RssAnon
    python experiments/bench_stream.py --mode=grain    # grain.MapDataset on the same file
    python experiments/bench_stream.py --mode=records  # a tfds set in ArrayRecord, by index

reader: `streaming.Reader` (pread, threads) and plain memmap fancy indexing
(sorted indices) reading random batch-sized sets of rows of a 64x64x3 uint8
`.npy` file in the page cache. Targets: >= 20,000 images/s on 2 cores.

epoch: the seed model (784-400-20 MLP, batch 128) for one Fashion-MNIST epoch
through `epoch.Runner` and `streaming.StreamedRunner` (from an `.npy` copy),
in interleaved rounds; the median of each and their ratio. Target: streamed
>= 90% of resident speed.

memory: writes N x 64 x 64 x 3 random uint8 images (default 250,000, 3 GB) to
a temporary `.npy`, trains one streamed epoch of a small MLP (hidden 16) over
them and reports this process's peak anonymous RSS (`/proc/self/status`
RssAnon, sampled on a thread, and VmHWM). Target: < 1.5 GB.

records: prepares (once, in --tfds_data_dir; needs TensorFlow) a tfds data set
`vae_jax_bench_records` of mnist_sample's 10,000 digits as 64x64x3 PNG images
(resized, in three channels; 8,004 train), opens it as `data.load` does
(`vae_jax.sources.tfds_records`: seconds to open, which reads the labels) and
reads random batches of 128 through `streaming.Reader`: images/s and MB/s.

folder: loads --folder (an image folder) as `data.read_path` does, through the
cache (--folder_cache=always: a build the first time, an open after) or
decoded afresh (never); seconds and peak RssAnon. Run it in a fresh process
for each figure; the cache goes to $VAE_JAX_CACHE.
"""
import os
import statistics
import tempfile
import threading
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from vae_jax import data
from vae_jax import epoch
from vae_jax import schema
from vae_jax import experiment
from vae_jax import parallel
from vae_jax import streaming
from vae_jax import sweep
from vae_jax import train_state
from vae_jax.configs import default
from vae_jax.sources import npy

_MODE = flags.DEFINE_enum("mode", "reader",
                         ["reader", "epoch", "memory", "grain", "folder", "records"],
                         "What to run.")
_TFDS_DATA_DIR = flags.DEFINE_string("tfds_data_dir", "/tmp/vae_jax_bench_tfds",
                                     "--mode=records: where the tfds data set is prepared.")
_FOLDER = flags.DEFINE_string("folder", None, "An image folder, for --mode=folder.")
_FOLDER_CACHE = flags.DEFINE_enum("folder_cache", "always", ["always", "never"],
                                  "--mode=folder: through the cache or decoded afresh.")
_DATA_DIR = flags.DEFINE_string("data_dir", "/usr/share/datasets/fashion-mnist",
                                "Fashion-MNIST IDX files, for --mode=epoch.")
_ROUNDS = flags.DEFINE_integer("rounds", 3, "Interleaved rounds (epoch) or repeats (reader).")
_IMAGES = flags.DEFINE_integer("images", 250_000, "Images of the memory mode's set.")
_THREADS = flags.DEFINE_integer("threads", streaming.READ_THREADS, "Reading threads.")
_SCRATCH = flags.DEFINE_string("scratch", None, "Where temporary .npy files go (default: /tmp).")


def _write_npy(folder: str, images_or_shape, seed: int = 0) -> str:
  """An .npy file of the given images, or of random ones of shape `images_or_shape`."""
  path = os.path.join(folder, "train.npy")
  if isinstance(images_or_shape, np.ndarray):
    np.save(path, images_or_shape)
    return path
  shape, rng = images_or_shape, np.random.default_rng(seed)
  out = np.lib.format.open_memmap(path, "w+", np.uint8, shape)
  for start in range(0, shape[0], 10_000):
    out[start:start + 10_000] = rng.integers(0, 256, (min(10_000, shape[0] - start),
                                                      *shape[1:]), np.uint8)
  out.flush()
  del out
  return path


def _page_in(path: str) -> None:
  """Reads the file once so that every mode measures reads from the page cache."""
  with open(path, "rb") as f:
    while f.read(64 * 2**20):
      pass


def bench_reader(folder: str) -> None:
  shape, batch = (100_000, 64, 64, 3), 128
  path = _write_npy(folder, shape)
  _page_in(path)
  images = np.load(path, mmap_mode="r")
  rng = np.random.default_rng(1)
  batches = [rng.permutation(shape[0])[:batch * 100].reshape(100, batch)
             for _ in range(_ROUNDS.value)]
  row_mb = np.prod(shape[1:]) / 2**20
  for threads in sorted({1, 2, _THREADS.value}):
    reader = streaming.Reader(images, threads)
    _report(f"Reader (pread), {threads} thread(s), per batch of {batch}",
            lambda b: [reader.read(rows) for rows in b], batches, row_mb)
    _report(f"Reader (pread), {threads} thread(s), per chunk of 100 batches",
            lambda b: reader.read(b), batches, row_mb)
    reader.close()
  _report(f"memmap fancy indexing, sorted, per batch of {batch}",
          lambda b: [images[np.sort(rows)] for rows in b], batches, row_mb)


def _report(what: str, fn, batches, row_mb: float) -> None:
  fn(batches[0])  # Warm-up.
  rates = []
  for b in batches:
    start = time.perf_counter()
    fn(b)
    rates.append(b.size / (time.perf_counter() - start))
  rate = statistics.median(rates)
  print(f"{what}: {rate:,.0f} images/s, {rate * row_mb:,.0f} MB/s (median of {len(rates)}; "
        f"all {', '.join(f'{r:,.0f}' for r in rates)})", flush=True)


def _setup(config, image_shape, mesh):
  """The step, a fresh state and the per-model settings of `config`'s VAE, replicated."""
  config = ml_collections.ConfigDict({**config.to_dict(), "image_shape": tuple(image_shape)})
  family = schema.build_family(config, sweep.model_settings(config))
  step = experiment.step_of(config, family, steps_per_epoch=10_000 // config.num_epochs)
  hyper = experiment.hyper_of(config, family)
  state = jax.device_put(train_state.create(step, jnp.stack([jax.random.key(0)]), hyper),
                         parallel.replicated(mesh))
  return step, state, jax.device_put(hyper, parallel.replicated(mesh))


def _epoch_runner(runner, state, settings):
  """A function that trains one epoch as the trainer does (one sync per chunk)."""
  keys = jax.random.split(jax.random.key(1))
  shuffle_keys, step_keys = keys[:1], keys[1:]
  runner.compile(state, shuffle_keys, step_keys, settings)
  holder = {"state": state}

  def one_epoch():
    holder["state"] = epoch.run_epoch(runner, holder["state"], shuffle_keys, step_keys, settings)
  return one_epoch


def bench_epoch(folder: str) -> None:
  images = data.load_idx_dir(_DATA_DIR.value).train.images
  npy.write(folder, {"train": (images, np.full(len(images), -1)),
                     "test": (images[:10], np.full(10, -1))})
  memmap = npy.open_images(os.path.join(folder, "train.npy"))
  config, mesh = default.get_config(), parallel.make_mesh()
  runs = {}
  for kind in ("resident", "streamed"):
    step, state, settings = _setup(config, images.shape[1:], mesh)
    common = dict(batch_size=config.batch_size, chunks_per_epoch=config.chunks_per_epoch,
                  mesh=mesh)
    runner = (epoch.Runner(step, epoch.place_training_set(images, mesh),
                           len(images), **common) if kind == "resident" else
              epoch.StreamedRunner(step, memmap, len(images), **common))
    runs[kind] = _epoch_runner(runner, state, settings)
    runs[kind]()  # Warm-up.
  times = {kind: [] for kind in runs}
  for _ in range(_ROUNDS.value):
    for kind, fn in runs.items():
      start = time.perf_counter()
      fn()
      times[kind].append(time.perf_counter() - start)
  med = {kind: statistics.median(t) for kind, t in times.items()}
  for kind, t in times.items():
    print(f"{kind}: median {med[kind]:.2f} s per epoch ({', '.join(f'{x:.2f}' for x in t)})")
  print(f"streamed speed / resident speed: {med['resident'] / med['streamed']:.1%}", flush=True)


class _PeakRss:
  """Samples /proc/self/status RssAnon on a thread; `peak` in bytes."""

  def __init__(self):
    self.peak, self._stop = 0, threading.Event()
    self._thread = threading.Thread(target=self._run, daemon=True)

  def __enter__(self):
    self._thread.start()
    return self

  def __exit__(self, *exc):
    self._stop.set()
    self._thread.join()

  def _run(self):
    while not self._stop.is_set():
      self.peak = max(self.peak, _status("RssAnon"))
      time.sleep(0.01)


def _status(field: str) -> int:
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith(field + ":"):
        return int(line.split()[1]) * 1024
  return 0


def bench_memory(folder: str) -> None:
  shape = (_IMAGES.value, 64, 64, 3)
  start = time.perf_counter()
  path = _write_npy(folder, shape)
  print(f"wrote {np.prod(shape) / 2**30:.2f} GiB to {path} in {time.perf_counter() - start:.0f} s"
        f"; RssAnon now {_status('RssAnon') / 2**20:.0f} MiB", flush=True)
  config, mesh = default.get_config(), parallel.make_mesh()
  config.hidden, config.latents = 16, 4
  images = npy.open_images(path)
  step, state, settings = _setup(config, shape[1:], mesh)
  runner = epoch.StreamedRunner(step, images, len(images),
                                    batch_size=config.batch_size,
                                    chunks_per_epoch=config.chunks_per_epoch, mesh=mesh)
  one_epoch = _epoch_runner(runner, state, settings)
  with _PeakRss() as rss:
    start = time.perf_counter()
    one_epoch()
    seconds = time.perf_counter() - start
  print(f"one streamed epoch of {len(images):,} images of 64x64x3 ({runner.steps_per_epoch} steps "
        f"in chunks of {runner.chunk}) in {seconds:.1f} s ({len(images) / seconds:,.0f} images/s); "
        f"peak RssAnon {rss.peak / 2**20:,.0f} MiB, VmHWM {_status('VmHWM') / 2**20:,.0f} MiB",
        flush=True)
  runner.close()


def bench_grain(folder: str) -> None:
  """grain.MapDataset over the memmap: per-record access, batched by grain."""
  import grain  # pylint: disable=g-import-not-at-top
  shape, batch = (100_000, 64, 64, 3), 128
  path = _write_npy(folder, shape)
  _page_in(path)
  images = np.load(path, mmap_mode="r")
  dataset = grain.MapDataset.source(images).shuffle(seed=0).batch(batch)
  steps = 100
  for _ in range(2):
    start = time.perf_counter()
    for i in range(steps):
      dataset[i]
    rate = steps * batch / (time.perf_counter() - start)
    print(f"grain.MapDataset.source(memmap).shuffle().batch({batch}): {rate:,.0f} images/s",
          flush=True)


def bench_folder(folder: str) -> None:
  del folder
  with _PeakRss() as rss:
    start = time.perf_counter()
    dataset = data.read_path(_FOLDER.value, "folder", folder_cache=_FOLDER_CACHE.value)
    seconds = time.perf_counter() - start
  print(f"read_path(folder_cache={_FOLDER_CACHE.value}): {len(dataset.train.images):,} + "
        f"{len(dataset.test.images):,} images of {dataset.image_shape} in {seconds:.2f} s; "
        f"peak RssAnon {rss.peak / 2**20:,.0f} MiB ({type(dataset.train.images).__name__})",
        flush=True)


RECORDS_NAME = "vae_jax_bench_records"


def _prepare_records(data_dir: str) -> None:
  """Writes the records mode's data set once (TensorFlow encodes the PNGs)."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from vae_jax.sources import pixels  # pylint: disable=g-import-not-at-top
  sample = data.load_idx_dir(data.SAMPLE_DIR)
  digits = pixels.resize(np.concatenate([sample.train.images, sample.test.images]), 64)
  colour = np.concatenate([digits, digits[:, ::-1], 255 - digits], axis=-1)

  class VaeJaxBenchRecords(tfds.core.GeneratorBasedBuilder):
    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
      return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
          "image": tfds.features.Image(shape=(64, 64, 3)),
          "label": tfds.features.ClassLabel(num_classes=10)}))

    def _split_generators(self, dl_manager):
      del dl_manager
      return {"train": self._generate_examples(0, len(sample.train.images)),
              "test": self._generate_examples(len(sample.train.images), len(colour))}

    def _generate_examples(self, first, end):
      for i in range(first, end):
        yield i, {"image": colour[i], "label": i % 10}

  VaeJaxBenchRecords(data_dir=data_dir, file_format="array_record").download_and_prepare()


def bench_records(folder: str) -> None:
  del folder
  from vae_jax.sources import tfds_records  # pylint: disable=g-import-not-at-top
  if tfds_records.open_prepared(RECORDS_NAME, _TFDS_DATA_DIR.value) is None:
    _prepare_records(_TFDS_DATA_DIR.value)
  start = time.perf_counter()
  images = tfds_records.open_prepared(RECORDS_NAME, _TFDS_DATA_DIR.value)[0]["train"][0]
  print(f"opened {len(images):,} records (their labels read) in "
        f"{time.perf_counter() - start:.2f} s", flush=True)
  rng = np.random.default_rng(1)
  batches = [rng.permutation(len(images))[:128 * 10].reshape(10, 128)
             for _ in range(_ROUNDS.value)]
  row_mb = np.prod(images.shape[1:]) / 2**20
  for threads in sorted({1, 2, _THREADS.value}):
    reader = streaming.Reader(images, threads)
    _report(f"Reader over ArrayRecord, {threads} thread(s), per chunk of 10 batches of 128",
            lambda b: reader.read(b), batches, row_mb)
    reader.close()


def main(argv):
  del argv
  print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; jax {jax.__version__} "
        f"on {jax.devices()[0].platform}", flush=True)
  with tempfile.TemporaryDirectory(dir=_SCRATCH.value) as folder:
    {"reader": bench_reader, "epoch": bench_epoch, "memory": bench_memory,
     "grain": bench_grain, "folder": bench_folder, "records": bench_records}[_MODE.value](folder)


if __name__ == "__main__":
  app.run(main)
