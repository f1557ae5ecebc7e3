"""The notebooks run top to bottom on CPU in their smoke setting (tiny config, mnist_sample)."""
import pytest

from conftest import REPO

papermill = pytest.importorskip("papermill")


@pytest.mark.parametrize("name", ["quickstart.ipynb", "colab_tpu.ipynb"])
def test_notebook_runs(tmp_path, name):
  out = tmp_path / name
  papermill.execute_notebook(
      str(REPO / "experiments" / name), str(out), cwd=str(REPO), kernel_name="python3",
      parameters={"smoke": True, "workdir": str(tmp_path / "workdir")}, progress_bar=False)
  assert (tmp_path / "workdir" / "checkpoints").is_dir()
  import nbformat  # pylint: disable=g-import-not-at-top
  executed = nbformat.read(out, as_version=4)
  errors = [o for c in executed.cells if c.cell_type == "code"
            for o in c.get("outputs", []) if o.get("output_type") == "error"]
  assert not errors
