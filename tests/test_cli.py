"""The `vae-jax` command: the list of commands, --help, configs by name, one-line errors."""
import json
import pathlib
import subprocess
import sys

import pytest

from conftest import REPO
from conftest import vae_jax_in_process
from vae_jax import configs
from vae_jax.configs import tiny
from vae_jax.errors import UsageError

COMMANDS = ["train", "train-prior", "evaluate", "sample", "interpolate", "latent-map", "explore",
            "traverse", "disentanglement"]
# The console script that `pip install -e .` puts next to the interpreter.
VAE_JAX = str(pathlib.Path(sys.executable).parent / "vae-jax")
PYTHON_M = [sys.executable, "-m", "vae_jax"]


def _run(*command: str, cwd=REPO) -> subprocess.CompletedProcess:
  assert pathlib.Path(VAE_JAX).exists(), "no vae-jax script: pip install -e . again"
  return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300)


def _one_error_line(result: subprocess.CompletedProcess) -> str:
  """The single `error: ...` line a failed command printed on stderr, checked."""
  assert result.returncode == 2, (result.stdout, result.stderr)
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
  return lines[0]


@pytest.mark.slow
@pytest.mark.parametrize("command", [[VAE_JAX, "--help"], [*PYTHON_M, "--help"]])
def test_the_command_lists_its_subcommands(command):
  result = _run(*command)
  assert result.returncode == 0, result.stderr
  listed = [line.split()[0] for line in result.stdout.splitlines() if line.startswith("  ")]
  assert listed == COMMANDS


def test_no_command_is_a_usage_error_listing_the_commands():
  status, out, err = vae_jax_in_process()
  assert (status, out) == (2, "")
  assert err.startswith("usage: vae-jax COMMAND [--flag=value ...]")
  assert [line.split()[0] for line in err.splitlines() if line.startswith("  ")] == COMMANDS


@pytest.mark.slow
def test_an_unknown_command_exits_2_naming_the_known_ones():
  line = _one_error_line(_run(VAE_JAX, "smaple"))
  assert line == ("error: unknown command 'smaple'; vae-jax runs one of: "
                  "train, train-prior, evaluate, sample, interpolate, latent-map, explore, "
                  "traverse, disentanglement")


HELP_FLAGS = {
    "train": ["--workdir", "--config", "--coordinator_address", "--num_processes"],
    "train-prior": ["--workdir", "--config"],
    "evaluate": ["--workdir", "--step", "--out", "--k", "--split", "--sample_chunk"],
    "sample": ["--workdir", "--step", "--out", "--num", "--seed"],
    "interpolate": ["--workdir", "--step", "--out", "--from_digit", "--to_index", "--[no]gif"],
    "latent-map": ["--workdir", "--step", "--out", "--size"],
    "explore": ["--workdir", "--step", "--model", "--port", "--host", "--points"],
    "traverse": ["--workdir", "--step", "--out", "--model", "--index", "--steps", "--limit"],
    "disentanglement": ["--workdir", "--step", "--out", "--model", "--seed", "--scale",
                        "--dci_estimator"],
}


@pytest.mark.slow
@pytest.mark.parametrize("command", COMMANDS)
def test_help_shows_every_flag_of_the_command_and_exits_0(command):
  result = _run(VAE_JAX, command, "--help")
  assert result.returncode == 0, result.stderr
  assert f"vae-jax {command} --workdir=DIR" in result.stdout  # The docstring's usage line.
  for flag in HELP_FLAGS[command]:
    assert f"  {flag}:" in result.stdout, flag
  assert "--verbosity" not in result.stdout  # absl's own flags wait for --helpfull.


@pytest.mark.slow
@pytest.mark.parametrize("command", ["train", "evaluate"])
def test_python_m_vae_jax_train_and_evaluate_show_the_same_help(command):
  result = _run(sys.executable, "-m", f"vae_jax.{command}", "-h")
  assert result.returncode == 0, result.stderr
  for flag in HELP_FLAGS[command]:
    assert f"  {flag}:" in result.stdout, flag


@pytest.mark.slow
def test_helpfull_shows_every_module_and_exits_0():
  result = _run(*PYTHON_M, "train", "--helpfull")
  assert result.returncode == 0, result.stderr
  assert "  --config:" in result.stdout and ",--verbosity:" in result.stdout


