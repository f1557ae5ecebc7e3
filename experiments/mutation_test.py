"""Mutation testing of the core modules with cosmic-ray: which deliberate bugs do the tests miss?

Not part of CI (an hour of CPU) and not a test dependency:

    pip install cosmic-ray==8.7.0 pytest-cov
    python experiments/mutation_test.py plan --out=/tmp/mutation --tests=before
    python experiments/mutation_test.py run --out=/tmp/mutation --tests=before --workers=2
    python experiments/mutation_test.py report --out=/tmp/mutation --tests=before
    # Then the survivors against today's tests:
    python experiments/mutation_test.py plan --out=/tmp/mutation --tests=after \\
        --only=/tmp/mutation/before/survivors.json
    python experiments/mutation_test.py run ... && python experiments/mutation_test.py report ...

`plan` makes cosmic-ray sessions for MODULES (`cosmic-ray init`, then
`cr-filter-operators`): its core operators cut to one plausible slip per
site, as mutmut makes them (+ for -, < for <=, a number off by one, a negated
condition, ...; not + for <<), and for experiment.py only the key handling. It
writes each mutant's code (cosmic-ray's `mutate_code`) and the in-process
tests of the selection (TESTS) that execute its line, from one coverage run
with per-test contexts. `run` tests each mutant in a copy of the repository
(the working tree is never touched), in a fresh process, with those tests
only, several at once: `cosmic-ray exec` would run the whole selection for
each mutant, about 50 s apiece on a 2-core CPU. A mutant whose line no test
executes survives without a run. `report` stores the outcomes in the sessions
(so `cr-report OUT/TESTS/MODULE.sqlite` shows them), prints the score per module
and writes OUT/TESTS/survivors.json with the diffs. `run` needs only the
package and pytest, so it can run on another machine.
"""
import argparse
import concurrent.futures
import json
import os
import pathlib
import random
import shutil
import sqlite3
import subprocess
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
MODULES = ("objectives", "model", "train_step", "epoch", "checkpoints", "experiment")
# experiment.py: only KeyStreams' methods, and its stream numbers (the line naming INIT, ...).
KEY_HANDLING = {"of", "stream", "epoch", "evaluation", "iwae"}

# The in-process tests (subprocess tests are too slow to run per mutant), as of the
# issue (before) and with the tests written for it (after).
BEFORE = ["tests/test_objectives.py", "tests/test_evaluation.py", "tests/test_trainer.py",
          "tests/test_latent.py"]
TESTS = {"before": BEFORE, "after": [*BEFORE, "tests/test_robustness.py", "tests/test_invariants.py"]}

# One plausible slip per site: the rest of cosmic-ray's core operators is excluded.
KEPT = {"ReplaceBinaryOperator": "Add_Sub|Sub_Add|Mul_Div|Div_Mul|FloorDiv_Div|Mod_FloorDiv|Pow_Mul",
        "ReplaceComparisonOperator": "Eq_NotEq|NotEq_Eq|Lt_LtE|LtE_Lt|Gt_GtE|GtE_Gt|Is_IsNot|IsNot_Is",
        "ReplaceUnaryOperator": "USub_UAdd|Delete_Not"}
EXCLUDED = [f"core/{op}_(?!({kept})$).*" for op, kept in KEPT.items()] + [
    "core/RemoveDecorator", "core/VariableReplacer", "core/VariableInserter"]
# Each mutant's tests run in a fresh process; the XLA cache spares recompiling what it leaves alone.
CACHE_ENV = {"JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
             "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "-1", "PYTHONDONTWRITEBYTECODE": "1"}


# ----------------------------------------------------------------------------
# plan


def plan(out: pathlib.Path, selection: str, only: dict | None) -> None:
  out.mkdir(parents=True, exist_ok=True)
  contexts = _coverage(out, TESTS[selection])
  mutants = []
  for module in MODULES:
    mutants += _mutants(out, module, contexts, only)
  with open(out / "mutants.jsonl", "w") as f:
    f.writelines(json.dumps(m) + "\n" for m in mutants)
  print(f"{len(mutants)} mutants, {sum(not m['tests'] for m in mutants)} on lines no test runs")


def _coverage(out: pathlib.Path, tests: list[str]) -> dict:
  """{module: {line: [pytest node ids that execute it]}} from one run with per-test contexts."""
  data = out / ".coverage"
  if not data.exists():
    env = dict(os.environ, COVERAGE_FILE=str(data), JAX_COMPILATION_CACHE_DIR=str(out / "jax_cache"),
               **CACHE_ENV)
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--cov=vae_jax",
                    "--cov-context=test", "--cov-report=", *tests], cwd=REPO, env=env, check=True)
  import coverage  # pylint: disable=g-import-not-at-top
  covered = coverage.CoverageData(str(data))
  covered.read()
  result = {}
  for path in covered.measured_files():
    name = pathlib.Path(path).stem
    if pathlib.Path(path).parent.name == "vae_jax" and name in MODULES:
      by_line = covered.contexts_by_lineno(path)
      everyone = sorted({c.split("|")[0] for found in by_line.values() for c in found if c})
      # A line run only at import (a constant, a default argument) counts for every test.
      result[name] = {line: sorted({c.split("|")[0] for c in found if c}) or everyone
                      for line, found in by_line.items()}
  return result


