"""Human-readable mask reports: per-layer kept counts, density and effective density."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from panning.connectivity import Connectivity
from panning.io import write_atomic


def _shape(shape: tuple[int, ...]) -> str:
    return "x".join(str(d) for d in shape)


def mask_table(
    masks: Mapping[str, torch.Tensor],
    report: Connectivity | None = None,
    prune_seconds: float | None = None,
) -> str:
    """A per-layer table of the masks (with effective density when ``report`` is given).

    Example:
        >>> print(mask_table({"fc.weight": torch.tensor([[True, False]])}))  # doctest: +NORMALIZE_WHITESPACE
        layer      shape  total  kept  density
        fc.weight  1x2        2     1  0.50000
        total                 2     1  0.50000
        nominal sparsity 0.500000
    """
    effective = {layer.name: layer for layer in report.layers} if report is not None else {}
    header = ["layer", "shape", "total", "kept", "density"] + (["effective", "eff. density"] if report else [])
    rows = []
    for name, mask in masks.items():
        kept = int(mask.sum())
        row = [name, _shape(tuple(mask.shape)), str(mask.numel()), str(kept), f"{kept / mask.numel():.5f}"]
        if report is not None:
            layer = effective[name]
            flag = "  COLLAPSED" if layer.collapsed else ""
            row += [str(layer.effective), f"{layer.effective_density:.5f}{flag}"]
        rows.append(row)
    total = sum(m.numel() for m in masks.values())
    kept = sum(int(m.sum()) for m in masks.values())
    footer = ["total", "", str(total), str(kept), f"{kept / total:.5f}"]
    if report is not None:
        footer += [str(report.effective), f"{report.effective / total:.5f}"]
    rows.append(footer)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        parts = [cells[0].ljust(widths[0]), cells[1].ljust(widths[1])]
        parts += [c.rjust(w) for c, w in zip(cells[2:], widths[2:])]
        return "  ".join(parts).rstrip()

    lines = [line(header)] + [line(r) for r in rows]
    summary = f"nominal sparsity {1 - kept / total:.6f}"
    if report is not None:
        summary += f", effective sparsity {report.effective_sparsity:.6f}"
        if report.collapsed:
            empty = ", ".join(report.collapsed_layers)
            summary += f"; LAYER COLLAPSE: the network is cut (no effective weight in {empty})"
        elif report.collapsed_layers:
            summary += f"; no effective weight in {', '.join(report.collapsed_layers)} (bypassed by a shortcut)"
    if prune_seconds is not None:
        summary += f"; screening time {prune_seconds:.2f} s"
    lines.append(summary)
    return "\n".join(lines)


TRACE_COLUMNS = (
    "step",
    "density",
    "kept",
    "nominal_sparsity",
    "effective_sparsity",
    "collapsed_layers",
    "stage",
    "w_synflow",
    "w_snip",
    "w_grasp",
    "loss",
    "grad_norm_sq",
    "seconds",
)


def write_trace(path: str | os.PathLike[str], rows: Sequence[Mapping[str, Any]]) -> None:
    """Write per-step screening records as CSV, atomically; columns a method did not fill stay empty.

    Example:
        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "trace.csv"
        >>> write_trace(path, [{"step": 1, "density": 0.5, "kept": 3}])
        >>> path.read_text().splitlines()[1]
        '1,0.5,3,,,,,,,,,,'
    """
    extra = sorted({key for row in rows for key in row} - set(TRACE_COLUMNS))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=[*TRACE_COLUMNS, *extra], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    text = buffer.getvalue()
    write_atomic(path, lambda tmp: tmp.write_text(text))
