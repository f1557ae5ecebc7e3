"""Input: a tfds data set prepared in ArrayRecord, read by index (`vae_jax.sources.tfds_records`).

A tiny builder is prepared once with `file_format="array_record"` (preparing
needs TensorFlow, in the test extra; reading does not). Image i is filled with
the value i, its label is i % 3, so that the records' order (tfds shuffles
them) can be checked against the labels.
"""
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from conftest import REPO
from vae_jax import data
from vae_jax import streaming
from vae_jax.errors import UsageError
from vae_jax.sources import tfds_records

tfds = pytest.importorskip("tensorflow_datasets")
pytest.importorskip("tensorflow")
pytest.importorskip("array_record")

NAME = "vae_jax_tiny_records"
NUM_TRAIN, NUM_TEST = 192, 40


class VaeJaxTinyRecords(tfds.core.GeneratorBasedBuilder):
  """28 x 28 grey images (the tiny config's shape), image i all i (mod 256), label i % 3."""

  VERSION = tfds.core.Version("1.0.0")

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
        "image": tfds.features.Image(shape=(28, 28, 1)),
        "label": tfds.features.ClassLabel(names=["a", "b", "c"])}))

  def _split_generators(self, dl_manager):
    del dl_manager
    return {"train": self._generate_examples(0, NUM_TRAIN),
            "test": self._generate_examples(NUM_TRAIN, NUM_TRAIN + NUM_TEST)}

  def _generate_examples(self, first, end):
    for i in range(first, end):
      yield i, {"image": np.full((28, 28, 1), i % 256, np.uint8), "label": i % 3}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  folder = tmp_path_factory.mktemp("tfds")
  VaeJaxTinyRecords(data_dir=str(folder), file_format="array_record").download_and_prepare()
  return folder


def _config(tfds_dir, **overrides):
  from vae_jax.configs import tiny  # pylint: disable=g-import-not-at-top
  config = tiny.get_config()
  # The tiny model, whose initialisation other tests of a session have compiled already.
  config.update({"dataset": f"tfds:{NAME}", "tfds_data_dir": str(tfds_dir), "num_epochs": 1,
                 "eval_batch_size": 40, **overrides})
  return config


def _check_records(images, labels, first):
  """Every image is one record: value v = index, its label v % 3, all distinct."""
  values = np.asarray(images)[:, 0, 0, 0].astype(int)
  assert (np.asarray(images) == values[:, None, None, None]).all()
  assert (values % 3 == labels).all() and len(set(values)) == len(values)
  assert values.min() >= first


def test_a_prepared_array_record_set_is_opened_lazily(data_dir):
  ds = data.load(_config(data_dir))
  assert isinstance(ds.train.images, tfds_records.RecordImages)
  assert ds.train.images.shape == (NUM_TRAIN, 28, 28, 1) and ds.image_shape == (28, 28, 1)
  assert ds.train.images.nbytes == NUM_TRAIN * 784 and ds.class_names == ("a", "b", "c")
  _check_records(ds.train.images, ds.train.labels, 0)
  _check_records(ds.test.images, ds.test.labels, NUM_TRAIN)
  every = np.asarray(ds.train.images)
  by_tfds = tfds.data_source(NAME, split="train", data_dir=str(data_dir), download=False)
  np.testing.assert_array_equal(every, np.stack([r["image"] for r in by_tfds]))
  np.testing.assert_array_equal(ds.train.images[[5, 1, 5]], every[[5, 1, 5]])
  np.testing.assert_array_equal(ds.train.images[3:9], every[3:9])
  np.testing.assert_array_equal(ds.train.images[-1], every[-1])
  assert data.load(_config(data_dir, image_size=4)).train.images[:2].shape == (2, 4, 4, 1)


