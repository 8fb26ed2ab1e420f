"""Sanity checks: the variants keep what they must (layer counts, the mask, the densities), run as
grid cells, and the command reports a verdict."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import panning
from conftest import write_mnist
from panning import bench, sanity
from panning.cli import cli

TINY = {"epochs": 1, "val_size": 50, "batch_size": 64, "compact": False}


def test_the_variants_train_the_masks_they_promise(data_root: Path, tmp_path: Path) -> None:
    config = sanity.sanity_config(
        "lenet300", "mnist", "synflow", 0.99, seeds=[0], screening={"iterations": 3}, training=TINY
    )
    result = sanity.run_sanity(config, tmp_path / "out", store=tmp_path / "cells")
    rows = {row["variant"] or "as-found": row for row in result.rows}
    assert set(rows) == set(sanity.VARIANTS) and all(row["status"] == "ok" for row in rows.values())
    masks = {
        variant: panning.masks.load(tmp_path / "cells" / row["cell"] / "run" / "masks.safetensors")
        for variant, row in rows.items()
    }
    found, shuffled, reinit, inverted = (masks[v] for v in sanity.VARIANTS)
    assert all(torch.equal(found[n], reinit[n]) for n in found)  # the same mask, other weights
    assert rows["shuffled"]["layer_density"] == rows["as-found"]["layer_density"]
    assert any(not torch.equal(found[n], shuffled[n]) for n in found)
    assert inverted.kept() == found.kept() and any(not torch.equal(found[n], inverted[n]) for n in found)
    start = {v: json.loads((tmp_path / "cells" / rows[v]["cell"] / "cell.json").read_text()) for v in rows}
    assert start["reinit"]["variant"] == "reinit" and "variant" not in start["as-found"]
    assert "Verdict: undecided: each variant needs at least two runs" in result.text  # one seed
    assert (tmp_path / "out" / "sanity.png").is_file()


def test_sanity_command_and_bad_variants(data_root: Path, tmp_path: Path) -> None:
    args = ["sanity", "--model", "lenet300", "--dataset", "mnist", "--method", "magnitude", "--sparsity", "0.9"]
    args += ["--seeds", "0", "--epochs", "1", "--val-size", "50", "--batch-size", "32"]
    args += ["--variants", "as-found,shuffled", "--out", str(tmp_path / "o")]
    result = CliRunner().invoke(cli, [*args, "--cells", str(tmp_path / "c")])
    assert result.exit_code == 0, result.output
    assert "| shuffled | 1 |" in result.output and "undecided" in result.output
    cell = bench.read_results(tmp_path / "o" / "results.csv")[0]["cell"]
    trained = json.loads((tmp_path / "c" / cell / "run" / "config.json").read_text())["train"]
    assert (trained["val_size"], trained["batch_size"]) == (50, 32)
    bad = CliRunner().invoke(cli, [*args[:-1], str(tmp_path / "p"), "--variants", "as-found,flipped"])
    assert bad.exit_code == 2 and "unknown sanity variant 'flipped'; valid: as-found" in bad.output
    with pytest.raises(ValueError, match="unknown sanity variant"):
        bench.parse_grid(
            {**sanity.sanity_config("lenet300", "mnist", "snip", 0.9), "methods": [{"name": "snip", "variant": "x"}]}
        )


def test_sanity_of_a_mask_file_trains_it_from_its_own_initialisation(data_root: Path, tmp_path: Path) -> None:
    write_mnist(data_root / "mnist", train=5200, test=200)
    mask_file = tmp_path / "m.safetensors"
    prune = ["prune", "--model", "lenet300", "--dataset", "mnist", "--method", "magnitude", "--sparsity", "0.9"]
    assert CliRunner().invoke(cli, [*prune, "--seed", "2", "--out", str(mask_file)]).exit_code == 0
    check = ["sanity", "--model", "lenet300", "--dataset", "mnist", "--masks", str(mask_file), "--epochs", "1"]
    result = CliRunner().invoke(cli, [*check, "--out", str(tmp_path / "o"), "--cells", str(tmp_path / "c")])
    assert result.exit_code == 0, result.output
    rows = bench.read_results(tmp_path / "o" / "results.csv")
    assert [(r["variant"] or "as-found", r["seed"]) for r in rows] == [("as-found", 2), ("shuffled", 2), ("reinit", 2)]
    found = panning.masks.load(tmp_path / "c" / rows[0]["cell"] / "run" / "masks.safetensors")
    original = panning.masks.load(mask_file)
    assert all(torch.equal(found[n], original[n]) for n in original)
    assert "undecided: each variant needs at least two runs" in result.output
    inverted = CliRunner().invoke(cli, [*check, "--variants", "inverted", "--out", str(tmp_path / "i")])
    assert inverted.exit_code == 2 and "inverted needs a method's scores" in inverted.output, inverted.output
    other = CliRunner().invoke(cli, [*check, "--seeds", "0", "--out", str(tmp_path / "p")])
    assert other.exit_code == 2 and "was screened on the initialisation of seed 2" in other.output
    # Refused before any cell runs: another sparsity than the file's, or another model.
    denser = CliRunner().invoke(cli, [*check, "--sparsity", "0.8", "--out", str(tmp_path / "q")])
    assert denser.exit_code == 2 and "keeps 26620 of 266200 weights (sparsity 0.9)" in denser.output
    check[2] = "lenet5"
    other_model = CliRunner().invoke(cli, [*check, "--out", str(tmp_path / "r")])
    assert other_model.exit_code == 2 and "holds masks of lenet300, not lenet5" in other_model.output
    assert not (tmp_path / "q").exists() and not (tmp_path / "r").exists()
    with pytest.raises(ValueError, match="screen it at that sparsity"):
        panning.prune(
            panning.models.create("lenet300"), 0.95, "mask-file", path=str(mask_file), input_shape=(1, 28, 28)
        )
    # A file screened on the reference initialisation trains from it as found.
    assert CliRunner().invoke(cli, [*prune, "--init", "reference", "--out", str(tmp_path / "ref.st")]).exit_code == 0
    check = ["sanity", "--model", "lenet300", "--dataset", "mnist", "--masks", str(tmp_path / "ref.st")]
    check += ["--epochs", "1", "--variants", "as-found"]
    result = CliRunner().invoke(cli, [*check, "--out", str(tmp_path / "s"), "--cells", str(tmp_path / "c")])
    assert result.exit_code == 0, result.output
    cell = bench.read_results(tmp_path / "s" / "results.csv")[0]["cell"]
    assert json.loads((tmp_path / "c" / cell / "run" / "config.json").read_text())["train"]["init"] == "reference"


def test_a_grid_with_a_failed_cell_exits_with_status_1_after_writing_its_results(
    data_root: Path, tmp_path: Path
) -> None:
    write_mnist(data_root / "mnist", train=5200, test=200)
    mask_file = tmp_path / "m.safetensors"
    prune = ["prune", "--model", "lenet300", "--dataset", "mnist", "--method", "magnitude", "--sparsity", "0.9"]
    assert CliRunner().invoke(cli, [*prune, "--out", str(mask_file)]).exit_code == 0
    grid = tmp_path / "g.toml"
    grid.write_text(
        'name = "g"\nmodels = ["lenet300"]\ndatasets = ["mnist"]\nsparsities = [0.5]\nseeds = [0]\n'
        f'[[methods]]\nname = "mask-file"\noptions = {{ path = "{mask_file.as_posix()}" }}\n'
        "[training]\nepochs = 1\n"
    )
    result = CliRunner().invoke(cli, ["bench", str(grid), "--cells", str(tmp_path / "c"), "--out", str(tmp_path / "o")])
    assert result.exit_code == 1 and "1 cell(s) failed" in result.output
    assert bench.read_results(tmp_path / "o" / "results.csv")[0]["status"] == "failed"


def test_the_verdict_reads_each_check_on_its_own() -> None:
    def summaries(shuffled: float, reinit: float) -> list[sanity.VariantSummary]:
        return [
            sanity.VariantSummary("as-found", 3, 0.90, 0.01),
            sanity.VariantSummary("shuffled", 3, shuffled, 0.01),
            sanity.VariantSummary("reinit", 3, reinit, 0.01),
        ]

    both = sanity.verdict(summaries(0.50, 0.80))
    assert "beyond its layer-wise densities (beats shuffled)" in both and "tied to its initial weights (beats" in both
    neither = sanity.verdict(summaries(0.895, 0.905))  # inside two standard errors (0.016)
    assert "no more than its layer-wise densities" in neither and "not tied to its initial weights" in neither


def test_a_grid_training_a_mask_file_from_another_initialisation_says_so(tmp_path: Path) -> None:
    model = panning.models.initialize(panning.models.create("lenet300"), "reference")
    masks = panning.prune(model, 0.9, "magnitude", input_shape=(1, 28, 28))
    masks.metadata["init"] = "reference"  # as `panning prune --init reference` records it
    panning.masks.save(masks, tmp_path / "m.safetensors")
    method = {"name": "mask-file", "options": {"path": str(tmp_path / "m.safetensors")}}
    config = {"models": ["lenet300"], "datasets": ["mnist"], "sparsities": [0.9], "seeds": [0], "methods": [method]}
    with pytest.warns(UserWarning, match='screened on the reference initialisation.*set init = "reference"'):
        bench.parse_grid(config)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        bench.parse_grid({**config, "training": {"init": "reference"}})
