"""Every docstring example in the package runs and shows what it says."""

from __future__ import annotations

import doctest
import importlib
import pkgutil
from pathlib import Path

import pytest

import panning
from conftest import write_mnist

SUBMODULES = (m.name for m in pkgutil.walk_packages(panning.__path__, "panning.") if m.name != "panning.__main__")
MODULES = ["panning", *sorted(SUBMODULES)]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0, f"{result.failed} docstring example(s) of {name} failed (run doctest on it)"


def test_the_readme_python_api_example_runs(data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("## Python API", 1)[1]
    block = section.split("```python\n", 1)[1].split("```", 1)[0]
    write_mnist(data_root / "mnist", train=5200, test=100)  # the default validation split takes 5,000
    monkeypatch.chdir(tmp_path)
    scope: dict[str, object] = {}
    exec(compile(block, "README.md (Python API)", "exec"), scope)
    masks = scope["masks"]
    assert isinstance(masks, panning.Masks) and masks.kept() == 4305
    assert (tmp_path / "m.safetensors").is_file()
