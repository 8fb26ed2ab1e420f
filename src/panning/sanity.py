"""Sanity checks of a pruning-at-initialisation method (Frankle et al. 2021, "Pruning Neural
Networks at Initialization: Why Are We Missing the Mark?").

A method's mask is trained as found and in three variants: ``shuffled`` (the kept positions
shuffled within each layer: same layer-wise densities, other weights), ``reinit`` (the same mask on
freshly initialised weights) and ``inverted`` (the method's scores negated: it keeps what it would
prune). If the mask as found trains no better than shuffled and re-initialised, the method found
layer-wise densities, not weights. The variants are grid cells like any other (``variant`` in a
``[[methods]]`` entry), so they resume, share the cell store and land in the same results table.

Examples:
    >>> import panning
    >>> model = panning.models.create("lenet300")
    >>> masks = panning.prune(model, 0.99, "synflow", input_shape=(1, 28, 28), iterations=5)
    >>> shuffled = shuffle_within_layers(masks, seed=0)
    >>> [int(shuffled[n].sum()) == int(masks[n].sum()) for n in masks]
    [True, True, True]
    >>> torch.equal(shuffled["fc1.weight"], masks["fc1.weight"])
    False
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from panning.connectivity import SUMMARY_KEYS
from panning.errors import UserError, UserTypeError, check_sparsity
from panning.io import write_atomic
from panning.masks import Masks
from panning.masks import load as load_masks
from panning.screening.pruning import Method, StepContext, create_method, register_method

VARIANTS = ("as-found", "shuffled", "reinit", "inverted")
# Added to a cell's seed for the fresh initialisation of the "reinit" variant.
REINIT_SEED_OFFSET = 1_000_003


def check_variant(variant: str) -> str:
    """``variant`` if it names one, else a user error listing them.

    Examples:
        >>> check_variant("shuffled")
        'shuffled'
    """
    if variant not in VARIANTS:
        raise UserError(f"unknown sanity variant {variant!r}; valid: {', '.join(VARIANTS)}")
    return variant


def shuffle_within_layers(masks: Masks, seed: int = 0) -> Masks:
    """The same number of kept weights in every layer, at random positions (seeded).

    Examples:
        >>> import torch
        >>> m = Masks({"w": torch.tensor([[True, False], [False, False]])})
        >>> int(shuffle_within_layers(m, seed=1)["w"].sum())
        1
    """
    if not isinstance(masks, Masks):
        raise UserTypeError(f"masks must be a panning.Masks, got {type(masks).__name__}")
    generator = torch.Generator().manual_seed(int(seed))
    shuffled = {}
    for name, mask in masks.items():
        order = torch.randperm(mask.numel(), generator=generator)
        shuffled[name] = mask.flatten().cpu()[order].view_as(mask).to(mask.device)
    # How the masks were screened still holds; what they were (connectivity, digest) does not.
    kept = {key: value for key, value in masks.metadata.items() if key not in (*SUMMARY_KEYS, "digest")}
    return Masks(shuffled, metadata={**kept, "variant": "shuffled", "shuffle_seed": int(seed)})


@dataclass
class Inverted:
    """A method whose scores are negated at every step: it keeps the weights it would prune."""

    inner: Method
    name: str = "inverted"

    @property
    def data_driven(self) -> bool:
        return self.inner.data_driven

    @property
    def default_iterations(self) -> int:
        return self.inner.default_iterations

    def __call__(self, model: nn.Module, context: StepContext) -> dict[str, torch.Tensor]:
        return {name: -score for name, score in self.inner(model, context).items()}


def inverted(method: str, **options: Any) -> Inverted:
    """The registered ``method`` with its scores negated (pass it to :func:`panning.prune`).

    Examples:
        >>> inverted("magnitude").name
        'inverted-magnitude'
    """
    return Inverted(create_method(method, **options), name=f"inverted-{method}")


@dataclass
class MaskFile:
    """``method="mask-file"``: the masks of a file as scores (1 kept, 0 pruned), so that masks found
    elsewhere can be trained, shuffled and re-initialised like any method's (grids, sanity checks).
    Screen at the file's own sparsity (:func:`mask_file_sparsity`) to keep exactly its weights."""

    path: str
    default_iterations: int = 1
    data_driven: bool = False
    _masks: Masks | None = field(default=None, init=False, repr=False, compare=False)

    def files(self) -> dict[str, Path]:
        """The mask file (its digest is part of a grid cell's identity)."""
        return {"masks": Path(self.path)}

    def __call__(self, model: nn.Module, context: StepContext) -> dict[str, torch.Tensor]:
        if self._masks is None:  # read once: every screening step asks for the same scores
            self._masks = load_masks(self.path)
        masks = self._masks
        masks.check_fits(model)
        if context.step == context.iterations and context.keep is not None:
            check_mask_file_count(self.path, masks, context.keep, "screen it at that sparsity")
        return {name: masks[name].to(torch.float32) for name in masks}


