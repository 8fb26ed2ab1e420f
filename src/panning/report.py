"""Human-readable mask reports: per-layer kept counts, density and effective density."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from panning.connectivity import Connectivity, connectivity
from panning.errors import UserError, UserTypeError
from panning.io import write_atomic

if TYPE_CHECKING:
    from panning.screening.pruning import StepRecord


def _shape(shape: tuple[int, ...]) -> str:
    return "x".join(str(d) for d in shape)


def mask_table(
    masks: Mapping[str, torch.Tensor],
    report: Connectivity | None = None,
    prune_seconds: float | None = None,
) -> str:
    """A per-layer table of the masks (with effective density when ``report`` is given).

    Examples:
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

    Examples:
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


class ScreeningTrace:
    """A :func:`panning.prune` callback that records every step with the mask's connectivity then
    (what ``panning prune --trace`` writes); :meth:`write` saves it, :func:`plot_trace` draws it.

    Examples:
        >>> import panning, tempfile, pathlib
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> trace = ScreeningTrace(net, input_shape=(1, 4, 4))
        >>> masks = panning.prune(net, 0.9, "synflow", input_shape=(1, 4, 4), iterations=3, callback=trace)
        >>> [row["kept"] for row in trace.rows]
        [67, 31, 14]
        >>> trace.write(pathlib.Path(tempfile.mkdtemp()) / "trace.csv")
    """

    def __init__(self, model: torch.nn.Module, input_shape: Sequence[int]) -> None:
        self.model = model
        self.input_shape = tuple(input_shape)
        self.rows: list[dict[str, Any]] = []

    def __call__(self, record: StepRecord, masks: Mapping[str, torch.Tensor]) -> None:
        report = connectivity(self.model, masks, input_shape=self.input_shape)
        self.rows.append(
            {
                "step": record.step,
                "density": record.density,
                "kept": record.kept,
                "nominal_sparsity": report.nominal_sparsity,
                "effective_sparsity": report.effective_sparsity,
                "collapsed_layers": len(report.collapsed_layers),
                "seconds": record.seconds,
                **record.info,
            }
        )

    def write(self, path: str | os.PathLike[str]) -> None:
        """The steps so far as a CSV file (:func:`write_trace`)."""
        write_trace(path, self.rows)


def _groups(rows: Sequence[Mapping[str, Any]]) -> dict[tuple[str, str], list[Mapping[str, Any]]]:
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["model"], row["dataset"]), []).append(row)
    return groups


