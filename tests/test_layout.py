"""The size limits that keep the code readable (issue #18): short functions, a thin CLI."""

from __future__ import annotations

import ast
from pathlib import Path

SOURCE = Path(__file__).resolve().parents[1] / "src" / "panning"
MAX_FUNCTION_LINES = 80
MAX_CLI_MODULE_LINES = 400


def _long_functions(path: Path, root: Path = SOURCE) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            assert node.end_lineno is not None
            length = node.end_lineno - node.lineno + 1
            if length > MAX_FUNCTION_LINES:
                found.append(f"{path.relative_to(root)}:{node.lineno} {node.name} ({length} lines)")
    return found


def test_no_function_is_longer_than_the_limit() -> None:
    found = [entry for path in sorted(SOURCE.rglob("*.py")) for entry in _long_functions(path)]
    assert not found, f"functions over {MAX_FUNCTION_LINES} lines (split them): {found}"


def test_the_cli_modules_stay_wiring() -> None:
    sizes = {path.name: len(path.read_text().splitlines()) for path in (SOURCE / "cli").glob("*.py")}
    assert sizes, "no CLI modules found"
    assert max(sizes.values()) < MAX_CLI_MODULE_LINES, f"CLI modules of {MAX_CLI_MODULE_LINES}+ lines: {sizes}"


def test_the_limit_check_sees_a_long_function(tmp_path: Path) -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    (tmp_path / "long.py").write_text(f"def long():\n{body}\n")
    assert _long_functions(tmp_path / "long.py", tmp_path) == [f"long.py:1 long ({MAX_FUNCTION_LINES + 1} lines)"]
