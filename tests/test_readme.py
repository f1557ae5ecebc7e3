"""README.md's commands run (with index.md's and Getting started's, the pages a new user
reads first), and the rules of tests/doc_commands.py, which runs every page's commands.

tests/test_pages_*.py run the other docs pages' commands, a group of pages per file.
"""
import pathlib
import sys

import pytest

from conftest import REPO
from doc_commands import (CI_SCRIPT, DOCS, SKIP_BLOCK, _vae_jax_command, _values, nav_pages,
                          page_commands, plan, assert_pages_run, shell_commands)

PAGES = ["README.md", "index.md", "getting-started.md"]


def test_every_docs_page_is_in_the_nav():
  """So that the site links it and its commands run (tests/doc_commands.py)."""
  on_disk = {p.relative_to(DOCS) for p in DOCS.rglob("*.md")}
  assert on_disk == {p.relative_to(DOCS) for p in nav_pages()}


@pytest.mark.slow
def test_readme_commands_run(tmp_path):
  """The README's, index.md's and Getting started's commands exit with status 0, in order."""
  assert_pages_run(PAGES, tmp_path)


def test_every_page_with_commands_runs_in_some_test():
  """A new docs page with commands joins a group of tests/test_pages_*.py (or this file)."""
  grouped = set(PAGES)
  for path in pathlib.Path(__file__).parent.glob("test_pages_*.py"):
    grouped |= set(_pages_of(path))
  for page, command in page_commands():
    assert page.name in grouped, f"{page.name}:{command.line} runs in no test of tests/"


def _pages_of(path: pathlib.Path) -> list[str]:
  """The PAGES = [...] list of a test_pages_*.py file, read without importing it."""
  import ast  # pylint: disable=g-import-not-at-top
  for node in ast.parse(path.read_text()).body:
    if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "PAGES":
      return ast.literal_eval(node.value)
  return []


def test_setup_commands_are_what_ci_runs():
  """The install and test commands of every 'Set up' section are those .ci/run runs."""
  setup = [(p, c) for p, c in page_commands() if "set up" in c.section.lower()]
  if not setup:
    pytest.skip("the README has no 'Set up' section with a ```sh block")
  ci_lines = {_normalised(line) for line in CI_SCRIPT.read_text().splitlines()}
  for page, command in setup:
    normalised = _normalised(command.text)
    if normalised.startswith(("pip install", "pytest")):
      assert normalised in ci_lines, (f"{page.relative_to(REPO)}:{command.line}: "
                                      f"`{command.text}` is not in .ci/run")


def _normalised(line: str) -> str:
  """`python -m pip install -q X` -> `pip install X`: the same command, quiet or not."""
  words = [w for w in line.split("#")[0].split() if w not in ("-q", "-qq")]
  if words[:2] == ["python", "-m"] or words[:2] == ["python3", "-m"]:
    words = words[2:]
  return " ".join(words)


# --- The convention, on an example ------------------------------------------

_EXAMPLE = """\
# Demo

## Set up

```sh
pip install -e ".[test]"
python -m pytest -q
```

    vae-jax sample|interpolate --workdir=/tmp/vae     # indented: never run

```sh
$ vae-jax train --workdir=/tmp/vae
python -m vae_jax.train --workdir=runs/fashion --config.dataset=fashion_mnist \\
    --config.data_dir=/data/fashion --config.num_epochs=10   # any IDX folder
vae-jax evaluate --workdir=/tmp/vae --k=100 --step=4680
XLA_FLAGS=--xla_force_host_platform_device_count=4 python -m vae_jax train --workdir=/tmp/v4
python -m vae_jax.train --workdir=/tmp/vae --config.dataset=mnist
vae-jax train --workdir=/tmp/gpu      # needs a GPU
python -m vae_jax.train --workdir=/shared/vae --num_processes=2 --process_id=0
python experiments/bench_train.py
```

<!-- readme-test: skip -->
```bash
vae-jax sample --workdir=/content/vae
```

```text
vae-jax latent-map --workdir=/tmp/vae
```
"""


def test_the_convention_on_an_example(tmp_path):
  commands = shell_commands(_EXAMPLE)
  plans = [plan(c, tmp_path) for c in commands]
  skips = [(c.line, p.skip) for c, p in zip(commands, plans) if p.skip]
  assert skips == [(6, "installs"), (7, "the test suite itself"),
                   (18, "downloads a dataset"), (19, "needs a GPU"),
                   (20, "several processes"), (21, "not a vae_jax command"),
                   (26, "its block is marked " + SKIP_BLOCK)]
  run = {c.line: p for c, p in zip(commands, plans) if not p.skip}
  assert list(run) == [13, 14, 16, 17]
  vae_jax_bin = str(pathlib.Path(sys.executable).parent / "vae-jax")
  assert run[13].argv == [vae_jax_bin, "train", "--config=tiny", f"--workdir={tmp_path}/tmp/vae",
                          "--config.num_epochs=1"]
  assert run[14].argv[3:] == ["--config=tiny", "--workdir=runs/fashion",
                              "--config.dataset=fashion_mnist", "--config.data_dir=/data/fashion",
                              "--config.num_epochs=2"]
  assert run[14].data_dir == "/data/fashion"
  assert commands[3].comment == "any IDX folder"
  assert run[16].argv == [vae_jax_bin, "evaluate", f"--workdir={tmp_path}/tmp/vae", "--k=8",
                          "--num_examples=50"]
  assert run[17].env == {"XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
  assert run[17].argv[:4] == [sys.executable, "-m", "vae_jax", "train"]
  assert run[17].workdir == f"{tmp_path}/tmp/v4"


def _kept_steps(flags: list[str]) -> list[int] | None:
  """The checkpoint steps a train command with `flags` keeps at full size (as written, not
  scaled down); None where its data is not the shipped digits (not read here)."""
  from vae_jax import configs  # pylint: disable=g-import-not-at-top
  from vae_jax import data  # pylint: disable=g-import-not-at-top
  values = _values(flags)
  config = configs.load(values.get("config", "default"))
  for name, value in values.items():
    field = name.removeprefix("config.")
    if name.startswith("config.") and "." not in field:
      config[field] = type(config[field])(value)
  if config.dataset != data.OFFLINE_DATASET or config.data_dir:
    return None  # Other data, or none named (full MNIST online, the digits offline).
  images = len(data.load(data.settings(config)).train.images)
  per_epoch = images // config.batch_size
  saved = [e * per_epoch for e in range(1, config.num_epochs + 1)
           if e % config.checkpoint_every_epochs == 0 or e == config.num_epochs]
  return saved[-config.keep_checkpoints:]


def test_a_documented_step_is_one_the_pages_run_keeps():
  """`--step=N` is dropped when the pages run scaled down: checked here against the steps
  the train command of its workdir keeps at full size."""
  kept, checked = {}, 0
  for page, command in page_commands():
    words = command.text.split()
    _, name, flags = _vae_jax_command(words)
    workdir = _values(flags).get("workdir")
    if name == "train" and workdir and "--help" not in flags:
      kept[workdir] = _kept_steps(flags)
    step = _values(flags).get("step")
    if step is not None and kept.get(workdir) is not None:
      assert int(step) in kept[workdir], (
          f"{page.name}:{command.line}: --step={step}, and the run in {workdir} keeps "
          f"steps {kept[workdir]}")
      checked += 1
  assert checked, "no documented --step was checked"
