"""The seed model's epoch under XLA flag sets, in interleaved rounds: which flags help here.

    python experiments/xla_flags.py --rounds=5
    python experiments/xla_flags.py --rounds=3 --variants=default,xnnpack

Each round runs `experiments/bench_train.py --num_models=1 --baselines=false
--gemms --epochs=3` once per flag set, in a fresh process with that XLA_FLAGS
(the order rotates each round, so that no set always runs first on a warmer or
quieter machine), and reads the epoch's seconds and the seconds of the step's 5
large GEMMs alone under the same flags. It prints each run, then per flag set the
medians, the ratio to the first set's epoch and the fraction of the GEMM limit.
"""
import argparse
import os
import re
import statistics
import subprocess
import sys

# Name -> XLA_FLAGS. Every flag here exists in jaxlib 0.10.2's CPU backend.
VARIANTS = {
    "default": "",
    "no_thunks": "--xla_cpu_use_thunk_runtime=false",
    "onednn": "--xla_cpu_experimental_onednn_custom_call=true",
    "xnnpack": "--xla_cpu_use_xnnpack=true",
    "no_fusion_emitters": "--xla_cpu_use_fusion_emitters=false",
    "vector512": "--xla_cpu_prefer_vector_width=512",
    "single_thread_eigen": "--xla_cpu_multi_thread_eigen=false",
    # XNNPACK for the matrix products (and what it can fuse around them).
    "xnn_dots": "--xla_cpu_experimental_xnn_fusion_type=LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT",
    "xnn_dot_fusions": "--xla_cpu_experimental_xnn_fusion_type=LIBRARY_FUSION_TYPE_DOT,"
                       "LIBRARY_FUSION_TYPE_ELTWISE",
    "xnn_graph": "--xla_cpu_experimental_xnn_graph_fusion_mode=XNN_GRAPH_FUSION_MODE_GREEDY",
    "ynn_dots": "--xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT",
}
EPOCH = re.compile(r"model\(s\): compile [\d.]+ s; (\d+\.\d+) s per epoch")
GEMMS = re.compile(r"5 large GEMMs alone: (\d+\.\d+) s per epoch")


def run(flags: str, epochs: int) -> tuple[float, float]:
  """(seconds per epoch, seconds of the 5 GEMMs alone) of one bench_train run under `flags`."""
  here = os.path.dirname(os.path.abspath(__file__))
  env = dict(os.environ, XLA_FLAGS=(os.environ.get("XLA_FLAGS", "") + " " + flags).strip())
  out = subprocess.run([sys.executable, os.path.join(here, "bench_train.py"), "--num_models=1",
                        "--baselines=false", "--gemms", f"--epochs={epochs}"],
                       env=env, capture_output=True, text=True, check=True).stdout
  return float(EPOCH.search(out).group(1)), float(GEMMS.search(out).group(1))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--epochs", type=int, default=3, help="timed epochs per run")
  parser.add_argument("--variants", default=",".join(VARIANTS),
                      help=f"comma-separated, from: {', '.join(VARIANTS)}")
  args = parser.parse_args()
  names = args.variants.split(",")
  unknown = [n for n in names if n not in VARIANTS]
  if unknown:
    parser.error(f"unknown variant(s) {', '.join(unknown)}; known: {', '.join(VARIANTS)}")
  times = {n: ([], []) for n in names}
  for r in range(args.rounds):
    order = names[r % len(names):] + names[:r % len(names)]
    for name in order:
      epoch_s, gemm_s = run(VARIANTS[name], args.epochs)
      times[name][0].append(epoch_s)
      times[name][1].append(gemm_s)
      print(f"round {r + 1} {name}: epoch {epoch_s:.3f} s, GEMMs {gemm_s:.3f} s "
            f"(load {os.getloadavg()[0]:.2f})", flush=True)
  first = statistics.median(times[names[0]][0])
  for name in names:
    epoch_s, gemm_s = (statistics.median(t) for t in times[name])
    print(f"{name:>20}: epoch {epoch_s:.3f} s ({epoch_s / first:.3f}x {names[0]}), "
          f"GEMMs alone {gemm_s:.3f} s, {gemm_s / epoch_s:.0%} of their speed "
          f"(medians of {args.rounds}; XLA_FLAGS={VARIANTS[name] or '(none)'})")


if __name__ == "__main__":
  main()
