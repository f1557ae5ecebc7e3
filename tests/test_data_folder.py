"""Input: folders of PNG/JPEG files, written in tmp_path from mnist_sample's real digits."""
import importlib.util
import io
import pathlib
import subprocess
import sys

import numpy as np
from PIL import Image
from PIL import ImageOps
import pytest

from vae_jax import data
from vae_jax.errors import UsageError
from vae_jax.sources import image_folder

REPO = pathlib.Path(__file__).resolve().parents[1]
NUM_TRAIN, NUM_TEST = 120, 40


@pytest.fixture(scope="module")
def digits():
  """(train, test) Splits: the first real digits of mnist_sample, (N, 28, 28, 1)."""
  ds = data.load_idx_dir(data.SAMPLE_DIR)
  return (data.Split(ds.train.images[:NUM_TRAIN], ds.train.labels[:NUM_TRAIN]),
          data.Split(ds.test.images[:NUM_TEST], ds.test.labels[:NUM_TEST]))


def _config(folder, **overrides):
  from vae_jax.configs import default  # pylint: disable=g-import-not-at-top
  config = default.get_config()
  config.update(dataset="folder", data_dir=str(folder), **overrides)
  return config


def _colour(images: np.ndarray) -> np.ndarray:
  """(N, H, W, 1) -> (N, H, W, 3): strokes in a different colour per image."""
  colours = np.random.default_rng(0).integers(64, 256, (len(images), 1, 1, 3))
  return (images.astype(np.int64) * colours // 255).astype(np.uint8)


def _write(folder: pathlib.Path, split: data.Split, classes: bool = True, suffix: str = ".png"):
  """Writes split as folder/LABEL/INDEX.png (or folder/INDEX.png); returns the paths."""
  paths = []
  for i, (image, label) in enumerate(zip(split.images, split.labels)):
    path = folder / str(label) / f"{i:05d}{suffix}" if classes else folder / f"{i:05d}{suffix}"
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(path)
    paths.append(path)
  return paths


def _by_class(split: data.Split) -> data.Split:
  """The split in the loader's order for class folders: by label, then by file name."""
  order = np.argsort(split.labels, kind="stable")
  return data.Split(split.images[order], split.labels[order])


@pytest.mark.parametrize("colour", [False, True])
def test_train_and_test_class_folders_load_pixel_exact(tmp_path, digits, colour):
  train, test = digits
  if colour:
    train, test = (data.Split(_colour(s.images), s.labels) for s in digits)
  _write(tmp_path / "train", train)
  _write(tmp_path / "test", test)
  ds = data.load(_config(tmp_path))
  assert ds.image_shape == (28, 28, 3 if colour else 1)
  assert ds.class_names == tuple(str(d) for d in range(10))
  for got, want in ((ds.train, train), (ds.test, test)):
    np.testing.assert_array_equal(got.images, _by_class(want).images)
    np.testing.assert_array_equal(got.labels, _by_class(want).labels)


def test_flat_train_and_test_folders_have_no_labels(tmp_path, digits):
  _write(tmp_path / "train", digits[0], classes=False)
  _write(tmp_path / "test", digits[1], classes=False)
  ds = data.load(_config(tmp_path))
  np.testing.assert_array_equal(ds.train.images, digits[0].images)  # File-name order.
  assert (ds.train.labels == -1).all() and (ds.test.labels == -1).all() and ds.class_names is None


@pytest.mark.parametrize("layout", ["train_only", "classes_at_top", "images_at_top"])
def test_without_test_folder_a_seeded_fraction_is_held_out(tmp_path, digits, layout):
  root = tmp_path / "train" if layout == "train_only" else tmp_path
  classes = layout != "images_at_top"
  _write(root, digits[0], classes=classes)
  ds = data.load(_config(tmp_path, test_fraction=0.25))
  assert len(ds.train.images) == 90 and len(ds.test.images) == 30
  # The split is a seeded permutation of the folder order, each part in folder order.
  train, test = data.split_off_test(_by_class(digits[0]) if classes else digits[0], 0.25)
  np.testing.assert_array_equal(ds.train.images, train.images)
  np.testing.assert_array_equal(ds.test.images, test.images)
  np.testing.assert_array_equal(ds.test.labels, test.labels if classes else -1)
  assert not np.array_equal(test.images, digits[0].images[:30])
  # config.seed plays no part: every training seed tests on the same images.
  again = data.load(_config(tmp_path, test_fraction=0.25, seed=7))
  np.testing.assert_array_equal(again.test.images, ds.test.images)
  assert ds.class_names == (tuple(str(d) for d in range(10)) if classes else None)


def _folder_order(paths):
  """Load position -> index into `paths` (sorted class folder, then file name)."""
  keys = [(p.parent.name, p.name) for p in paths]
  return sorted(range(len(paths)), key=lambda i: keys[i])


@pytest.mark.parametrize("odd_first", [True, False])
def test_mixed_modes_and_sizes_follow_the_majority(tmp_path, digits, odd_first):
  train = digits[0]
  paths = _write(tmp_path / "train", train, classes=False)  # Loads in index order.
  # One file in colour, one of another size and aspect ratio: the first two, or two later.
  a, b = (0, 1) if odd_first else (50, 90)
  rgb_image = np.repeat(train.images[a], 3, -1) // np.array([1, 2, 3], np.uint8)
  Image.fromarray(rgb_image).save(paths[a])
  big = Image.fromarray(train.images[b, ..., 0]).resize((40, 56))
  big.save(paths[b])
  images = image_folder.read(tmp_path).splits["train"][0]
  assert images.shape == (NUM_TRAIN, 28, 28, 1)
  np.testing.assert_array_equal(images[a, ..., 0], np.asarray(Image.fromarray(rgb_image).convert("L")))
  want = np.asarray(ImageOps.fit(big, (28, 28), method=Image.Resampling.BICUBIC))
  np.testing.assert_array_equal(images[b, ..., 0], want)
  others = np.setdiff1d(np.arange(NUM_TRAIN), [a, b])
  np.testing.assert_array_equal(images[others], train.images[others])


def test_colour_majority_turns_grey_files_to_colour(tmp_path, digits):
  train = data.Split(_colour(digits[0].images), digits[0].labels)
  paths = _write(tmp_path / "train", train)
  Image.fromarray(digits[0].images[5, ..., 0]).save(paths[5])  # One grey file.
  folder = image_folder.read(tmp_path)
  images = folder.splits["train"][0]
  position = _folder_order(paths).index(5)
  assert images.shape == (NUM_TRAIN, 28, 28, 3)
  np.testing.assert_array_equal(images[position], np.repeat(digits[0].images[5], 3, -1))


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_image_size_crops_and_resizes_every_file(tmp_path, digits, suffix):
  _write(tmp_path / "train", digits[0], suffix=suffix)
  _write(tmp_path / "test", digits[1], suffix=suffix)
  ds = data.load(_config(tmp_path, image_size=12))
  assert ds.train.images.shape == (NUM_TRAIN, 12, 12, 1) and ds.test.images.shape == (NUM_TEST, 12, 12, 1)
  want = _by_class(digits[0]).images[0, ..., 0]
  want = np.asarray(ImageOps.fit(Image.fromarray(want), (12, 12), method=Image.Resampling.BICUBIC))
  error = np.abs(ds.train.images[0, ..., 0].astype(int) - want)
  if suffix == ".png":
    assert error.max() == 0
  else:  # Lossy, and decoded at half scale (JPEG draft mode) before resizing.
    assert error.mean() < 8


def test_palette_and_16_bit_grey_files_load_as_grey(tmp_path, digits):
  image = digits[0].images[0, ..., 0]
  (tmp_path / "train").mkdir()
  Image.fromarray(image).convert("P").save(tmp_path / "train" / "a.png")  # Grey palette.
  Image.fromarray(image.astype(np.uint16) * 257).save(tmp_path / "train" / "b.png")  # 16-bit.
  Image.fromarray(image).save(tmp_path / "train" / "c.jpg", quality=100)
  images = image_folder.read(tmp_path).splits["train"][0]
  assert images.shape == (3, 28, 28, 1)
  np.testing.assert_array_equal(images[0, ..., 0], image)
  np.testing.assert_array_equal(images[1, ..., 0], image)
  assert np.abs(images[2, ..., 0].astype(int) - image).max() <= 8


@pytest.mark.slow
def test_serial_threads_and_processes_decode_the_same(tmp_path, digits):
  files = [str(p) for p in _write(tmp_path, digits[1], classes=False)]
  for executor in ("serial", "threads"):
    np.testing.assert_array_equal(image_folder.decode(files, executor=executor), digits[1].images)
  processes = image_folder.decode(files[:8], workers=2, executor="processes")
  np.testing.assert_array_equal(processes, digits[1].images[:8])


def test_auto_uses_threads_for_larger_images_only(tmp_path, digits, monkeypatch):
  chosen = []
  pool = image_folder._pool  # pylint: disable=protected-access
  monkeypatch.setattr(image_folder, "_pool", lambda executor, workers: (chosen.append(executor),
                                                                       pool(executor, workers))[1])
  grey = [str(p) for p in _write(tmp_path / "grey", digits[1], classes=False)]
  padded = np.pad(digits[1].images, ((0, 0), (2, 2), (2, 2), (0, 0)))
  colour = data.Split(_colour(padded), digits[1].labels)
  colour = [str(p) for p in _write(tmp_path / "colour", colour, classes=False)]
  image_folder.decode(grey)  # 28 x 28 x 1 = 784 values.
  image_folder.decode(colour)  # 32 x 32 x 3 = 3,072 values.
  assert chosen == ["serial", "threads"]


@pytest.mark.parametrize("make, message", [
    (lambda d, s: _write(d / "train", s).__getitem__(3).write_bytes(b"\x89PNG\r\n\x1a\n broken"),
     r"cannot decode image .*train/\d/00003.png"),
    (lambda d, s: (_write(d / "train", s)[7].write_bytes(_truncated_png(s))),
     r"cannot decode image .*train/\d/00007.png"),
    (lambda d, s: (d / "train").mkdir(), "train: holds no PNG or JPEG files"),
    (lambda d, s: (d / "train" / "0").mkdir(parents=True), "train/0: class folder holds no PNG"),
    (lambda d, s: (_write(d / "train", s), _write(d / "train", s, classes=False)),
     "holds both image files .* and folders"),
    (lambda d, s: (_write(d / "train", s), _write(d / "test", s, classes=False)),
     "train/ and test/ differ in layout"),
    (lambda d, s: (_write(d / "train", data.Split(s.images[:5], s.labels[:5] * 0)),
                   _write(d / "test", s)), "class folder '1' is not among the training classes"),
    (lambda d, s: _write(d / "test", s), "has test/ but no train/"),
    (lambda d, s: _write(d, data.Split(s.images[:4], s.labels[:4]), classes=False),
     "4 images and test_fraction=0.1 leave an empty test split"),
])
def test_bad_folders_raise_one_line(tmp_path, digits, make, message):
  make(tmp_path, digits[0])
  with pytest.raises(UsageError, match=message) as error:
    data.load(_config(tmp_path))
  assert "\n" not in str(error.value)


def _truncated_png(split):
  buffer = io.BytesIO()
  Image.fromarray(split.images[0, ..., 0]).save(buffer, format="PNG")
  return buffer.getvalue()[:-30]


def _script(name: str):
  """An experiments/ script as a module."""
  spec = importlib.util.spec_from_file_location(name, REPO / "experiments" / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.mark.slow
@pytest.mark.parametrize("colour", [False, True])
def test_make_image_folder_round_trip_is_pixel_exact(tmp_path, colour):
  """experiments/make_image_folder.py on mnist_sample, loaded back: the IDX arrays by class."""
  flags = ["--colour", "--seed=3"] if colour else []
  subprocess.run([sys.executable, str(REPO / "experiments" / "make_image_folder.py"),
                  f"--out={tmp_path}", *flags], check=True, capture_output=True, timeout=120)
  ds = data.load(_config(tmp_path))
  idx = data.load_idx_dir(data.SAMPLE_DIR)
  for split, seed in (("train", 3), ("test", 4)):
    want = getattr(idx, split)
    if colour:
      want = data.Split(_script("make_image_folder").tint(want.images, seed), want.labels)
    want, got = _by_class(want), getattr(ds, split)
    np.testing.assert_array_equal(got.labels, want.labels)
    np.testing.assert_array_equal(got.images, want.images)
  assert ds.image_shape == (28, 28, 3 if colour else 1)
