"""Every docstring example in the package runs and shows what it says."""

from __future__ import annotations

import doctest
import importlib
import pkgutil
import re
import shlex
import subprocess
import sys
from pathlib import Path

import click
import pytest

import panning
from conftest import write_mnist
from panning.cli import cli

SUBMODULES = (m.name for m in pkgutil.walk_packages(panning.__path__, "panning.") if m.name != "panning.__main__")
MODULES = ["panning", *sorted(SUBMODULES)]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0, f"{result.failed} docstring example(s) of {name} failed (run doctest on it)"


REPO = Path(__file__).resolve().parents[1]
# The README and every page of the documentation, as a reader meets them.
PAGES = ["README.md", *sorted(str(p.relative_to(REPO)) for p in (REPO / "docs").rglob("*.md"))]


def _blocks(page: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", (REPO / page).read_text(), re.S)


@pytest.mark.slow
@pytest.mark.parametrize("page", [page for page in PAGES if _blocks(page, "python")])
def test_the_python_examples_of_every_page_run(
    page: str, data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every Python block of a page, in order, in one namespace (as a reader would paste them)."""
    write_mnist(data_root / "mnist", train=5200, test=100)  # the default validation split takes 5,000
    monkeypatch.chdir(tmp_path)
    scope: dict[str, object] = {}
    for number, block in enumerate(_blocks(page, "python")):
        exec(compile(block, f"{page} (Python block {number})", "exec"), scope)
        if (page, number) == ("docs/guide/python.md", 0):
            masks = scope["masks"]
            assert isinstance(masks, panning.Masks) and masks.kept() == 4305
            assert (tmp_path / "m.safetensors").is_file()


def _page_commands() -> list[str]:
    """Every `panning ...` (or `torchrun ... -m panning ...`) command of the pages' shell blocks
    (continuations joined, comments cut)."""
    commands = []
    for page in PAGES:
        for block in _blocks(page, "bash"):
            for line in block.replace("\\\n", " ").splitlines():
                line = re.sub(r"^(\w+=\S+\s+)+", "", line.split(" #", 1)[0].strip())  # VAR=value prefixes
                if line.startswith("torchrun ") and " -m panning " in line:
                    line = "panning " + line.split(" -m panning ", 1)[1]
                if line.startswith("panning ") and "..." not in line:
                    commands.append(line)
    return commands


@pytest.mark.parametrize("command", _page_commands())
def test_every_documented_command_parses(command: str) -> None:
    args = shlex.split(command)[1:]
    target: click.Command = cli
    while isinstance(target, click.Group):  # walk down to the command the line runs
        name, args = args[0], args[1:]
        found = target.get_command(click.Context(target), name)
        assert found is not None, f"no command {name!r} in {command!r}"
        target = found
    target.make_context(name, list(args))  # an unknown option or a bad value raises here


def test_the_modules_the_guides_name_work_after_a_plain_import() -> None:
    """The guides write ``panning.report.ScreeningTrace`` and ``panning.bench.run_grid`` after
    ``import panning`` (a fresh interpreter: other tests have imported those modules here)."""
    code = "import panning; panning.report.ScreeningTrace; panning.bench.run_grid; panning.executors.RayExecutor"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
