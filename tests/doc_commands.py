"""Runs the commands of README.md and of the docs/*.md pages as written, scaled down,
so that the front door and the documentation stay true (tests/test_readme.py and
tests/test_pages_*.py: one test file per group of pages, so that `pytest -n auto
--dist loadfile` runs the groups side by side).

A group's pages run in one sandbox, in the order of mkdocs.yml's `nav`, README.md
first. A page may use a workdir that an earlier page trains (a guide uses Getting
started's): the earlier page's train commands for it run first. Every docs/*.md
page must be in that nav.

The convention, for whoever edits README.md or a docs page:

  * Commands live in fenced blocks tagged ```sh (or bash, shell, console). Indented
    blocks and ```text or ```python blocks are never run: use them for output,
    pseudo-syntax (`vae-jax sample|interpolate`, `[--gif]`) and placeholders.
  * One command per line; a trailing `\\` continues it, a leading `$ ` is dropped, and
    `# ...` is a comment. Write flags as `--flag=value`.
  * What runs: every command that starts with `vae-jax` or `python -m vae_jax`
    (after optional `VAR=value` assignments), in README order, each in a subprocess;
    each must exit with status 0.
  * What is left alone, by what it is: installs (`pip`, `apt-get`, `python -m venv`,
    `. .venv/bin/activate`), the test suite itself (`pytest`), runs of several
    processes (`--coordinator_address`, `--num_processes`), downloads (a train
    command naming `dataset=mnist`, `fashion_mnist` or `tfds:...` without
    `data_dir`), and anything that is not a vae_jax command (benchmarks, tensorboard).
  * What is left alone, by a marker: a trailing comment that starts with `needs`
    (`# needs the network`, `# needs a GPU`, `# needs a TPU`), or the HTML comment
    `<!-- readme-test: skip -->` on the line just before a block's opening fence
    (the whole block; GitHub does not show it).
  * Scaled down: `train` gets `--config=tiny` (the shipped mnist_sample digits, a
    small MLP) where it names no config or `default`, at most 2 epochs and
    `--config.num_epochs=1` unless it sets them, `eval_iwae_k` at most 16;
    `evaluate` gets `--k=8 --num_examples=50` (or less where the README asks less);
    `--step=N` is dropped (a tiny run has other steps).
  * Sandboxed: commands run in an empty temporary folder, so relative paths land
    there; absolute `--workdir` and `--out` values, and any value under /tmp/, are
    moved into it; `$VAE_JAX_CACHE` points into it.
  * A command reading `--config.data_dir=DIR` is skipped where DIR does not exist
    (Debian's Fashion-MNIST, for example); a command on a workdir whose train
    commands were all skipped or failed is skipped too.
"""
import dataclasses
import os
import pathlib
import re
import shlex
import subprocess
import sys
import typing

from conftest import REPO

README = REPO / "README.md"
DOCS = REPO / "docs"
MKDOCS = REPO / "mkdocs.yml"
CI_SCRIPT = REPO / ".ci" / "run"
SHELL_TAGS = {"sh", "bash", "shell", "console"}
SKIP_BLOCK = "<!-- readme-test: skip -->"
TIMEOUT_S = 300
MAX_EPOCHS = 2
EVAL_LIMITS = {"k": 8, "num_examples": 50}
_INSTALLERS = ("pip", "pip3", "apt", "apt-get", "sudo", ".", "source", "conda", "git")
_PATH_FLAGS = ("workdir", "out")
_MULTI_PROCESS_FLAGS = ("coordinator_address", "num_processes", "process_id")
_DOWNLOADED = re.compile(r"^(mnist|fashion_mnist|tfds:.*)$")


@dataclasses.dataclass
class Command:
  """One README command: where it is, its words, and its trailing comment."""

  line: int  # 1-based line of the README where the command starts.
  text: str  # As written, continuation lines joined.
  section: str  # The heading above it.
  comment: str = ""
  skip_block: bool = False


class _Block(typing.NamedTuple):
  fence: str  # The opening ``` (or ~~~), which the closing one repeats.
  tag: str  # The language tag: sh, text, python, ...
  skipped: bool  # The line above the fence is SKIP_BLOCK.


