"""The documentation site's API reference covers exactly what `vae_jax` exports.

(.ci/run builds the site with `mkdocs build --strict`; tests/test_readme.py runs
the pages' commands.)
"""
import re

import vae_jax
from conftest import REPO


def test_the_api_reference_documents_every_export_once():
  page = (REPO / "docs" / "api.md").read_text()
  documented = re.findall(r"^::: vae_jax\.(\w+)\s*$", page, re.M)
  assert sorted(documented) == sorted(vae_jax.__all__)
