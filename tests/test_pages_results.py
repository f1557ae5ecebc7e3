"""The commands of docs/results.md run as written, scaled down (tests/doc_commands.py)."""
import pytest

from doc_commands import run_pages

PAGES = ["results.md"]


@pytest.mark.slow
def test_commands_run(tmp_path):
  ran, failures = run_pages(PAGES, tmp_path)
  assert ran, "these pages have no runnable command in a ```sh block"
  assert not failures, "\n\n".join(failures)