_FENCE = re.compile(r"^\s*(```+|~~~+)\s*([\w-]*)")


def shell_commands(markdown: str) -> list[Command]:
  """The commands of the markdown's fenced shell blocks, in order."""
  commands, section, block, previous, pending = [], "", None, "", []
  for number, line in enumerate(markdown.splitlines(), 1):
    fence = _FENCE.match(line)
    if block is None:
      if fence:
        block = _Block(fence.group(1), fence.group(2).lower(), previous.strip() == SKIP_BLOCK)
      elif line.startswith("#"):
        section = line.lstrip("#").strip()
      previous = line if line.strip() else previous
    elif fence and line.strip() == block.fence:
      block, previous = None, ""
    elif block.tag in SHELL_TAGS:
      pending.append((number, line.strip()))
      if not line.rstrip().endswith("\\"):
        commands += _command(pending, section, block.skipped)
        pending = []
  return commands


def _command(lines: list[tuple[int, str]], section: str, skipped: bool) -> list[Command]:
  """The command on `lines` (number, text), joined at their `\\`; none for a comment line."""
  text = " ".join(line.rstrip("\\").strip() for _, line in lines).removeprefix("$ ")
  comment = re.search(r"(?:^|\s)#\s*(.*)$", text)
  words = text[:comment.start()].strip() if comment else text.strip()
  if not words:
    return []
  return [Command(lines[0][0], words, section, comment.group(1).strip() if comment else "",
                  skipped)]


@dataclasses.dataclass
class Plan:
  """How to run one command: argv and extra environment, or why not."""

  argv: list[str] = dataclasses.field(default_factory=list)
  env: dict[str, str] = dataclasses.field(default_factory=dict)
  skip: str = ""  # Why the command is not run; empty: it runs.
  workdir: str = ""  # The sandboxed --workdir, if any.
  trains: bool = False  # A train command (it writes its workdir).
  data_dir: str = ""  # --config.data_dir as written, if any.


def plan(command: Command, sandbox: pathlib.Path) -> Plan:
  """Classifies `command` and, for a vae_jax command, rewrites it to run in `sandbox`."""
  if command.skip_block:
    return Plan(skip="its block is marked " + SKIP_BLOCK)
  if command.comment.lower().startswith("needs"):
    return Plan(skip=command.comment)
  words = shlex.split(command.text)
  env = {}
  while words and re.match(r"^[A-Za-z_]\w*=", words[0]):
    name, value = words.pop(0).split("=", 1)
    env[name] = value
  if not words:
    return Plan(skip="no command")
  program, subcommand, rest = _vae_jax_command(words)
  if subcommand is None:
    return Plan(skip=_why_not_run(words))
  flags = _join_flag_values(rest)
  if {_flag_name(f) for f in flags} & set(_MULTI_PROCESS_FLAGS):
    return Plan(skip="several processes")
  if subcommand == "train" and _downloads(flags):
    return Plan(skip="downloads a dataset")
  flags = [_sandboxed(f, sandbox) for f in _scale_down(subcommand, flags)]
  values = _values(flags)
  return Plan(argv=[*program, *flags], env=env, workdir=values.get("workdir", ""),
              trains=subcommand == "train" and "--help" not in flags,
              data_dir=values.get("config.data_dir", ""))


def _vae_jax_command(words: list[str]) -> tuple[list[str], str | None, list[str]]:
  """Splits a vae_jax command into (installed program, command name, flags).

  `vae-jax train ...`, `python -m vae_jax train ...` and `python -m vae_jax.train
  ...` all have the name `train`; `vae-jax` alone has ''; other programs None.
  """
  if words[0] == "vae-jax":
    program, rest = [str(pathlib.Path(sys.executable).parent / "vae-jax")], words[1:]
  elif _is_python_module(words, "vae_jax"):
    program, rest = [sys.executable, "-m", "vae_jax"], words[3:]
  elif _is_python_module(words) and words[2].startswith("vae_jax."):
    name = words[2].removeprefix("vae_jax.").replace("_", "-")
    return [sys.executable, "-m", words[2]], name, words[3:]
  else:
    return [], None, []
  if rest and not rest[0].startswith("-"):
    return [*program, rest[0]], rest[0], rest[1:]
  return program, "", rest


