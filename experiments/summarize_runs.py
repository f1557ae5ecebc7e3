"""Mean ± standard deviation over a run's models, per epoch, from metrics.jsonl.

    python experiments/summarize_runs.py runs/fashion_mlp5 --epochs=1,3,10,20
    python experiments/summarize_runs.py runs/fashion_mlp5 --metric=test_iwae_nll --epochs=20

Prints one line per epoch: the metric's mean, its standard deviation over the
models (ddof 1) and the models' values, for the README's tables.
"""
import argparse
import statistics

from vae_jax import reporting


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("workdir")
  parser.add_argument("--metric", default="test_loss")
  parser.add_argument("--epochs", default="", help="comma-separated; default all")
  args = parser.parse_args()
  wanted = {int(e) for e in args.epochs.split(",") if e}
  by_epoch = {}
  for record in reporting.read_metrics(args.workdir):
    if args.metric in record and (not wanted or record["epoch"] in wanted):
      by_epoch.setdefault(record["epoch"], []).append(record[args.metric])
  for epoch, values in sorted(by_epoch.items()):
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    print(f"epoch {epoch:>3}  {args.metric} {statistics.mean(values):.2f} ± {spread:.2f}  "
          f"({len(values)} models: {', '.join(f'{v:.2f}' for v in values)})")


if __name__ == "__main__":
  main()