def check_mask_file_count(path: str | os.PathLike[str], masks: Masks, keep: int, fix: str) -> None:
    """Refuse to keep another number of weights than a mask file's: any other count would add
    arbitrary weights to the file's or drop some of them.

    Examples:
        >>> check_mask_file_count("m.safetensors", Masks({"w": torch.tensor([True, False])}), 2, "fix it")
        Traceback (most recent call last):
        ...
        panning.errors.UserError: m.safetensors keeps 1 of 2 weights (sparsity 0.5), not the 2 asked for: fix it
    """
    if keep != masks.kept():
        raise UserError(
            f"{path} keeps {masks.kept()} of {masks.total()} weights (sparsity {masks.sparsity():.10g}), "
            f"not the {keep} asked for: {fix}"
        )


def mask_file_sparsity(path: str | os.PathLike[str]) -> float:
    """The sparsity at which screening with ``mask-file`` keeps exactly the file's weights.

    Examples:
        >>> import tempfile
        >>> file = Path(tempfile.mkdtemp()) / "m.safetensors"
        >>> import panning
        >>> panning.masks.save(Masks({"w": torch.tensor([True, False, False, False])}), file)
        >>> mask_file_sparsity(file)
        0.75
    """
    return load_masks(path).sparsity()


@register_method("mask-file")
def _mask_file(path: str) -> MaskFile:
    if not isinstance(path, (str, os.PathLike)):
        raise UserTypeError(f"mask-file's path must be the path of a mask file, got {path!r}")
    if not Path(path).is_file():
        raise UserError(f"no mask file at {path}; write one with `panning prune ... --out {path}`")
    return MaskFile(str(path))


@dataclass(frozen=True)
class VariantSummary:
    """Final test accuracy of one variant over seeds."""

    variant: str
    runs: int
    mean: float
    std: float


def summarize(rows: Sequence[Mapping[str, Any]]) -> list[VariantSummary]:
    """Mean and standard deviation of the final test accuracy per variant, in ``VARIANTS`` order.

    Examples:
        >>> rows = [{"variant": "as-found", "test_accuracy": a, "status": "ok"} for a in (0.9, 0.8)]
        >>> summarize(rows)[0].runs, round(summarize(rows)[0].mean, 2)
        (2, 0.85)
    """
    out = []
    for variant in VARIANTS:
        values = [
            r["test_accuracy"] for r in rows if (r.get("variant") or "as-found") == variant and r.get("status") == "ok"
        ]
        if values:
            mean = sum(values) / len(values)
            std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
            out.append(VariantSummary(variant, len(values), mean, std))
    return out


def verdict(summaries: Sequence[VariantSummary]) -> str:
    """What the two checks say, each on its own (a difference counts beyond two standard errors):
    beating ``shuffled`` means the mask carries information beyond its layer-wise densities;
    beating ``reinit`` means it is tied to the initial weights it was screened on.

    Examples:
        >>> found, shuffled, reinit = (VariantSummary(v, 3, m, 0.002) for v, m in
        ...     (("as-found", 0.95), ("shuffled", 0.90), ("reinit", 0.95)))
        >>> for finding in verdict([found, shuffled, reinit]).split("; "):
        ...     print(finding)
        carries information beyond its layer-wise densities (beats shuffled)
        is not tied to its initial weights (reinit trains as well)
    """
    by = {s.variant: s for s in summaries}
    found = by.get("as-found")
    if found is None or not {"shuffled", "reinit"} <= set(by):
        return "undecided: needs as-found, shuffled and reinit runs"
    if min(found.runs, by["shuffled"].runs, by["reinit"].runs) < 2:
        return "undecided: each variant needs at least two runs (seeds) to compare"

    def beats(other: str) -> bool:
        o = by[other]
        error = math.sqrt(found.std**2 / max(found.runs, 1) + o.std**2 / max(o.runs, 1))
        return found.mean - o.mean > 2 * error

    positions = (
        "carries information beyond its layer-wise densities (beats shuffled)"
        if beats("shuffled")
        else "carries no more than its layer-wise densities (shuffled trains as well)"
    )
    weights = (
        "is tied to its initial weights (beats reinit)"
        if beats("reinit")
        else "is not tied to its initial weights (reinit trains as well)"
    )
    return f"{positions}; {weights}"