def _is_python_module(words: list[str], module: str | None = None) -> bool:
  """Whether `words` is `python -m MODULE ...` (any module if None)."""
  return (words[0] in ("python", "python3") and words[1:2] == ["-m"] and len(words) > 2
          and module in (None, words[2]))


def _why_not_run(words: list[str]) -> str:
  module = words[2] if _is_python_module(words) else ""
  if words[0] in _INSTALLERS or module in ("pip", "venv"):
    return "installs"
  if words[0] == "pytest" or module == "pytest":
    return "the test suite itself"
  return "not a vae_jax command"


def _join_flag_values(words: list[str]) -> list[str]:
  """`--workdir DIR` -> `--workdir=DIR` for the path flags, so that they can be moved."""
  joined, i = [], 0
  while i < len(words):
    word = words[i]
    if (_flag_name(word) in _PATH_FLAGS and "=" not in word and i + 1 < len(words)
        and not words[i + 1].startswith("-")):
      joined.append(f"{word}={words[i + 1]}")
      i += 2
    else:
      joined.append(word)
      i += 1
  return joined


def _flag_name(word: str) -> str:
  return word.lstrip("-").split("=", 1)[0] if word.startswith("-") else ""


def _flag_item(word: str) -> tuple[str, str]:
  name, value = word.lstrip("-").split("=", 1)
  return name, value


def _values(flags: list[str]) -> dict[str, str]:
  """{name: value} of the `--name=value` flags."""
  return dict(_flag_item(f) for f in flags if f.startswith("-") and "=" in f)


def _downloads(flags: list[str]) -> bool:
  values = _values(flags)
  return bool(_DOWNLOADED.match(values.get("config.dataset", ""))) and not values.get(
      "config.data_dir")


def _scale_down(subcommand: str, flags: list[str]) -> list[str]:
  """The same command on a tiny model, few epochs and few importance samples."""
  flags = [f for f in flags if _flag_name(f) != "step"]
  if subcommand == "train":
    return _scale_down_train(flags)
  if subcommand == "evaluate":
    for name, limit in EVAL_LIMITS.items():
      flags = _capped(flags, name, limit, default=limit)
  return flags


def _scale_down_train(flags: list[str]) -> list[str]:
  if "--help" in flags or "--helpfull" in flags:
    return flags
  configs = [f for f in flags if _flag_name(f) == "config"]
  if not configs:
    flags = ["--config=tiny", *flags]
  flags = [("--config=tiny" if f in ("--config=default", "--config=default.py") else f)
           for f in flags]
  flags = _capped(flags, "config.num_epochs", MAX_EPOCHS, default=1)
  return _capped(flags, "config.eval_iwae_k", 16, default=None)


def _capped(flags: list[str], name: str, limit: int, default: int | None) -> list[str]:
  """Caps the integer flag `--name=N` at `limit`; appends `--name=default` if absent."""
  found, capped = False, []
  for f in flags:
    if _flag_name(f) == name and "=" in f:
      found = True
      f = f"--{name}={min(int(f.split('=', 1)[1]), limit)}"
    capped.append(f)
  if not found and default is not None:
    capped.append(f"--{name}={default}")
  return capped


def _sandboxed(flag: str, sandbox: pathlib.Path) -> str:
  """Moves absolute output paths and anything under /tmp/ into the sandbox."""
  if not flag.startswith("-") or "=" not in flag:
    return flag
  name, value = _flag_item(flag)
  if value.startswith("/tmp/") or (name in _PATH_FLAGS and os.path.isabs(value)):
    value = str(sandbox / value.lstrip("/"))
  return f"--{name}={value}"


# --- The README and the docs pages ------------------------------------------


def nav_pages() -> list[pathlib.Path]:
  """The docs pages in the order of mkdocs.yml's nav (`- Title: page.md` lines)."""
  if not MKDOCS.is_file():
    return []
  names = re.findall(r"^\s*-\s*(?:[^:\n]+:\s*)?([\w./-]+\.md)\s*$", MKDOCS.read_text(), re.M)
  return [DOCS / name for name in names]


