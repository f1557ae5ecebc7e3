"""The notebooks run top to bottom on CPU in their smoke setting (tiny config, mnist_sample).

The Colab notebook runs on 3 simulated devices, a count that divides neither
batch size of the tiny config, so its derivation of the batch sizes is tested;
its install cell, which only acts inside Colab, is run alone with Colab faked.
"""
import json
import subprocess
import sys
import types

import pytest

from conftest import REPO

papermill = pytest.importorskip("papermill")
COLAB = REPO / "experiments" / "colab_tpu.ipynb"
PLACEHOLDER = "https://github.com/OWNER/vae_jax.git"


@pytest.mark.slow
@pytest.mark.parametrize("name, devices", [("quickstart.ipynb", 1), ("colab_tpu.ipynb", 3)])
def test_notebook_runs(tmp_path, monkeypatch, name, devices):
  # The kernel is a subprocess: it inherits the environment.
  monkeypatch.setenv("XLA_FLAGS", f"--xla_force_host_platform_device_count={devices}")
  out = tmp_path / name
  papermill.execute_notebook(
      str(REPO / "experiments" / name), str(out), cwd=str(REPO), kernel_name="python3",
      parameters={"smoke": True, "workdir": str(tmp_path / "workdir")}, progress_bar=False)
  assert (tmp_path / "workdir" / "checkpoints").is_dir()
  import nbformat  # pylint: disable=g-import-not-at-top
  executed = nbformat.read(out, as_version=4)
  outputs = [o for c in executed.cells if c.cell_type == "code" for o in c.get("outputs", [])]
  assert not [o for o in outputs if o.get("output_type") == "error"]
  if name == "colab_tpu.ipynb":  # Tiny config: batch 64 and eval batch 500 round up to 66, 501.
    assert any("3 cpu device(s); batch 66 = 3 x 22" in o.get("text", "") for o in outputs)


def _run_install_cell(monkeypatch, repo_url: str, pip_result=None) -> list[list[str]]:
  """Runs the Colab notebook's install cell as if in Colab; returns the commands it ran."""
  cell = next(c for c in json.loads(COLAB.read_text())["cells"]
              if "google.colab" in "".join(c["source"]))
  calls = []

  def fake_run(argv, **kwargs):
    del kwargs
    calls.append(argv)
    return pip_result or subprocess.CompletedProcess(argv, 0, "", "")

  monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
  monkeypatch.setattr(subprocess, "run", fake_run)
  exec("".join(cell["source"]), {"repo_url": repo_url})  # pylint: disable=exec-used
  return calls


def test_colab_install_without_repo_url_stops_with_one_line(monkeypatch):
  with pytest.raises(Exception) as raised:
    _run_install_cell(monkeypatch, PLACEHOLDER)
  assert type(raised.value).__name__ == "Stop"
  shown = raised.value._render_traceback_()  # pylint: disable=protected-access
  assert len(shown) == 1 and "set repo_url" in shown[0] and "\n" not in shown[0]


def test_colab_install_is_one_pip_command_with_jax_tpu(monkeypatch):
  url = "https://example.org/someone/vae_jax.git"
  calls = _run_install_cell(monkeypatch, url)
  assert len(calls) == 1
  assert calls[0][1:4] == ["-m", "pip", "install"]
  assert "jax[tpu]" in calls[0] and f"vae_jax @ git+{url}" in calls[0]


def test_colab_install_failure_stops_with_one_line(monkeypatch, capsys):
  failed = subprocess.CompletedProcess([], 1, "", "ERROR: Repository not found.")
  with pytest.raises(Exception) as raised:
    _run_install_cell(monkeypatch, "https://example.org/nobody/vae_jax.git", failed)
  assert type(raised.value).__name__ == "Stop"
  assert "Repository not found" in capsys.readouterr().out
  assert len(raised.value._render_traceback_()) == 1  # pylint: disable=protected-access
