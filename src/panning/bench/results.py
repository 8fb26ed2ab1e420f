"""A grid's results table: its typed columns (:class:`ResultRow`), written and read back."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from panning.errors import UserError
from panning.io import write_atomic
from panning.training import RunResult

# Version of the results layout (cell folders, cell keys and result rows). Rows without it are
# format 1, whose keys hold a method's options and the screening as the config wrote them, so a
# changed default silently kept its old cells; format 2 keys hold every resolved value.
RESULTS_FORMAT = 2


@dataclass(frozen=True)
class ResultRow:
    """One row of a grid's ``results.csv``: its columns, in order, with their types.

    ``options`` and ``layer_density`` are JSON text; accuracies and sparsities are fractions.

    Examples:
        >>> ResultRow.parse({"seed": "2", "test_accuracy": "0.98", "dead": "False", "label": "snip"}).seed
        2
        >>> RESULT_COLUMNS[:3]
        ('model', 'dataset', 'method')
    """

    model: str | None = None
    dataset: str | None = None
    method: str | None = None
    label: str | None = None
    variant: str | None = None
    options: str | None = None
    sparsity: float | None = None
    nominal_sparsity: float | None = None
    effective_sparsity: float | None = None
    collapsed: bool | None = None
    seed: int | None = None
    iterations: int | None = None
    prune_seconds: float | None = None
    train_seconds: float | None = None
    epochs: int | None = None
    test_accuracy: float | None = None
    val_accuracy: float | None = None
    dead: bool | None = None
    layer_density: str | None = None
    version: str | None = None
    commit: str | None = None
    device: str | None = None
    threads: int | None = None
    status: str | None = None
    error: str | None = None
    cell: str | None = None
    format: int | None = None

    @classmethod
    def parse(cls, values: Mapping[str, Any]) -> ResultRow:
        """A row from text or JSON values (a CSV row, a JSONL entry); a missing column is None."""
        parsed = {}
        for column in RESULT_COLUMNS:
            try:
                parsed[column] = _parse_value(_COLUMN_TYPES[column], values.get(column))
            except (TypeError, ValueError, KeyError):
                kind = _COLUMN_TYPES[column].__name__
                raise UserError(f"column {column} holds {values.get(column)!r}, which is not a {kind}") from None
        for column in _FRACTIONS:
            value = parsed[column]
            if value is not None and not 0 <= value <= 1:  # NaN fails too
                raise UserError(f"column {column} holds {value!r}, which is not a fraction in [0, 1]")
        return cls(**parsed)

    def as_dict(self) -> dict[str, Any]:
        return {column: getattr(self, column) for column in RESULT_COLUMNS}


RESULT_COLUMNS = tuple(f.name for f in dataclasses.fields(ResultRow))
_FRACTIONS = ("sparsity", "nominal_sparsity", "effective_sparsity", "test_accuracy", "val_accuracy")

# The columns a run's metrics fill (the fields of RunResult of the same name), where the cell
# itself does not say: model, method, options, epochs... come from the cell.
RUN_COLUMNS = tuple(column for column in RESULT_COLUMNS if column in RunResult.__annotations__)


# Each column's value type (the non-None member of its annotation).
_COLUMN_TYPES: dict[str, type] = {
    name: next(t for t in typing.get_args(hint) if t is not type(None))
    for name, hint in typing.get_type_hints(ResultRow).items()
}


def _parse_value(kind: type, value: Any) -> Any:
    if value is None or value == "":
        return None
    if kind is bool:
        if isinstance(value, bool):
            return value
        # A spreadsheet saves True/False as TRUE/FALSE; anything else is no bool (not silently False).
        return {"true": True, "false": False}[str(value).strip().lower()]
    if kind is int:
        return int(float(value))
    return float(value) if kind is float else value


def write_results(out: str | os.PathLike[str], rows: Iterable[Mapping[str, Any]]) -> tuple[Path, Path]:
    """Write ``results.csv`` and ``results.jsonl`` (same rows, same columns) atomically.

    Examples:
        >>> import tempfile
        >>> csv_path, _ = write_results(tempfile.mkdtemp(), [{"model": "lenet5", "status": "ok"}])
        >>> csv_path.read_text().splitlines()[1].startswith("lenet5,")
        True
    """
    out_dir = Path(out)
    rows = [{column: row.get(column) for column in RESULT_COLUMNS} for row in rows]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(RESULT_COLUMNS), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    csv_path, jsonl_path = out_dir / "results.csv", out_dir / "results.jsonl"
    text = buffer.getvalue()
    write_atomic(csv_path, lambda tmp: tmp.write_text(text))
    lines = "".join(json.dumps(row, sort_keys=True) + "\n" for row in rows)
    write_atomic(jsonl_path, lambda tmp: tmp.write_text(lines))
    return csv_path, jsonl_path


def read_results(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Rows of a ``results.csv`` or ``results.jsonl``, with numbers parsed and every column present.

    Rows written by an older layout read with the missing columns as ``None``; a newer layout
    than this version knows is refused with a message.

    Examples:
        >>> import tempfile
        >>> cell = {"model": "lenet5", "dataset": "mnist", "method": "snip", "sparsity": 0.99}
        >>> csv_path, _ = write_results(tempfile.mkdtemp(), [{**cell, "seed": 2, "test_accuracy": 0.98}])
        >>> row = read_results(csv_path)[0]
        >>> row["seed"], row["test_accuracy"], row["status"]
        (2, 0.98, None)
    """
    file = Path(path)
    if not file.is_file():
        raise UserError(f"no results file at {file}; run `panning bench CONFIG` first")
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UserError(
            f"{file} is not a text file; pass the results.csv or results.jsonl of `panning bench`"
        ) from None
    if file.suffix == ".jsonl":
        raw = []
        for number, line in enumerate(text.splitlines(), start=1):
            try:
                raw += [json.loads(line)] if line.strip() else []
            except json.JSONDecodeError as error:
                raise UserError(
                    f"{file}, line {number}: not JSON ({error.msg}); rerun `panning bench ... --collect`"
                ) from None
    elif file.suffix == ".csv":
        raw = list(csv.DictReader(io.StringIO(text)))
    else:
        raise UserError(f"{file}: results must be a .csv or .jsonl file written by `panning bench`")
    if raw and not {"model", "method", "sparsity", "test_accuracy"} <= set(raw[0]):
        raise UserError(f"{file} is not a results table of `panning bench` (no model/method/sparsity columns)")
    rows = []
    for number, entry in enumerate(raw, start=1):
        if not isinstance(entry, Mapping):
            raise UserError(f"{file}, row {number}: not a table row")
        try:
            row = ResultRow.parse(entry).as_dict()
        except UserError as error:
            raise UserError(
                f"{file}, row {number}: {error}; rerun `panning bench ... --collect` to rewrite it"
            ) from None
        for column in ("layer_density", "options"):
            try:
                json.loads(row[column]) if isinstance(row[column], str) else None
            except json.JSONDecodeError:
                raise UserError(
                    f"{file}, row {number}: column {column} is not JSON; rerun `panning bench ... --collect`"
                ) from None
        missing = [column for column in ("model", "dataset", "method", "sparsity") if row[column] is None]
        if missing:
            raise UserError(f"{file}, row {number}: no {', '.join(missing)}; rerun `panning bench ... --collect`")
        row["format"] = row["format"] or 1
        if row["format"] > RESULTS_FORMAT:
            raise UserError(
                f"{file} was written by a newer panning (results format {row['format']}); upgrade panning to read it"
            )
        row["label"] = row["label"] or row["method"]
        rows.append(row)
    return rows
