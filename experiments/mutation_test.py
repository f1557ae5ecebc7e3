"""Mutation testing of the core modules with cosmic-ray: which deliberate bugs do the tests miss?

Not part of CI (it takes hours on a 2-core CPU) and not a test dependency:

    pip install cosmic-ray==8.7.0
    python experiments/mutation_test.py --out=/tmp/mutation --tests=before   # the tests of issue #10's start
    python experiments/mutation_test.py --out=/tmp/mutation --tests=after \\
        --only=/tmp/mutation/before/survivors.json                           # their survivors, today's tests

Each module of MODULES is mutated in a copy of the repository's tracked files
(OUT/NAME/repo; the working tree is never touched), one mutant at a time, and
the module's tests (TESTS) run in a fresh process against it: a mutant is
killed when they fail. The mutants are cosmic-ray's core operators cut to one
plausible slip per site, as mutmut makes them (+ for -, < for <=, a number
off by one, a negated condition, ...; not `+` for `<<`). For trainer.py only
the key handling is mutated (KEY_HANDLING). A persistent XLA cache (OUT/jax_cache)
keeps each run to seconds where the mutant leaves a program unchanged.

Prints killed / survived per module and writes OUT/NAME/survivors.json, the
survivors with their diffs; `--only` runs just those (killed ones stay killed
when tests are only added).
"""
import argparse
import json
import os
import pathlib
import sqlite3
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]
MODULES = ("objectives", "model", "train_step", "epoch", "checkpoints", "trainer")
KEY_HANDLING = {"stream_keys", "_epoch_keys", "_roots"}  # And the module's *_STREAM numbers.

# The tests that exercise each module, fastest killers first (pytest -x stops at the first failure).
_EVALUATION_MATHS = ["tests/test_evaluation.py::test_log_mean_exp_is_stable_and_exact",
                     "tests/test_evaluation.py::test_iwae_converges_to_the_exact_log_likelihood",
                     "tests/test_evaluation.py::test_bound_rises_with_k_on_average"]
BEFORE = {
    "objectives": ["tests/test_objectives.py", *_EVALUATION_MATHS, "tests/test_trainer.py"],
    "model": ["tests/test_objectives.py", "tests/test_trainer.py", *_EVALUATION_MATHS,
              "tests/test_latent.py"],
    "train_step": ["tests/test_trainer.py"],
    "epoch": ["tests/test_trainer.py"],
    "checkpoints": ["tests/test_trainer.py", "tests/test_latent.py::test_public_names_and_load"],
    "trainer": ["tests/test_trainer.py"],
}
ADDED = {  # Tests written for issue #10.
    "objectives": ["tests/test_invariants.py"],
    "model": ["tests/test_invariants.py"],
    "train_step": ["tests/test_invariants.py", "tests/test_robustness.py"],
    "epoch": ["tests/test_invariants.py", "tests/test_robustness.py"],
    "checkpoints": ["tests/test_robustness.py"],
    "trainer": ["tests/test_robustness.py"],
}
TESTS = {"before": BEFORE, "after": {m: [*ADDED[m], *BEFORE[m]] for m in MODULES}}

# One plausible slip per site: everything else of cosmic-ray's core operators is excluded.
KEPT = {"ReplaceBinaryOperator": "Add_Sub|Sub_Add|Mul_Div|Div_Mul|FloorDiv_Div|Mod_FloorDiv|Pow_Mul",
        "ReplaceComparisonOperator": "Eq_NotEq|NotEq_Eq|Lt_LtE|LtE_Lt|Gt_GtE|GtE_Gt|Is_IsNot|IsNot_Is",
        "ReplaceUnaryOperator": "USub_UAdd|Delete_Not"}
EXCLUDED = [f"core/{op}_(?!({kept})$).*" for op, kept in KEPT.items()] + [
    "core/RemoveDecorator", "core/VariableReplacer", "core/VariableInserter"]


def _config(module: str, repo: pathlib.Path, tests: list[str]) -> str:
  command = f"{sys.executable} -m pytest -x -q -p no:cacheprovider {' '.join(tests)}"
  return "\n".join([
      "[cosmic-ray]", f'module-path = "{repo / "vae_jax" / (module + ".py")}"',
      "timeout = 600.0", "excluded-modules = []", f"test-command = {json.dumps(command)}",
      "[cosmic-ray.distributor]", 'name = "local"',
      "[cosmic-ray.filters.operators-filter]", f"exclude-operators = {json.dumps(EXCLUDED)}", ""])