def pages() -> list[pathlib.Path]:
  """README.md, then the docs pages: the files whose commands run."""
  return [README, *nav_pages()]


def page_commands() -> typing.Iterator[tuple[pathlib.Path, Command]]:
  for page in pages():
    for command in shell_commands(page.read_text()):
      yield page, command




def run_pages(names: list[str], tmp_path: pathlib.Path) -> tuple[int, list[str]]:
  """Runs the commands of the pages called `names` (README.md, getting-started.md, ...)
  in one sandbox under `tmp_path`: (how many ran, a message per failure).

  First come the earlier pages' train commands for the workdirs these pages use but
  do not train themselves, so a group of pages runs without the pages before it.
  """
  sandbox = tmp_path / "sandbox"
  sandbox.mkdir()
  # The session's persistent XLA cache (tests/conftest.py) stays in the environment:
  # most commands compile the same small programs as other tests and commands.
  env = dict(os.environ, PYTHONUNBUFFERED="1", MPLBACKEND="Agg",
             VAE_JAX_CACHE=str(sandbox / "cache"))
  trained = {}  # Workdir -> whether a train command wrote it (False: all skipped or failed).
  ran, failures = 0, []
  for page, command in _with_prerequisites(names, sandbox):
    step = plan(command, sandbox)
    step.skip = _why_skipped(step, trained, sandbox)
    ok = False
    if not step.skip:
      result = subprocess.run(step.argv, cwd=sandbox, env={**env, **step.env}, text=True,
                              capture_output=True, timeout=TIMEOUT_S, check=False)
      ran, ok = ran + 1, result.returncode == 0
      if not ok:
        failures.append(_failure(page, command, step, result))
    if step.trains and step.workdir:
      trained[step.workdir] = trained.get(step.workdir, False) or ok
  return ran, failures


def assert_pages_run(names: list[str], tmp_path: pathlib.Path) -> None:
  """The test of tests/test_readme.py and each tests/test_pages_*.py: `run_pages` ran
  some command, and every one exited with status 0."""
  ran, failures = run_pages(names, tmp_path)
  assert ran, "these pages have no runnable command in a ```sh block"
  assert not failures, "\n\n".join(failures)


def _with_prerequisites(names: list[str], sandbox: pathlib.Path) -> list[tuple[pathlib.Path, Command]]:
  """The commands of the pages `names`, after the earlier pages' train commands for the
  workdirs those commands use before (or without) training them."""
  chosen = [(p, c) for p, c in page_commands() if p.name in names]
  missing = set()
  trained_here = set()
  for _, command in chosen:
    step = plan(command, sandbox)
    if step.skip or not step.workdir:
      continue
    if step.trains:
      trained_here.add(step.workdir)
    elif step.workdir not in trained_here:
      missing.add(step.workdir)
  first = next((i for i, p in enumerate(pages()) if p.name in names), len(pages()))
  earlier = [(p, c) for p in pages()[:first] for c in shell_commands(p.read_text())]
  needed = [(p, c) for p, c in earlier
            if (step := plan(c, sandbox)).trains and step.workdir in missing]
  return needed + chosen


def _why_skipped(step: Plan, trained: dict[str, bool], sandbox: pathlib.Path) -> str:
  if step.skip:
    return step.skip
  # Relative to the sandbox the command runs in, not to this checkout (whose ignored
  # runs/ may hold what a README command expects another, unrun command to make).
  if step.data_dir and not (sandbox / step.data_dir).exists():
    return f"no {step.data_dir}"
  if not step.trains and trained.get(step.workdir) is False:
    return "no command that trains its workdir ran"
  return ""


def _failure(page: pathlib.Path, command: Command, step: Plan,
             result: subprocess.CompletedProcess) -> str:
  tail = "\n    ".join((result.stderr or result.stdout).strip().splitlines()[-8:])
  return (f"{page.relative_to(REPO)}:{command.line} ({command.section}): `{command.text}` exited with "
          f"{result.returncode}\n  ran: {shlex.join(step.argv)}\n    {tail}\n"
          "  Make it a real command, or move it out of the ```sh block or mark it "
          "(see tests/doc_commands.py).")