def test_without_a_test_split_one_is_split_off_without_decoding(data_dir, monkeypatch):
  monkeypatch.setattr(tfds_records, "_split_names", lambda builder: {"train": "train"})
  ds = data.load(_config(data_dir, test_fraction=0.25))
  assert isinstance(ds.test.images, tfds_records.RecordImages) and len(ds.test.images) == 48
  is_test = data.test_mask(NUM_TRAIN, 0.25)
  every = np.asarray(tfds_records.open_prepared(NAME, str(data_dir))[0]["train"][0])
  np.testing.assert_array_equal(np.asarray(ds.test.images), every[is_test])
  np.testing.assert_array_equal(np.asarray(ds.train.images), every[~is_test])


def test_the_streaming_reader_reads_records_in_any_order(data_dir):
  images = data.load(_config(data_dir)).train.images
  reader = streaming.Reader(images, threads=2)
  rows = np.random.default_rng(0).permutation(NUM_TRAIN)[:150].reshape(3, 50)
  np.testing.assert_array_equal(reader.read(rows), np.asarray(images)[rows])
  reader.close()


@pytest.mark.slow
def test_reading_needs_no_tensorflow(data_dir):
  """In a fresh process, where the builder's code is unknown: tfds reads the files alone."""
  code = ("import sys; from vae_jax import data; from vae_jax.configs import tiny; "
          "c = tiny.get_config(); "
          f"c.update(dataset='tfds:{NAME}', tfds_data_dir=sys.argv[1]); "
          "ds = data.load(c); x = ds.train.images[:4]; "
          "print(type(ds.train.images).__name__, x.shape, 'tensorflow' in sys.modules)")
  result = subprocess.run([sys.executable, "-c", code, str(data_dir)], cwd=REPO,
                          capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, PYTHONPATH=str(REPO)))
  assert result.returncode == 0, result.stderr[-2000:]
  assert result.stdout.split("\n")[-2] == "RecordImages (4, 28, 28, 1) False"


@pytest.mark.slow
def test_unreadable_records_are_one_line(data_dir, tmp_path):
  copy = tmp_path / "copy"
  subprocess.run(["cp", "-r", str(data_dir), str(copy)], check=True)
  ds = data.load(_config(copy))
  for path in (copy / NAME / "1.0.0").glob("*train.array_record*"):
    path.write_bytes(b"garbage")
  with pytest.raises(UsageError, match=f"tfds:{NAME} split train: cannot read its records") as e:
    ds.train.images.read(np.arange(8))
  assert "\n" not in str(e.value)


def test_records_stream_the_batches_and_test_chunks_of_the_resident_path(data_dir):
  """What a streamed run reads from the records is what a resident run places (no model
  is needed to compare them: the runners' batches and the chunks come before the step)."""
  from vae_jax import epoch  # pylint: disable=g-import-not-at-top
  from vae_jax import evaluation  # pylint: disable=g-import-not-at-top
  from vae_jax import parallel  # pylint: disable=g-import-not-at-top
  ds, mesh = data.load(_config(data_dir)), parallel.make_mesh()
  keys = jax.random.key(5)[None]
  options = dict(batch_size=64, chunks_per_epoch=3, mesh=mesh)
  resident = epoch.Runner(None, epoch.place_training_set(ds.train.images, mesh),
                          NUM_TRAIN, **options)
  streamed = epoch.StreamedRunner(None, ds.train.images, NUM_TRAIN, **options)
  batches = streamed.batches(keys)
  got = np.concatenate([np.asarray(batches.take(s)) for s in range(0, 3, streamed.chunk)])
  np.testing.assert_array_equal(got, np.asarray(resident.batches(keys)))
  streamed.close()
  placed = evaluation.Chunks.place(np.asarray(ds.test.images), 16, mesh)
  chunks = streaming.StreamedChunks(ds.test.images, 16, mesh)
  for c in range(len(placed)):  # 40 images: 3 chunks, the last one padded.
    np.testing.assert_array_equal(np.asarray(chunks.chunk_input(c)), np.asarray(placed.images[c]))
  chunks.close()
