"""The commands of the guides in docs/ run as written, scaled down (tests/doc_commands.py)."""
import pytest

from doc_commands import assert_pages_run

PAGES = ["your-images.md", "many-models.md", "latent-space.md", "evaluation.md",
         "disentanglement.md", "scale-out.md", "speed.md"]


@pytest.mark.slow
def test_commands_run(tmp_path):
  assert_pages_run(PAGES, tmp_path)