@pytest.mark.slow
def test_a_named_config_trains_from_outside_the_repository(tmp_path):
  result = _run(VAE_JAX, "train", "--workdir=run", "--config=tiny", "--config.num_epochs=1",
                cwd=tmp_path)
  assert result.returncode == 0, result.stderr
  config = json.loads((tmp_path / "run" / "config.json").read_text())
  expected = tiny.get_config()
  assert (config["hidden"], config["latents"], config["num_epochs"]) == (expected.hidden,
                                                                       expected.latents, 1)
  assert "epoch   1/1" in result.stdout


BROKEN_CONFIGS = {
    "syntax error": ("def get_config(:\n", "SyntaxError: "),
    "no get_config": ("CONFIG = {}\n", "it defines no get_config()"),
    "failing import": ("import no_such_module\n", "ModuleNotFoundError: "),
    "get_config fails": ("def get_config():\n  return 1 / 0\n",
                         "get_config() raised ZeroDivisionError: division by zero"),
    "not a ConfigDict": ("def get_config():\n  return {}\n", "returned a dict, not"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(BROKEN_CONFIGS))
def test_a_config_that_cannot_load_is_one_line_naming_the_file(tmp_path, case):
  source, why = BROKEN_CONFIGS[case]
  (tmp_path / "broken.py").write_text(source)
  result = _run(*PYTHON_M, "train", "--workdir=run", "--config=broken.py", cwd=tmp_path)
  line = _one_error_line(result)
  assert line.startswith("error: cannot load config broken.py: ") and why in line, line
  assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_an_unknown_flag_keeps_its_quotes(tmp_path):
  line = _one_error_line(_run(*PYTHON_M, "sample", f"--workdir={tmp_path}", "--nmu=3"))
  assert line.startswith("error: Unknown command line flag 'nmu'"), line


@pytest.mark.slow
def test_importing_the_commands_leaves_the_latent_functions_in_place():
  """`vae_jax.sample` and `vae_jax.interpolate` stay functions whatever is imported."""
  code = ("import vae_jax, vae_jax.latent, vae_jax.cli, vae_jax.commands.{}; "
          "assert vae_jax.sample is vae_jax.latent.sample, vae_jax.sample; "
          "assert vae_jax.interpolate is vae_jax.latent.interpolate, vae_jax.interpolate")
  for command in ("sample", "interpolate"):  # One per process: both define --workdir.
    result = _run(sys.executable, "-c", code.format(command))
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("name", ["tiny", "tiny.py", "default", "vae_jax/configs/tiny.py"])
def test_configs_are_found_by_name_or_path(name, monkeypatch):
  monkeypatch.chdir(REPO)
  assert configs.path_of(name).resolve() == configs.FOLDER / pathlib.Path(name).with_suffix(
      ".py").name


def test_a_shipped_name_works_from_any_directory_and_loads_that_config(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  assert configs.load("tiny") == tiny.get_config()
  with pytest.raises(UsageError, match=r"^cannot load config vae_jax/configs/tiny.py: no such "
                     r"file, and no shipped config of that name \(default, iwae_paper, tiny, "
                     r"vampprior_paper\)$"):
    configs.path_of("vae_jax/configs/tiny.py")


@pytest.mark.slow
def test_running_out_of_device_memory_is_one_line_naming_the_flags(tmp_path):
  """XLA's RESOURCE_EXHAUSTED (a model, batch or IWAE chunk beyond the device's
  memory) is one line and exit 2, not a traceback. The error is XLA's own, from a
  16 TB buffer that XLA refuses before touching memory; a real model that
  outgrows this machine's memory would meet the kernel's OOM killer first."""
  program = ("import jax.numpy as jnp\n"
             "from vae_jax import cli\n"
             "def main(argv):\n"
             "  jnp.ones((1 << 42,)).block_until_ready()\n"
             "cli.run_command(main)\n")
  line = _one_error_line(_run(sys.executable, "-c", program, cwd=tmp_path))
  assert line.startswith("error: out of device memory (") and "--config.batch_size" in line, line


@pytest.mark.slow
@pytest.mark.parametrize("old, new", [("interpolate", "interpolate"), ("sample", "sample"),
                                      ("latent_map", "latent-map"), ("evaluate", "evaluate")])
def test_an_older_readmes_python_m_command_is_still_the_command(old, new):
  """`python -m vae_jax.sample` (an older README's) runs `vae-jax sample`: the same output."""
  old_name, command = (_run(sys.executable, "-m", module, *args, "--workdir=w")
                       for module, args in ((f"vae_jax.{old}", ()), ("vae_jax", (new,))))
  assert old_name.returncode == command.returncode == 2
  assert old_name.stderr == command.stderr
  assert command.stderr.strip().splitlines() == [
      "error: no trained model in w: it needs config.json and a checkpoint (train one with "
      "vae-jax train --workdir=...)"]
