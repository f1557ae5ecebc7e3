"""Benchmark of the disentanglement metrics: all of them, 5 models, disentanglement_lib's sizes.

    python experiments/bench_disentanglement.py                       # 5 models on 2 processes
    python experiments/bench_disentanglement.py --repeats=3           # the median of 3 runs
    python experiments/bench_disentanglement.py --dci_estimator=gradient_boosting --models=1
    python experiments/bench_disentanglement.py --per_factor          # DCI's seconds per factor

The ground truth has dSprites' factor sizes without its constant colour, (3, 6, 40, 32, 32);
an observation is its factor values. Model m is a 10-latent noisy linear representation:
latents 0-4 are the five factors (scaled to [0, 1]) mixed by `MIXING[m]`, latents 5-9 small
random combinations of them, plus `NOISE[m]` times a deterministic pseudo-noise of the
observation (an encoder's mean is a function of its input). Each model runs
`vae_jax.disentanglement.evaluate_all` with the default `Sizes()`, in `--jobs` worker
processes of one thread each. Prints each metric's seconds summed over the models (where the
time goes), the wall time of the whole run, each model's numbers, the scikit-learn version, the
CPU and the load average (the machine may be shared: compare figures from the same run).
"""
import concurrent.futures
import multiprocessing
import os
import platform
import statistics
import time

# One thread per worker: the workers are the parallelism (set before numpy is imported).
for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
  os.environ[_name] = "1"

import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position
from absl import app  # pylint: disable=g-import-not-at-top,wrong-import-position
from absl import flags  # pylint: disable=g-import-not-at-top,wrong-import-position

from vae_jax import disentanglement as dis  # pylint: disable=wrong-import-position

_MODELS = flags.DEFINE_integer("models", 5, "Models evaluated (at most 5).")
_JOBS = flags.DEFINE_integer("jobs", 2, "Worker processes, one model at a time each.")
_REPEATS = flags.DEFINE_integer("repeats", 1, "Runs; the wall time reported is their median.")
_DCI = flags.DEFINE_enum("dci_estimator", "hist_gradient_boosting", list(dis.DCI_ESTIMATORS),
                         "DCI's classifier.")
_SEED = flags.DEFINE_integer("seed", 0, "evaluate_all's seed.")
_PER_FACTOR = flags.DEFINE_bool("per_factor", False,
                                "Also time DCI's classifier for each factor of model 0.")

FACTOR_SIZES = (3, 6, 40, 32, 32)  # dSprites: shape, scale, orientation, x, y.
MIXING = (0.0, 0.1, 0.3, 0.6, 1.0)  # From axis-aligned to fully mixed.
NOISE = (0.02, 0.05, 0.1, 0.2, 0.5)


class Shapes:
  """Ground truth with dSprites' factor sizes; an observation is its factor values."""
  factor_sizes = FACTOR_SIZES
  factor_names = ("shape", "scale", "orientation", "x", "y")

  def images(self, factors: np.ndarray) -> np.ndarray:
    return factors.astype(np.float32)


class NoisyLinear:
  """Model m: codes `(n, 10)` = scaled factors @ weights + noise * sin(factors @ phases)."""

  def __init__(self, m: int):
    rng = np.random.default_rng(100 + m)
    factors = len(FACTOR_SIZES)
    mixed = (1 - MIXING[m]) * np.eye(factors) + MIXING[m] * rng.normal(
        size=(factors, factors)) / np.sqrt(factors)
    self.weights = np.concatenate([mixed, 0.1 * rng.normal(size=(factors, 5))], axis=1)
    self.phases = rng.normal(size=(factors, 10)) * 1000.0
    self.noise = NOISE[m]

  def __call__(self, observations: np.ndarray) -> np.ndarray:
    scaled = observations / (np.array(FACTOR_SIZES) - 1)
    return scaled @ self.weights + self.noise * np.sin(observations @ self.phases)


def evaluate(m: int, seed: int, dci_estimator: str) -> dict:
  """evaluate_all for model m, with the worker's CPU seconds."""
  start = time.process_time()
  result = dis.evaluate_all(NoisyLinear(m), Shapes(), seed=seed, dci_estimator=dci_estimator)
  result["cpu_seconds"] = time.process_time() - start
  result["worker"] = os.getpid()
  return result