def _skip(session: pathlib.Path, keep) -> None:
  """Marks every pending mutant for which `keep(row)` is false as skipped."""
  db = sqlite3.connect(session)
  rows = db.execute("SELECT job_id, operator_name, occurrence, definition_name, start_pos_row "
                    "FROM mutation_specs WHERE job_id NOT IN (SELECT job_id FROM work_results)")
  skipped = [(job,) for job, *row in rows.fetchall() if not keep(*row)]
  db.executemany("INSERT INTO work_results (job_id, worker_outcome, output, test_outcome, diff) "
                 "VALUES (?, 'SKIPPED', 'not selected', NULL, '')", skipped)
  db.commit()


def run_module(module: str, out: pathlib.Path, selection: str, only: dict | None) -> dict:
  """Mutates `module` in a copy of the repository; returns its outcome counts and survivors."""
  folder = out / module
  repo = folder / "repo"
  if not repo.exists():
    repo.mkdir(parents=True)
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True,
                           check=True).stdout
    subprocess.run(["tar", "-c", "--null", "-T", "-", "-f", "-"], cwd=REPO, input=files,
                   check=True, stdout=open(folder / "repo.tar", "wb"))
    subprocess.run(["tar", "-x", "-f", str(folder / "repo.tar")], cwd=repo, check=True)
  config, session = folder / "config.toml", folder / "session.sqlite"
  config.write_text(_config(module, repo, TESTS[selection][module]))
  env = dict(os.environ, PYTHONPATH=str(repo), JAX_COMPILATION_CACHE_DIR=str(out / "jax_cache"),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
             JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="-1")
  if not session.exists():
    subprocess.run(["cosmic-ray", "init", str(config), str(session)], check=True, env=env)
    subprocess.run(["cr-filter-operators", str(session), str(config)], check=True, env=env)
    if module == "trainer":
      lines = (repo / "vae_jax" / "trainer.py").read_text().splitlines()
      _skip(session, lambda op, occurrence, definition, row: definition in KEY_HANDLING or (
          definition is None and "_STREAM" in lines[row - 1]))
    if only is not None:
      wanted = {(s["operator"], s["occurrence"]) for s in only.get(module, [])}
      _skip(session, lambda op, occurrence, definition, row: (op, occurrence) in wanted)
  subprocess.run(["cosmic-ray", "exec", str(config), str(session)], check=True, cwd=repo, env=env)
  return _summary(session)


def _summary(session: pathlib.Path) -> dict:
  db = sqlite3.connect(session)
  rows = db.execute(
      "SELECT s.operator_name, s.occurrence, s.start_pos_row, s.definition_name, r.worker_outcome,"
      " r.test_outcome, r.diff FROM mutation_specs s JOIN work_results r ON s.job_id = r.job_id "
      "WHERE r.worker_outcome != 'SKIPPED'").fetchall()
  counts = {}
  survivors = []
  for op, occurrence, row, definition, worker, test, diff in rows:
    # NORMAL runs end KILLED, SURVIVED or INCOMPETENT (the mutant does not even import);
    # the others are TIMEOUT (it hung: killed too), or EXCEPTION / ABNORMAL (the tool failed).
    outcome = test.lower() if worker == "NORMAL" and test else worker.lower()
    counts[outcome] = counts.get(outcome, 0) + 1
    if outcome == "survived":
      survivors.append({"operator": op, "occurrence": occurrence, "line": row,
                        "function": definition, "diff": diff})
  return {"counts": counts, "survivors": survivors}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", required=True, type=pathlib.Path)
  parser.add_argument("--tests", choices=sorted(TESTS), default="after")
  parser.add_argument("--modules", default=",".join(MODULES))
  parser.add_argument("--only", type=pathlib.Path, help="survivors.json of an earlier run")
  args = parser.parse_args()
  only = json.loads(args.only.read_text()) if args.only else None
  out = args.out.absolute() / args.tests
  results = {m: run_module(m, out, args.tests, only) for m in args.modules.split(",")}
  survivors = {m: r["survivors"] for m, r in results.items()}
  (out / "survivors.json").write_text(json.dumps(survivors, indent=1) + "\n")
  for module, result in results.items():
    counts = result["counts"]
    total, killed = sum(counts.values()), total_killed(counts)
    print(f"{module:12s} {killed:4d} of {total:4d} killed ({100 * killed / max(total, 1):5.1f} %)  "
          f"{json.dumps(counts)}")


def total_killed(counts: dict) -> int:
  """Killed: the tests failed, or the mutant hung past the timeout or could not even run."""
  return sum(counts.get(outcome, 0) for outcome in ("killed", "timeout", "incompetent"))


if __name__ == "__main__":
  main()
