"""The commands of docs/families.md run as written, scaled down (tests/doc_commands.py)."""
import pytest

from doc_commands import assert_pages_run

PAGES = ["families.md"]


@pytest.mark.slow
def test_commands_run(tmp_path):
  assert_pages_run(PAGES, tmp_path)