def _ordered(values: Sequence[Any]) -> list[Any]:
    return list(dict.fromkeys(values))


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, 0.0
    return mean, (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5


def _summarise(
    rows: Sequence[Mapping[str, Any]], column: str
) -> dict[tuple[str, float], tuple[float, float, int, int]]:
    """(label, sparsity) -> (mean, std, runs that count, runs failed)."""
    cells: dict[tuple[str, float], list[Mapping[str, Any]]] = {}
    for row in rows:
        cells.setdefault((row["label"], row["sparsity"]), []).append(row)
    out = {}
    for key, members in cells.items():
        values = [r[column] for r in members if r.get("status") == "ok" and r.get(column) is not None]
        failed = sum(r.get("status") != "ok" for r in members)
        mean, std = _mean_std(values) if values else (float("nan"), float("nan"))
        out[key] = (mean, std, len(values), failed)
    return out


def _accuracy_table(
    members: Sequence[Mapping[str, Any]], column: str, labels: Sequence[str], sparsities: Sequence[float]
) -> list[str]:
    """Markdown rows of mean ± std (%) per method and sparsity, the best mean of each column in bold.

    Dead runs (a constant prediction) stay in the mean and are also counted in the cell; a cell
    with fewer runs than the table's seeds (a grid in progress) says how many it has.
    """
    accuracy = _summarise(members, column)
    seeds = len(_ordered([r["seed"] for r in members]))
    best = {}
    for s in sparsities:
        finite = [accuracy[(label, s)][0] for label in labels if (label, s) in accuracy and accuracy[(label, s)][2]]
        best[s] = max(finite) if finite else None
    lines = ["| method | " + " | ".join(f"{s:g}" for s in sparsities) + " |", "|---|" + "---:|" * len(sparsities)]
    for label in labels:
        cells = []
        for s in sparsities:
            if (label, s) not in accuracy:
                cells.append("")
                continue
            mean, std, count, failed = accuracy[(label, s)]
            text = "–" if count == 0 else f"{100 * mean:.2f} ± {100 * std:.2f}"
            if count and mean == best[s]:
                text = f"**{text}**"
            dead = sum(
                1
                for r in members
                if r["label"] == label and r["sparsity"] == s and r.get("status") == "ok" and r.get("dead") is True
            )
            if dead:
                text += f" ({dead} dead)"
            if failed:
                text += f" ({failed} failed)"
            if 0 < count + failed < seeds:
                text += f" ({count + failed} of {seeds} runs)"
            cells.append(text)
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def results_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """Markdown tables of a benchmark's results: per model and dataset, final-epoch test accuracy
    (%, mean ± std over seeds) per method and sparsity with the best of each column in bold, the
    same for validation accuracy, then effective sparsity, dead networks and screening time.

    Examples:
        >>> rows = [{"model": "m", "dataset": "d", "label": "a", "sparsity": 0.9, "seed": s, "status": "ok",
        ...          "test_accuracy": 0.5 + s / 10, "effective_sparsity": 0.9, "prune_seconds": 1.0,
        ...          "dead": False, "collapsed": False} for s in (0, 1)]
        >>> print(results_table(rows).splitlines()[4])
        | a | **55.00 ± 7.07** |
    """
    if any(not isinstance(row, Mapping) for row in rows):
        raise UserTypeError("rows must be result rows (mappings), e.g. panning.bench.read_results(path)")
    sections = []
    pending = [r for r in rows if r.get("status") == "pending"]
    rows = [r for r in rows if r.get("status") != "pending"]
    for (model, dataset), members in _groups(rows).items():
        labels = _ordered([r["label"] for r in members])
        sparsities = sorted(_ordered([r["sparsity"] for r in members]))
        seeds = _ordered([r["seed"] for r in members])
        effective = _summarise(members, "effective_sparsity")
        seconds = _summarise(members, "prune_seconds")
        epochs = "/".join(str(e) for e in _ordered([r.get("epochs") for r in members]))
        lines = [
            f"### {model} on {dataset}: test accuracy (%), final epoch, mean ± std over {len(seeds)} seed(s), "
            f"{epochs} epoch(s)",
            "",
            *_accuracy_table(members, "test_accuracy", labels, sparsities),
            "",
            "Validation accuracy (%), final epoch (the split that chooses variants and settings):",
            "",
            *_accuracy_table(members, "val_accuracy", labels, sparsities),
        ]
        lines += [
            "",
            f"Effective sparsity (mean) and runs ending dead (constant prediction) of {len(seeds)}; "
            "screening seconds per run (mean over all sparsities):",
            "",
            "| method | " + " | ".join(f"{s:g}" for s in sparsities) + " | screening s |",
            "|---|" + "---:|" * (len(sparsities) + 1),
        ]
        for label in labels:
            cells = []
            for s in sparsities:
                mean, _, count, _ = effective.get((label, s), (float("nan"), 0.0, 0, 0))
                dead = sum(1 for r in members if r["label"] == label and r["sparsity"] == s and r.get("dead") is True)
                cells.append("–" if count == 0 else f"{mean:.4f}" + (f" ({dead} dead)" if dead else ""))
            times = [seconds[(label, s)] for s in sparsities if (label, s) in seconds and seconds[(label, s)][2]]
            total = sum(t[0] * t[2] for t in times) / max(1, sum(t[2] for t in times))
            lines.append(f"| {label} | " + " | ".join(cells) + f" | {total:.2f} |")
        failed_total = sum(r.get("status") != "ok" for r in members)
        if failed_total:
            lines += ["", f"{failed_total} run(s) failed; their errors are in the results' `error` column."]
        sections.append("\n".join(lines))
    if pending:
        sections.append(f"{len(pending)} cell(s) of the grid not run yet: these tables hold the finished ones.")
    return "\n\n".join(sections) + "\n"


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Any) -> str:
    """Lay out, write (no timestamp or version in the PNG, so a regenerated plot is byte-identical)
    and close a figure; returns the path."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    write_atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110, metadata={"Software": None}))
    plt.close(fig)
    return str(path)


def _position(sparsity: float) -> float:
    """Where a sparsity sits on a log scale of the kept fraction."""
    return -math.log10(1 - sparsity)


def plot_results(rows: Sequence[Mapping[str, Any]], out_dir: str | os.PathLike[str]) -> list[str]:
    """PNG plots per model and dataset: accuracy against sparsity (error bars over seeds),
    effective against nominal sparsity, per-layer density at the highest sparsity, screening time.

    Examples:
        >>> import tempfile
        >>> rows = [{"model": "lenet5", "dataset": "mnist", "label": "synflow", "sparsity": s, "seed": 0,
        ...          "status": "ok", "test_accuracy": 0.99 - s / 10, "nominal_sparsity": s, "effective_sparsity": s}
        ...         for s in (0.9, 0.99)]
        >>> sorted(name.rsplit("-", 1)[-1] for name in plot_results(rows, tempfile.mkdtemp()))
        ['accuracy.png', 'effective.png', 'screening.png']
    """
    plt = _pyplot()
    rows = [r for r in rows if r.get("status") != "pending"]
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for (model, dataset), members in _groups(rows).items():
        ok = [r for r in members if r.get("status") == "ok"]
        if not ok:
            continue
        labels = _ordered([r["label"] for r in members])
        sparsities = sorted(_ordered([r["sparsity"] for r in ok]))
        stem, title = folder / _file_stem(f"{model}-{dataset}"), f"{model} on {dataset}"
        written.append(_plot_accuracy(plt, ok, labels, sparsities, title, f"{stem}-accuracy.png"))
        written.append(_plot_effective(plt, ok, labels, sparsities, title, f"{stem}-effective.png"))
        layers = _plot_layers(plt, ok, labels, sparsities[-1], title, f"{stem}-layers.png")
        written += [layers] if layers else []
        written.append(_plot_screening(plt, ok, labels, title, f"{stem}-screening.png"))
    return written


def _file_stem(text: str) -> str:
    """``text`` as a file name in the plot folder: a results file's model or dataset may hold
    separators or dots that would write elsewhere."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", text).lstrip(".") or "results"


