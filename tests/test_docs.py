"""The documentation site's API reference covers exactly what `vae_jax` exports.

(.ci/run builds the site with `mkdocs build --strict`; tests/doc_commands.py runs
the pages' commands.)
"""
import re

import vae_jax
from conftest import REPO


def test_the_api_reference_documents_every_export_once():
  page = (REPO / "docs" / "api.md").read_text()
  documented = re.findall(r"^::: vae_jax\.(\w+)\s*$", page, re.M)
  assert sorted(documented) == sorted(vae_jax.__all__)


def _python_blocks(page: str) -> list[str]:
  return re.findall(r"^```python\n(.*?)^```", (REPO / "docs" / page).read_text(), re.M | re.S)


def test_the_latent_space_example_runs_as_written(trained_workdir):
  """Every name it uses is defined in it or exported by vae_jax."""
  block = _python_blocks("latent-space.md")[0].replace('"/tmp/vae"', repr(str(trained_workdir)))
  scope = {}
  exec(compile(block, "docs/latent-space.md", "exec"), scope)  # pylint: disable=exec-used
  assert scope["rows"].shape == (5, 9, 28, 28) and scope["digits"].shape == (64, 28, 28)


def test_every_test_the_docs_name_exists():
  """`file.py::test_name` in docs/ (the faults page's table): a renamed or moved test
  must take its documentation along. `::name` continues the file named before it."""
  defined = {path.name: set(re.findall(r"^def (test_\w+)", path.read_text(), re.M))
             for path in (REPO / "tests").glob("test_*.py")}
  named = []
  for page in sorted((REPO / "docs").glob("*.md")):
    current = None
    for file, test in re.findall(r"`(test_\w+\.py)?::(test_\w+)", page.read_text()):
      current = file or current
      named.append((page.name, current, test))
  assert named  # The faults page names its tests.
  missing = [n for n in named if n[2] not in defined.get(n[1], ())]
  assert missing == []