def _mutants(out: pathlib.Path, module: str, contexts: dict, only: dict | None) -> list[dict]:
  from cosmic_ray import mutating, plugins  # pylint: disable=g-import-not-at-top
  path = REPO / "vae_jax" / f"{module}.py"
  config, session = out / f"{module}.toml", out / f"{module}.sqlite"
  config.write_text("\n".join([
      "[cosmic-ray]", f'module-path = "{path}"', "timeout = 600.0", "excluded-modules = []",
      'test-command = "true"', "[cosmic-ray.distributor]", 'name = "local"',
      "[cosmic-ray.filters.operators-filter]", f"exclude-operators = {json.dumps(EXCLUDED)}", ""]))
  session.unlink(missing_ok=True)
  subprocess.run(["cosmic-ray", "init", str(config), str(session)], check=True)
  subprocess.run(["cr-filter-operators", str(session), str(config)], check=True)
  source = path.read_text()
  lines = source.splitlines()
  wanted = None if only is None else {_signature(s["operator"], s["diff"])
                                      for s in only.get(module, [])}
  db = sqlite3.connect(session)
  rows = db.execute("SELECT job_id, operator_name, operator_args, occurrence, start_pos_row, "
                    "definition_name FROM mutation_specs WHERE job_id NOT IN "
                    "(SELECT job_id FROM work_results)").fetchall()
  mutants = []
  for job, op, op_args, occurrence, row, definition in rows:
    if module == "experiment" and not (definition in KEY_HANDLING or (
        "INIT, TRAIN" in lines[row - 1])):
      continue
    op_args = json.loads(op_args)  # Stored as JSON of a JSON string.
    operator = plugins.get_operator(op)(**(json.loads(op_args) if isinstance(op_args, str) else op_args))
    mutated = mutating.mutate_code(source, operator, occurrence)
    if mutated is None:
      continue
    diff = "\n".join(mutating._make_diff(source, mutated, f"vae_jax/{module}.py"))  # pylint: disable=protected-access
    if wanted is not None and _signature(op, diff) not in wanted:
      continue
    mutants.append({"job_id": job, "module": module, "operator": op, "occurrence": occurrence,
                    "line": row, "function": definition, "diff": diff, "code": mutated,
                    "tests": _tests_of_line(contexts.get(module, {}), row, definition)})
  return mutants


def _signature(operator: str, diff: str) -> tuple:
  """A mutant by its operator and the lines it changes: the same mutant in code whose
  other lines moved (occurrence numbers shift when code is added)."""
  changed = [line.strip() for line in diff.splitlines()
             if line[:1] in "-+" and not line.startswith(("---", "+++"))]
  return operator, tuple(changed)


def _tests_of_line(by_line: dict, row: int, definition) -> list[str]:
  """The tests that execute `row`, or the nearest line above it in the same statement
  (coverage counts a statement spread over lines at one of them)."""
  for line in range(row, max(row - 8, 0), -1):
    if by_line.get(line):
      return by_line[line]
  return []


# ----------------------------------------------------------------------------
# run


def run(out: pathlib.Path, workers: int, deadline: float, timeout: float,
        broken: list[str]) -> None:
  mutants = [json.loads(line) for line in open(out / "mutants.jsonl")]
  for m in mutants:  # Tests that fail without a mutant here cannot judge one.
    m["tests"] = [t for t in m["tests"] if t not in broken]
  done_path = out / "results.jsonl"
  done = {json.loads(line)["job_id"] for line in open(done_path)} if done_path.exists() else set()
  pending = [m for m in mutants if m["job_id"] not in done]
  # In random order: a run cut short is then a fair sample of every module.
  random.Random(0).shuffle(pending)
  copies = [_copy_repo(out / f"work{i}") for i in range(workers)]
  free = list(range(workers))
  stop_at = time.monotonic() + deadline
  with open(done_path, "a") as results, concurrent.futures.ThreadPoolExecutor(workers) as pool:
    def one(mutant):
      slot = free.pop()
      try:
        return _test_mutant(copies[slot], out, mutant, timeout, stop_at)
      finally:
        free.append(slot)

    for result in pool.map(one, pending):
      if result is not None:
        results.write(json.dumps(result) + "\n")
        results.flush()


def _copy_repo(folder: pathlib.Path) -> pathlib.Path:
  """A fresh copy of the package and its tests (a run killed midway may have left a mutant)."""
  repo = folder / "repo"
  shutil.rmtree(repo, ignore_errors=True)
  for part in ("vae_jax", "tests"):
    shutil.copytree(REPO / part, repo / part, ignore=shutil.ignore_patterns("__pycache__"))
  return repo


