"""Two versions' speed in interleaved rounds: the seed model's epoch and the IWAE evaluation.

    git worktree add /tmp/old 0ab39bc
    python experiments/same_speed.py --old=/tmp/old --new=. --rounds=3

Each round runs, in each tree in turn (old first in odd rounds, new first in even
ones, so that neither always runs on a warmer or quieter machine):
  * `experiments/bench_train.py --num_models=1 --baselines=false --epochs=3`: the
    seed model's epoch of 60,000 Fashion-MNIST images (the median of 3 after a
    warm-up);
  * `experiments/bench_eval.py --skip_memory --num_images=200 --k=1000`: the IWAE
    bound with k = 1,000 on 200 images (after a compiling first chunk).
It prints each round's seconds and the medians' ratio new/old.
"""
import argparse
import os
import re
import statistics
import subprocess
import sys

COMMANDS = {
    "epoch": (["experiments/bench_train.py", "--num_models=1", "--baselines=false",
               "--epochs=3"], r"(\d+\.\d+) s per epoch"),
    "iwae": (["experiments/bench_eval.py", "--skip_memory", "--num_images=200", "--k=1000"],
             r"evaluation: (\d+\.\d+) s"),
}


def seconds(tree: str, name: str) -> float:
  """One run of benchmark `name` in the source tree `tree`: its seconds."""
  args, pattern = COMMANDS[name]
  env = dict(os.environ, PYTHONPATH=os.path.abspath(tree))
  out = subprocess.run([sys.executable, *args], cwd=tree, env=env, capture_output=True,
                       text=True, check=True).stdout
  return float(re.search(pattern, out).group(1))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--old", required=True, help="the older version's source tree")
  parser.add_argument("--new", required=True, help="the newer version's source tree")
  parser.add_argument("--rounds", type=int, default=3)
  args = parser.parse_args()
  times = {(name, tree): [] for name in COMMANDS for tree in ("old", "new")}
  for r in range(args.rounds):
    order = ("old", "new") if r % 2 == 0 else ("new", "old")
    for name in COMMANDS:
      for which in order:
        t = seconds(getattr(args, which), name)
        times[(name, which)].append(t)
        print(f"round {r + 1} {name} {which}: {t:.3f} s (load {os.getloadavg()[0]:.2f})",
              flush=True)
  for name in COMMANDS:
    old, new = (statistics.median(times[(name, w)]) for w in ("old", "new"))
    print(f"{name}: old {old:.3f} s, new {new:.3f} s (medians of {args.rounds}); "
          f"new/old {new / old:.3f}")


if __name__ == "__main__":
  main()