def _styles(labels: Sequence[str]) -> dict[str, dict[str, str]]:
    """A colour and marker per method label, all different as far as the eye goes: matplotlib's
    cycle repeats its 10 colours, and a grid has up to 15 methods."""
    import matplotlib

    palette = matplotlib.colormaps["tab10" if len(labels) <= 10 else "tab20"]
    markers = "os^DvPX*<>ph"
    return {
        label: {"color": matplotlib.colors.to_hex(palette(i % palette.N)), "marker": markers[i % len(markers)]}
        for i, label in enumerate(labels)
    }


def _plot_accuracy(
    plt: Any, ok: Sequence[Mapping[str, Any]], labels: list[str], sparsities: list[float], title: str, path: str
) -> str:
    accuracy = _summarise(ok, "test_accuracy")
    fig, ax = plt.subplots(figsize=(7, 4.5))
    styles = _styles(labels)
    for label in labels:
        points = [(s, *accuracy[(label, s)][:2]) for s in sparsities if (label, s) in accuracy]
        if points:
            ax.errorbar(
                [_position(s) for s, _, _ in points],
                [100 * m for _, m, _ in points],
                yerr=[100 * d for _, _, d in points],
                capsize=3,
                label=label,
                **styles[label],
            )
    ax.set_xticks([_position(s) for s in sparsities], [f"{s:g}" for s in sparsities])
    ax.set_xlabel("sparsity (log scale of the kept fraction)")
    ax.set_ylabel("final test accuracy (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, Path(path))


def _plot_effective(
    plt: Any, ok: Sequence[Mapping[str, Any]], labels: list[str], sparsities: list[float], title: str, path: str
) -> str:
    fig, ax = plt.subplots(figsize=(6, 4.5))
    styles = _styles(labels)
    for label in labels:
        pts = [(r["nominal_sparsity"], r["effective_sparsity"]) for r in ok if r["label"] == label]
        if pts:
            x, y = [_position(n) for n, _ in pts], [_position(min(e, 1 - 1e-7)) for _, e in pts]
            ax.scatter(x, y, label=label, s=14, c=styles[label]["color"], marker=styles[label]["marker"])
    ticks = [_position(s) for s in sparsities]
    ax.plot([min(ticks), max(ticks)], [min(ticks), max(ticks)], color="grey", linewidth=0.8, linestyle="--")
    ax.set_xticks(ticks, [f"{s:g}" for s in sparsities])
    ax.set_xlabel("nominal sparsity")
    top_tick = max([math.ceil(_position(min(r["effective_sparsity"], 1 - 1e-7)) - 1e-6) for r in ok] + [2])
    ax.set_yticks(range(1, top_tick + 1), [f"{1 - 10.0**-p:.{p}f}" if p < 7 else "cut" for p in range(1, top_tick + 1)])
    ax.set_ylabel("effective sparsity")
    ax.set_title(f"{title}: above the line, kept weights are dead", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, Path(path))


def _plot_layers(
    plt: Any, ok: Sequence[Mapping[str, Any]], labels: list[str], top: float, title: str, path: str
) -> str | None:
    layer_rows = [r for r in ok if r["sparsity"] == top and r.get("layer_density")]
    if not layer_rows:
        return None
    layer_names = list(json.loads(layer_rows[0]["layer_density"]))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    width = 0.8 / max(1, len(labels))
    styles = _styles(labels)
    for i, label in enumerate(labels):
        densities = [json.loads(r["layer_density"]) for r in layer_rows if r["label"] == label]
        if not densities:
            continue
        means = [sum(d[name] for d in densities) / len(densities) for name in layer_names]
        bars = [j + i * width for j in range(len(layer_names))]
        ax.bar(bars, [max(m, 1e-6) for m in means], width, label=label, color=styles[label]["color"])
    ax.set_xticks(
        [j + 0.4 - width / 2 for j in range(len(layer_names))],
        [n.removesuffix(".weight") for n in layer_names],
        rotation=45 if len(layer_names) > 6 else 0,
        fontsize=8,
    )
    ax.set_yscale("log")
    ax.set_ylabel("kept fraction of the layer (log)")
    ax.set_title(f"{title}: per-layer density at sparsity {top:g}")
    ax.legend(fontsize=8)
    return _save(fig, Path(path))


def _plot_screening(plt: Any, ok: Sequence[Mapping[str, Any]], labels: list[str], title: str, path: str) -> str:
    fig, ax = plt.subplots(figsize=(6, 4))
    timing = [[r["prune_seconds"] for r in ok if r["label"] == label and r.get("prune_seconds")] for label in labels]
    means = [sum(t) / len(t) if t else 0.0 for t in timing]
    ax.bar(range(len(labels)), [max(m, 1e-4) for m in means], color="tab:blue")
    ax.set_xticks(range(len(labels)), labels, rotation=30, fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("screening seconds per run (mean, log)")
    ax.set_title(f"{title}: screening time")
    return _save(fig, Path(path))


def read_trace(path: str | os.PathLike[str]) -> list[dict[str, str]]:
    """The rows of a trace CSV written by :func:`write_trace`.

    Examples:
        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "trace.csv"
        >>> write_trace(path, [{"step": 1, "density": 0.5, "kept": 3}])
        >>> read_trace(path)[0]["kept"]
        '3'
    """
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    except UnicodeDecodeError:
        raise UserError(f"{path} is not a text CSV (it is not UTF-8); pass the file `--trace` wrote") from None
    if not rows:
        raise UserError(f"{path} holds no steps; screen with `panning prune ... --trace {path}` to write one")
    for number, row in enumerate(rows, start=2):  # line 1 is the header
        for name in _TRACE_NUMBERS:
            value = row.get(name)
            if value not in (None, "") and not _is_number(value):
                raise UserError(f"{path}, line {number}: {name} is {value!r}, not a number; the trace is damaged")
    return rows


# The columns of a trace that plot_trace draws.
_TRACE_NUMBERS: tuple[str, ...] = ("step", "nominal_sparsity", "effective_sparsity", "loss", "grad_norm_sq")
_TRACE_NUMBERS += ("w_synflow", "w_snip", "w_grasp")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def plot_trace(rows: Sequence[Mapping[str, Any]], path: str | os.PathLike[str]) -> None:
    """One PNG of a screening trace (``panning prune --trace``): kept fraction and effective
    sparsity, the index weights (Panning), and the batch loss and ``gᵀg`` per step.

    Examples:
        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "trace.png"
        >>> rows = [{"step": s, "nominal_sparsity": 1 - 0.5**s, "effective_sparsity": 1 - 0.5**s} for s in (1, 2)]
        >>> plot_trace(rows, path)
        >>> path.stat().st_size > 0
        True
    """
    plt = _pyplot()

    def column(name: str) -> list[float | None]:
        return [float(r[name]) if r.get(name) not in (None, "") else None for r in rows]

    steps = column("step")
    fig, axes = plt.subplots(3, 1, figsize=(7, 8), sharex=True)
    axes[0].plot(steps, column("nominal_sparsity"), label="nominal sparsity")
    axes[0].plot(steps, column("effective_sparsity"), label="effective sparsity", linestyle="--")
    axes[0].set_ylabel("sparsity")
    axes[0].legend(fontsize=8)
    for index in ("synflow", "snip", "grasp"):
        weights = column(f"w_{index}")
        if any(w is not None for w in weights):
            axes[1].step(steps, [w if w is not None else float("nan") for w in weights], where="post", label=index)
    axes[1].set_ylabel("index weight")
    if axes[1].lines:
        axes[1].legend(fontsize=8)
    for name, axis in (("loss", axes[2]), ("grad_norm_sq", axes[2].twinx())):
        values = column(name)
        if any(v is not None for v in values):
            axis.plot(
                steps,
                [v if v is not None else float("nan") for v in values],
                label=name,
                color="tab:red" if name == "loss" else "tab:purple",
            )
            axis.set_ylabel(name)
    axes[2].set_xlabel("step")
    _save(fig, path)