def _test_mutant(repo: pathlib.Path, out: pathlib.Path, mutant: dict, timeout: float,
                 stop_at: float) -> dict | None:
  if time.monotonic() > stop_at:
    return None
  result = {"job_id": mutant["job_id"], "module": mutant["module"]}
  if not mutant["tests"]:
    return dict(result, outcome="survived", output="no test executes this line", seconds=0.0)
  path = repo / "vae_jax" / f"{mutant['module']}.py"
  original = path.read_text()
  path.write_text(mutant["code"])
  path_ = os.pathsep.join(p for p in (str(repo), os.environ.get("PYTHONPATH", "")) if p)
  env = dict(os.environ, PYTHONPATH=path_, JAX_COMPILATION_CACHE_DIR=str(out / "jax_cache"),
             **CACHE_ENV)
  start = time.monotonic()
  try:
    process = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
                              *mutant["tests"]], cwd=repo, env=env, capture_output=True, text=True,
                             timeout=timeout)
    outcome = "survived" if process.returncode == 0 else "killed"
    output = (process.stdout + process.stderr)[-1500:]
  except subprocess.TimeoutExpired:
    outcome, output = "timeout", f"tests still running after {timeout} s"
  finally:
    path.write_text(original)
  return dict(result, outcome=outcome, output=output, seconds=round(time.monotonic() - start, 1))


# ----------------------------------------------------------------------------
# report


def report(out: pathlib.Path) -> None:
  mutants = {m["job_id"]: m for m in map(json.loads, open(out / "mutants.jsonl"))}
  results = [json.loads(line) for line in open(out / "results.jsonl")]
  # outcome -> cosmic-ray's (worker outcome, test outcome).
  as_cosmic_ray = {"killed": ("NORMAL", "KILLED"), "survived": ("NORMAL", "SURVIVED"),
                   "timeout": ("ABNORMAL", "KILLED")}
  survivors, counts = {}, {}
  for module in MODULES:
    session = out / f"{module}.sqlite"
    if not session.exists():
      continue
    db = sqlite3.connect(session)
    for r in (r for r in results if r["module"] == module):
      worker, test = as_cosmic_ray[r["outcome"]]
      db.execute("INSERT OR REPLACE INTO work_results (job_id, worker_outcome, output, "
                 "test_outcome, diff) VALUES (?, ?, ?, ?, ?)",
                 (r["job_id"], worker, r["output"], test, mutants[r["job_id"]]["diff"]))
      counts.setdefault(module, {}).setdefault(r["outcome"], 0)
      counts[module][r["outcome"]] += 1
      if r["outcome"] == "survived":
        m = mutants[r["job_id"]]
        survivors.setdefault(module, []).append(
            {k: m[k] for k in ("operator", "occurrence", "line", "function", "diff")}
            | {"why": r["output"][-200:]})
    db.commit()
  (out / "survivors.json").write_text(json.dumps(survivors, indent=1) + "\n")
  planned = {}
  for m in mutants.values():
    planned[m["module"]] = planned.get(m["module"], 0) + 1
  total_killed = total_run = 0
  for module in MODULES:
    c = counts.get(module, {})
    run_ = sum(c.values())
    killed = c.get("killed", 0) + c.get("timeout", 0)
    total_killed, total_run = total_killed + killed, total_run + run_
    print(f"{module:12s} {killed:4d} of {run_:4d} killed ({100 * killed / max(run_, 1):5.1f} %)"
          f"{'' if run_ == planned.get(module, 0) else f'  ({planned.get(module, 0) - run_} not run)'}"
          f"  {json.dumps(c)}")
  print(f"{'all':12s} {total_killed:4d} of {total_run:4d} killed "
        f"({100 * total_killed / max(total_run, 1):5.1f} %)")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("step", choices=("plan", "run", "report"))
  parser.add_argument("--out", required=True, type=pathlib.Path)
  parser.add_argument("--tests", choices=sorted(TESTS), default="after")
  parser.add_argument("--only", type=pathlib.Path, help="plan: survivors.json of an earlier run")
  parser.add_argument("--workers", type=int, default=2)
  parser.add_argument("--deadline", type=float, default=float("inf"),
                      help="run: start no mutant after this many seconds")
  parser.add_argument("--timeout", type=float, default=600.0, help="run: seconds per mutant")
  parser.add_argument("--broken", type=pathlib.Path,
                      help="run: a file of test ids, one a line, that fail without mutants here")
  args = parser.parse_args()
  out = args.out.absolute() / args.tests
  if args.step == "plan":
    plan(out, args.tests, json.loads(args.only.read_text()) if args.only else None)
  elif args.step == "run":
    broken = args.broken.read_text().splitlines() if args.broken else []
    run(out, args.workers, args.deadline, args.timeout, broken)
  else:
    report(out)


if __name__ == "__main__":
  main()