def table(summaries: Sequence[VariantSummary]) -> str:
    """A Markdown table of the variants and the verdict.

    Examples:
        >>> print(table([VariantSummary("as-found", 3, 0.95, 0.002)]).splitlines()[2])
        | as-found | 3 | 95.00 ± 0.20 | – |
    """
    found = next((s for s in summaries if s.variant == "as-found"), None)
    lines = ["| variant | runs | test accuracy (%) | vs as found |", "|---|---:|---:|---:|"]
    for s in summaries:
        delta = "–" if found is None or s is found else f"{100 * (s.mean - found.mean):+.2f}"
        lines.append(f"| {s.variant} | {s.runs} | {100 * s.mean:.2f} ± {100 * s.std:.2f} | {delta} |")
    finding = verdict(summaries)
    subject = "" if finding.startswith("undecided") else "the mask "
    return "\n".join([*lines, "", f"Verdict: {subject}{finding}."])


def sanity_config(
    model: str,
    dataset: str,
    method: str,
    sparsity: float,
    seeds: Sequence[int] = (0, 1, 2),
    options: Mapping[str, Any] | None = None,
    variants: Sequence[str] = VARIANTS,
    screening: Mapping[str, Any] | None = None,
    training: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The benchmark grid (as a parsed TOML mapping) of a method's sanity variants at one setting.

    Training defaults to 20 epochs on the compacted network, as the real-budget grids.

    Examples:
        >>> config = sanity_config("lenet5", "mnist", "synflow", 0.99, seeds=[0])
        >>> [m.get("variant", "as-found") for m in config["methods"]]
        ['as-found', 'shuffled', 'reinit', 'inverted']
    """
    sparsity = check_sparsity(sparsity)
    methods = [
        {"name": method, "options": dict(options or {}), **({} if v == "as-found" else {"variant": check_variant(v)})}
        for v in variants
    ]
    return {
        "name": f"sanity-{method}-{model}-{dataset}-{sparsity:g}",
        "models": [model],
        "datasets": [dataset],
        "sparsities": [sparsity],
        "seeds": list(seeds),
        "methods": methods,
        "screening": dict(screening or {}),
        "training": {"epochs": 20, "compact": True, **dict(training or {})},
    }


@dataclass
class SanityResult:
    """What :func:`run_sanity` found: the grid's rows, the per-variant summary and its table."""

    rows: list[dict[str, Any]]
    summaries: list[VariantSummary]
    text: str
    files: list[str]


def run_sanity(
    config: Mapping[str, Any],
    out: str | os.PathLike[str],
    store: str | os.PathLike[str] | None = None,
    jobs: int = 1,
    data_dir: str | None = None,
    device: str = "cpu",
    on_result: Any = None,
) -> SanityResult:
    """Train a sanity grid (see :func:`sanity_config`) and write ``sanity.md`` and ``sanity.png``
    beside its ``results.csv`` in ``out``.

    Examples:
        >>> run_sanity(sanity_config("lenet5", "mnist", "synflow", 0.99), "runs/sanity")  # doctest: +SKIP
    """
    from panning import bench

    grid = bench.parse_grid(config, name=str(config.get("name", "sanity")))
    summary = bench.run_grid(grid, out, store=store, jobs=jobs, data_dir=data_dir, device=device, on_result=on_result)
    summaries = summarize(summary.rows)
    title = grid.name
    text = f"### {title}: final test accuracy over {len({c.seed for c in grid.cells})} seed(s)\n\n" + table(summaries)
    folder = Path(out)
    write_atomic(folder / "sanity.md", lambda tmp: tmp.write_text(text + "\n"))
    files = [str(folder / "sanity.md"), _plot(summaries, title, folder / "sanity.png")]
    return SanityResult(summary.rows, summaries, text, files)


def _plot(summaries: Sequence[VariantSummary], title: str, path: Path) -> str:
    from panning.report import _pyplot, _save

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.bar(
        range(len(summaries)),
        [100 * s.mean for s in summaries],
        yerr=[100 * s.std for s in summaries],
        capsize=4,
        color=["tab:blue" if s.variant == "as-found" else "tab:gray" for s in summaries],
    )
    ax.set_xticks(range(len(summaries)), [s.variant for s in summaries])
    ax.set_ylabel("final test accuracy (%)")
    ax.set_title(title, fontsize=9)
    return _save(fig, path)


__all__ = [
    "REINIT_SEED_OFFSET",
    "VARIANTS",
    "Inverted",
    "MaskFile",
    "SanityResult",
    "VariantSummary",
    "check_mask_file_count",
    "check_variant",
    "inverted",
    "mask_file_sparsity",
    "run_sanity",
    "sanity_config",
    "shuffle_within_layers",
    "summarize",
    "table",
    "verdict",
]
