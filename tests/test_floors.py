"""pyproject.toml's version floors and .ci/floors.txt, which CI installs to test them, agree."""
import tomllib

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from conftest import REPO


def _floors_in_pyproject() -> dict[str, Version]:
  project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
  requirements = [*project["dependencies"],
                  *(r for extra in project["optional-dependencies"].values() for r in extra)]
  floors = {}
  for text in requirements:
    requirement = Requirement(text)
    if canonicalize_name(requirement.name) == canonicalize_name(project["name"]):
      continue  # An extra of this package, such as vae_jax[tfds].
    lower = [Version(s.version) for s in requirement.specifier if s.operator == ">="]
    assert lower, f"pyproject.toml: {text!r} has no floor (>=)"
    floors[canonicalize_name(requirement.name)] = max(lower)
  return floors


def _pins_in_floors_txt() -> dict[str, Version]:
  pins = {}
  for line in (REPO / ".ci" / "floors.txt").read_text().splitlines():
    line = line.split("#")[0].strip()
    if line:
      name, version = line.split("==")
      pins[canonicalize_name(name)] = Version(version)
  return pins


def test_every_direct_dependency_is_pinned_at_its_floor():
  assert _pins_in_floors_txt() == _floors_in_pyproject()