def run_once(pool, models: int, seed: int, dci_estimator: str) -> tuple[float, list[dict]]:
  start = time.perf_counter()
  results = list(pool.map(evaluate, range(models), [seed] * models, [dci_estimator] * models))
  return time.perf_counter() - start, results


def per_factor_seconds(dci_estimator: str) -> list[float]:
  """DCI's classifier time for each factor of model 0 (a factor given twice, halved)."""
  rng = np.random.default_rng(0)
  codes, factors = dis.sample_codes(NoisyLinear(0), Shapes(), 10_000, rng=rng)
  test_codes, test_factors = dis.sample_codes(NoisyLinear(0), Shapes(), 5_000, rng=rng)
  seconds = []
  for j in range(len(FACTOR_SIZES)):
    start = time.perf_counter()
    dis.dci(codes, factors[:, [j, j]], test_codes, test_factors[:, [j, j]],
            estimator=dci_estimator)
    seconds.append((time.perf_counter() - start) / 2)
  return seconds


def cpu_name() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
    return f"{names[0]}, {len(names)} logical cores" if names else platform.processor()
  except OSError:
    return platform.processor() or "unknown CPU"


def summarize(walls: list[float], results: list[dict]) -> None:
  metrics = list(results[0]["seconds"])
  print("seconds per metric, summed over models (each model on one core):")
  for name in metrics:
    print(f"  {name:13s} {sum(r['seconds'][name] for r in results):7.1f}")
  busy = sum(sum(r["seconds"].values()) for r in results)
  print(f"  {'all':13s} {busy:7.1f}  (CPU seconds of the workers: "
        f"{sum(r['cpu_seconds'] for r in results):.1f})")
  print(f"wall time, {len(results)} models on {_JOBS.value} processes: median "
        f"{statistics.median(walls):.1f} s of {', '.join(f'{w:.1f}' for w in walls)}")
  # On cores of its own each worker would take about its CPU seconds: the busiest one's is
  # the wall time the run would take on an idle machine with that many cores.
  workers = {}
  for r in results:
    workers[r["worker"]] = workers.get(r["worker"], 0.0) + r["cpu_seconds"]
  print(f"busiest worker's CPU seconds (the wall time on idle cores): {max(workers.values()):.1f}"
        f" ({', '.join(f'{s:.1f}' for s in workers.values())})")
  for m, r in enumerate(results):
    print(f"model {m} (mixing {MIXING[m]}, noise {NOISE[m]}): "
          f"BetaVAE {r['beta_vae']['eval_accuracy']:.3f}, "
          f"FactorVAE {r['factor_vae']['eval_accuracy']:.3f}, MIG {r['mig']:.3f}, "
          f"SAP {r['sap']:.3f}, DCI {r['dci']['disentanglement']:.3f} / "
          f"{r['dci']['completeness']:.3f} / {r['dci']['informativeness_test']:.3f}, "
          f"modularity {r['modularity']:.3f}, explicitness {r['explicitness']['test']:.3f}")


def main(argv):
  del argv
  models = min(_MODELS.value, len(MIXING))
  print(f"scikit-learn {dis.scikit_learn_version()}, numpy {np.__version__}; CPU: {cpu_name()}; "
        f"DCI estimator: {_DCI.value}; load average before: {os.getloadavg()[0]:.1f}")
  # Spawned workers: the parent has imported jax (through vae_jax), which forking may hang.
  context = multiprocessing.get_context("spawn")
  with concurrent.futures.ProcessPoolExecutor(_JOBS.value, mp_context=context) as pool:
    list(pool.map(time.sleep, [1.0] * _JOBS.value))  # Start the workers before the clock.
    runs = [run_once(pool, models, _SEED.value, _DCI.value) for _ in range(_REPEATS.value)]
  summarize([wall for wall, _ in runs], runs[-1][1])
  if _PER_FACTOR.value:
    seconds = per_factor_seconds(_DCI.value)
    print("DCI seconds per factor of model 0: " + ", ".join(
        f"{name} ({size} values) {s:.1f}"
        for name, size, s in zip(Shapes.factor_names, FACTOR_SIZES, seconds)))
  print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
  app.run(main)
