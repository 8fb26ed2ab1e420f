"""Human-readable mask reports: per-layer kept counts, density and effective density."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from panning.connectivity import Connectivity


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
            summary += f"; LAYER COLLAPSE in {', '.join(report.collapsed_layers)} (the network is cut)"
    if prune_seconds is not None:
        summary += f"; screening time {prune_seconds:.2f} s"
    lines.append(summary)
    return "\n".join(lines)
