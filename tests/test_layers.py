"""The package's layers: no import cycles (imports inside functions count), data readers that
import no model or training code, and a trained model used without any training code."""
import ast
import json
import pathlib
import subprocess
import sys

import pytest

from conftest import REPO

PACKAGE = REPO / "vae_jax"
# What training alone needs: loading, evaluating and the latent API must not import these.
TRAINING = ("vae_jax.train", "vae_jax.train_state", "vae_jax.epoch", "vae_jax.optim",
            "vae_jax.experiment", "vae_jax.reporting", "vae_jax.lock")
# Model code: the data readers must not import these.
MODELS = ("vae_jax.families", "vae_jax.networks", "vae_jax.likelihoods", "vae_jax.objectives",
          "vae_jax.schema", "vae_jax.trained", "vae_jax.checkpoints", *TRAINING)


def _module_name(path: pathlib.Path) -> str:
  parts = path.relative_to(REPO).with_suffix("").parts
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: pathlib.Path, modules) -> set[str]:
  """The vae_jax modules `path` imports, anywhere in it (inside functions too): for `from
  A import b`, the module A.b where there is one, else A."""
  found = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      found |= {a.name for a in node.names}
    elif isinstance(node, ast.ImportFrom) and node.module:
      for alias in node.names:
        sub = f"{node.module}.{alias.name}"
        found.add(sub if sub in modules else node.module)
  return {m for m in found if m in modules}


def _graph() -> dict[str, set[str]]:
  """module -> the package's modules it imports."""
  paths = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
  return {name: _imports(path, paths) - {name} for name, path in paths.items()}


def _within(module: str, packages: tuple[str, ...]) -> bool:
  return any(module == p or module.startswith(p + ".") for p in packages)


def _reachable(graph, start: str, skip_package: bool = True) -> set[str]:
  """What `start` imports, directly or through others (not counting `vae_jax` itself, whose
  `__init__` imports the public API)."""
  seen, todo = set(), [start]
  while todo:
    for target in graph.get(todo.pop(), ()):
      if target not in seen and not (skip_package and target == "vae_jax"):
        seen.add(target)
        todo.append(target)
  return seen


def test_the_package_has_no_import_cycles():
  graph = _graph()
  # vae_jax/__init__.py is the public API: it imports the rest, nothing imports it for a name.
  graph = {m: {t for t in targets if t != "vae_jax"} for m, targets in graph.items()}
  cycles = {m: sorted(t for t in graph[m] if m in _reachable(graph, t)) for m in graph
            if m in _reachable(graph, m)}
  assert not cycles, f"modules on an import cycle (and the imports that close it): {cycles}"


def test_the_data_readers_import_no_model_or_training_code():
  graph = _graph()
  for reader in ("vae_jax.data", *(m for m in graph if m.startswith("vae_jax.sources."))):
    reached = _reachable(graph, reader)
    assert not [m for m in reached if _within(m, MODELS)], reader


@pytest.mark.parametrize("user", ["vae_jax.trained", "vae_jax.evaluation", "vae_jax.latent",
                                  "vae_jax.explorer", "vae_jax.figures"])
def test_using_a_trained_model_imports_no_training_code(user):
  reached = _reachable(_graph(), user)
  assert not [m for m in reached if _within(m, TRAINING)], user


@pytest.mark.slow
def test_load_evaluate_and_interpolate_import_no_optimizer(trained_workdir):
  """In a fresh process: what a notebook does with a trained model imports no optax and none
  of the training modules."""
  script = f"""
import json, sys
import jax, vae_jax
model = vae_jax.load({str(trained_workdir)!r})
test = vae_jax.data.load(vae_jax.data.settings(model.config)).test.images[:8]
vae_jax.evaluate(model, test, k=2, key=jax.random.key(0), progress=False)
vae_jax.interpolate(model, test[:2], test[2:4], num_steps=3)
training = {TRAINING!r}
print(json.dumps(sorted(m for m in sys.modules if m == "optax" or m in training)))
"""
  result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
  assert result.returncode == 0, result.stderr
  assert json.loads(result.stdout.splitlines()[-1]) == []


@pytest.mark.slow
def test_vae_jax_evaluate_is_the_function_and_the_old_commands_still_run():
  import vae_jax  # pylint: disable=g-import-not-at-top
  assert callable(vae_jax.evaluate) and callable(vae_jax.sample)
  with pytest.raises(ImportError, match="vae_jax.evaluate is a function"):
    import vae_jax.evaluate  # pylint: disable=g-import-not-at-top,import-outside-toplevel,unused-import
  assert callable(vae_jax.evaluate)  # The failed import rebound nothing.
  result = subprocess.run([sys.executable, "-m", "vae_jax.sample", "--help"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
  assert result.returncode == 0 and "--num" in result.stdout
