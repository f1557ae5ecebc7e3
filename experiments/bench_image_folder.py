"""Times loading a folder of images in fresh processes: serial, threads, processes.

    python experiments/bench_image_folder.py --out=/tmp/fashion_png \\
        --data_dir=/usr/share/datasets/fashion-mnist
    python experiments/bench_image_folder.py --out=/tmp/faces --image_size=64   # any image folder

When OUT does not exist, exports the IDX training split to
`OUT/LABEL/INDEX.png` first (Fashion-MNIST: 60,000 files of 28x28); an
existing OUT may be any image folder. Then, round robin, it starts `--runs`
fresh Python processes per setting that each load the folder once and print
the seconds taken, and reports the median. Settings:
  * `data.load`, end to end: listing, decoding (its default "auto": in the
    calling thread for small images, with threads for larger ones),
    converting, splitting off the test set;
  * `image_folder.decode` alone: in the calling thread, with 2 and 4 threads,
    and with 2 processes (spawned, so each pays for importing the package).
Python and package start-up are not timed; the files are in the page cache
after the export or the first run. `--image_size=S` crops and resizes as
config.image_size does.
"""
import argparse
import json
import pathlib
import statistics
import subprocess
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
SETTINGS = [("data.load", None, None), ("decode", "serial", 1), ("decode", "threads", 2),
            ("decode", "threads", 4), ("decode", "processes", 2)]


def child(root: str, what: str, executor: str | None, workers: int | None,
          image_size: int) -> None:
  """In a fresh process: load `root` once, print {"seconds": ...}."""
  from vae_jax import data  # pylint: disable=g-import-not-at-top
  from vae_jax.configs import default  # pylint: disable=g-import-not-at-top
  from vae_jax.sources import image_folder  # pylint: disable=g-import-not-at-top
  config = default.get_config()
  config.update(dataset="bench", data_dir=root, image_size=image_size)
  start = time.perf_counter()
  if what == "data.load":
    ds = data.load(config)
    count = len(ds.train.images) + len(ds.test.images)
  else:
    files, _, _ = image_folder.list_split(pathlib.Path(root))
    count = len(image_folder.decode(files, image_size, workers=workers, executor=executor))
  print(json.dumps({"seconds": time.perf_counter() - start, "images": count}))


def export(data_dir: str, out: pathlib.Path) -> None:
  """The IDX training split as out/LABEL/INDEX.png."""
  sys.path.insert(0, str(REPO / "experiments"))
  import make_image_folder  # pylint: disable=g-import-not-at-top
  from vae_jax import data  # pylint: disable=g-import-not-at-top
  train = data.load_idx_dir(data_dir).train
  start = time.perf_counter()
  make_image_folder.export_split(train.images, train.labels, out)
  print(f"exported {len(train.images):,} PNG files to {out} in {time.perf_counter() - start:.1f} s")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", required=True, help="the PNG folder (made if missing)")
  parser.add_argument("--data_dir", default=None,
                      help="IDX folder to export (default: mnist_sample)")
  parser.add_argument("--runs", type=int, default=3)
  parser.add_argument("--image_size", type=int, default=0, help="as config.image_size")
  parser.add_argument("--child", nargs=3, metavar=("WHAT", "EXECUTOR", "WORKERS"),
                      help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.child:
    what, executor, workers = args.child
    child(args.out, what, executor, int(workers) if workers != "None" else None, args.image_size)
    return
  out = pathlib.Path(args.out)
  if not out.exists():
    from vae_jax import data  # pylint: disable=g-import-not-at-top
    export(args.data_dir or str(data.SAMPLE_DIR), out)
  # Round robin, so that other jobs on a shared machine slow every setting alike.
  times = {setting: [] for setting in SETTINGS}
  for _ in range(args.runs):
    for setting in SETTINGS:
      what, executor, workers = setting
      result = subprocess.run([sys.executable, __file__, f"--out={out}", "--child", what,
                               str(executor), str(workers), f"--image_size={args.image_size}"],
                              check=True, capture_output=True, text=True)
      report = json.loads(result.stdout.strip().splitlines()[-1])
      times[setting].append(report["seconds"])
  for (what, executor, workers), runs in times.items():
    label = "data.load" if what == "data.load" else f"decode, {executor}"
    if executor in ("threads", "processes"):
      label += f" x {workers}"
    print(f"{label:24s} {report['images']:,} images: median {statistics.median(runs):.2f} s "
          f"(runs: {', '.join(f'{t:.2f}' for t in runs)})")


if __name__ == "__main__":
  main()
