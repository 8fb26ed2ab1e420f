from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

import panning
from panning.cli import cli

FAST = ["--val-size", "50", "--batch-size", "64", "--quiet", "--device", "cpu"]


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


def test_a_bare_command_prints_its_help() -> None:
    for args in ([], ["agent"]):
        code, out = invoke(*args)
        assert code == 0 and out.startswith("Usage: panning") and "Commands:" in out and "error" not in out


def test_prune_then_train_keeps_masked_weights_zero(data_root: Path, tmp_path: Path) -> None:
    mask_file = tmp_path / "m.safetensors"
    code, out = invoke(
        "prune",
        "--model",
        "lenet300",
        "--dataset",
        "mnist",
        "--method",
        "random",
        "--sparsity",
        "0.9",
        "--val-size",
        "50",
        "--out",
        str(mask_file),
    )
    assert code == 0, out
    assert "effective" in out and "screening time" in out and "fc1.weight" in out
    code, out = invoke("info", str(mask_file))
    assert code == 0 and '"method": "random"' in out and "COLLAPSE" not in out
    code, out = invoke(
        "train",
        "--model",
        "lenet300",
        "--dataset",
        "mnist",
        "--masks",
        str(mask_file),
        "--epochs",
        "1",
        "--out",
        str(tmp_path / "run"),
        *FAST,
    )
    assert code == 0, out
    assert "final test accuracy" in out
    masks = panning.masks.load(mask_file)
    weights = load_file(tmp_path / "run" / "model.safetensors")
    assert sum(int((weights[n] != 0).sum()) for n in masks) == masks.kept()
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert 0 <= metrics["test_accuracy"] <= 1


def test_run_records_screening_facts(data_root: Path, tmp_path: Path) -> None:
    code, out = invoke(
        "run",
        "--model",
        "lenet300",
        "--dataset",
        "mnist",
        "--method",
        "synflow",
        "--iterations",
        "5",
        "--sparsity",
        "0.95",
        "--epochs",
        "1",
        "--out",
        str(tmp_path / "run"),
        *FAST,
    )
    assert code == 0, out
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["method"] == "synflow" and metrics["prune_seconds"] > 0
    assert metrics["nominal_sparsity"] == pytest.approx(0.95, abs=1e-5)
    assert metrics["effective_sparsity"] >= metrics["nominal_sparsity"]


@pytest.mark.parametrize(
    "args,message",
    [
        (
            ["prune", "--model", "lenet300", "--dataset", "mnist", "--method", "random", "--sparsity", "1.5"],
            "outside [0, 1)",
        ),
        (["prune", "--model", "lenet7", "--dataset", "mnist", "--method", "random", "--sparsity", "0.5"], "lenet7"),
        (["prune", "--model", "lenet300", "--dataset", "svhn", "--method", "random", "--sparsity", "0.5"], "svhn"),
        (["train", "--model", "lenet300", "--dataset", "mnist", "--dense", "--epochs", "0"], "epochs"),
        (["train", "--model", "lenet300", "--dataset", "mnist", "--epochs", "1"], "--masks"),
        (
            ["train", "--model", "lenet300", "--dataset", "mnist", "--dense", "--epochs", "2", "--warmup-epochs", "-1"],
            "warmup_epochs",
        ),
        (
            ["train", "--model", "lenet300", "--dataset", "mnist", "--dense", "--epochs", "1", "--clip-grad-norm", "0"],
            "clip_grad_norm",
        ),
        (
            ["train", "--model", "lenet300", "--dataset", "mnist", "--dense", "--epochs", "1", "--clip-grad-norm", "x"],
            "'x' is neither",
        ),
    ],
)
def test_user_mistakes_exit_2_with_one_line(data_root: Path, tmp_path: Path, args: list[str], message: str) -> None:
    code, out = invoke(*args, "--out", str(tmp_path / "x"), *([] if args[0] == "prune" else FAST))
    assert code == 2, out
    assert message in out
    assert out.count("\n") == 1 and out.startswith("error: ")
    assert not (tmp_path / "x").exists()


def test_mask_for_another_model_and_corrupt_data(data_root: Path, tmp_path: Path) -> None:
    mask_file = tmp_path / "m.safetensors"
    invoke(
        "prune",
        "--model",
        "lenet300",
        "--dataset",
        "mnist",
        "--method",
        "magnitude",
        "--sparsity",
        "0.5",
        "--val-size",
        "50",
        "--out",
        str(mask_file),
    )
    code, out = invoke(
        "train",
        "--model",
        "lenet5",
        "--dataset",
        "mnist",
        "--masks",
        str(mask_file),
        "--epochs",
        "1",
        "--out",
        str(tmp_path / "run"),
        *FAST,
    )
    assert code == 2 and "holds masks of lenet300, not lenet5" in out
    (data_root / "mnist" / "t10k-labels-idx1-ubyte.gz").write_bytes(b"\x1f\x8b broken")
    code, out = invoke(
        "train",
        "--model",
        "lenet300",
        "--dataset",
        "mnist",
        "--dense",
        "--epochs",
        "1",
        "--out",
        str(tmp_path / "run2"),
        *FAST,
    )
    assert code == 2 and "t10k-labels-idx1-ubyte.gz is corrupt" in out


def test_finished_out_folder_is_refused_without_touching_it(data_root: Path, tmp_path: Path) -> None:
    args = [
        "train",
        "--model",
        "lenet300",
        "--dataset",
        "mnist",
        "--dense",
        "--epochs",
        "1",
        "--out",
        str(tmp_path / "run"),
        *FAST,
    ]
    assert invoke(*args)[0] == 0
    before = {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir()}
    code, out = invoke(*args)
    assert code == 2 and "finished run" in out
    assert {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir()} == before


def test_click_usage_errors_are_one_line_too() -> None:
    code, out = invoke("prune", "--model", "lenet5")
    assert code == 2 and out.count("\n") == 1 and "Missing option" in out and "--help" in out


def test_help_is_available_for_every_command() -> None:
    for command in ("prune", "train", "run", "info"):
        code, out = invoke(command, "--help")
        assert code == 0 and "Usage" in out


def test_a_diverging_run_exits_2_with_what_to_try(data_root: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    args = ["train", "--model", "lenet300", "--dataset", "mnist", "--dense", "--epochs", "2", "--out", str(run), *FAST]
    code, out = invoke(*args, "--lr", "1e12")
    assert code == 2 and out.count("\n") == 1, out
    assert "diverged at epoch 1, step" in out and "--resume" in out and "--lr" in out
    assert not (run / "model.safetensors").exists() and (run / "config.json").is_file()
    code, out = invoke(*args, "--lr", "0.05", "--resume", "--clip-grad-norm", "none")
    assert code == 2 and "clip_grad_norm = 1.0, not None" in out, out
    code, out = invoke(*args, "--lr", "0.05", "--resume")
    assert code == 0, out
    assert json.loads((run / "config.json").read_text())["changes"] == [{"from_epoch": 1, "lr": [1e12, 0.05]}]


def test_masks_screened_on_another_initialisation_are_flagged(data_root: Path, tmp_path: Path) -> None:
    mask_file = tmp_path / "m.safetensors"
    prune = ["prune", "--model", "lenet300", "--dataset", "mnist", "--method", "synflow", "--sparsity", "0.9"]
    code, out = invoke(*prune, "--iterations", "2", "--init", "reference", "--val-size", "50", "--out", str(mask_file))
    assert code == 0, out
    assert panning.masks.load(mask_file).metadata["init"] == "reference"
    train = ["train", "--model", "lenet300", "--dataset", "mnist", "--masks", str(mask_file), "--epochs", "1", *FAST]
    code, out = invoke(*train, "--out", str(tmp_path / "a"))
    assert code == 0 and "screened on the reference initialisation" in out and "--init reference" in out
    code, out = invoke(*train, "--init", "reference", "--out", str(tmp_path / "b"))
    assert code == 0 and "warning" not in out
    assert json.loads((tmp_path / "b" / "config.json").read_text())["train"]["init"] == "reference"


def test_run_resume_checks_the_screening_it_resumes(data_root: Path, tmp_path: Path) -> None:
    run = ["run", "--model", "lenet300", "--dataset", "mnist", "--epochs", "1", "--out", str(tmp_path / "r"), *FAST]
    # 0.993 of 266,200 weights is no whole number: the file reaches 0.99300150..., the run asked 0.993.
    first = ["--method", "synflow", "--sparsity", "0.993", "--iterations", "2"]
    code, out = invoke(*run, *first)
    assert code == 0, out
    before = {p.name: p.read_bytes() for p in (tmp_path / "r").iterdir()}
    for other, field in (
        (["--method", "snip", "--sparsity", "0.993"], "method = 'synflow', not 'snip'"),
        (
            ["--method", "synflow", "--sparsity", "0.5", "--iterations", "2"],
            "keep 1863 of 266200 weights (sparsity 0.993)",
        ),
        ([*first, "--seed", "3"], "seed = 0, not 3"),
        ([*first, "--no-regrowth"], "regrowth = True, not False"),
        (["--method", "synflow", "--sparsity", "0.993", "--iterations", "3"], "iterations = 2, not 3"),
        ([*first, "--model", "lenet5"], "model = 'lenet300', not 'lenet5'"),
    ):
        code, out = invoke(*run, *other, "--resume")
        assert code == 2 and field in out and out.count("\n") == 1, out
    assert {p.name: p.read_bytes() for p in (tmp_path / "r").iterdir()} == before
    code, out = invoke(*run, *first, "--resume")
    assert code == 0 and "final test accuracy" in out


def test_prune_never_overwrites_a_mask_file_and_checks_before_screening(data_root: Path, tmp_path: Path) -> None:
    existing = tmp_path / "m.safetensors"
    existing.write_bytes(b"precious")
    prune = ["prune", "--model", "lenet300", "--dataset", "mnist", "--method", "synflow", "--sparsity", "0.9"]
    code, out = invoke(*prune, "--out", str(existing))
    assert code == 2 and "already exists" in out and "screening" not in out
    assert existing.read_bytes() == b"precious"
    code, out = invoke(*prune, "--out", str(tmp_path / "no" / "such" / "m.safetensors"))
    assert code == 2 and "does not exist" in out
    code, out = invoke(*prune, "--out", str(tmp_path / "new") + "/")
    assert code == 2 and "names a folder; give a file name" in out, out
    assert not (tmp_path / "new").exists()


def test_info_and_export_say_what_a_file_or_folder_is(data_root: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    code, out = invoke(
        "train", "--model", "lenet300", "--dataset", "mnist", "--dense", "--epochs", "1", "--out", str(run), *FAST
    )
    assert code == 0, out
    code, out = invoke("info", str(run / "model.safetensors"))
    assert code == 2 and "is not a mask file (it looks like a model's weights)" in out, out
    (run / "model.safetensors").write_bytes(b"garbage")
    code, out = invoke("export", str(run), "--out", str(tmp_path / "small.safetensors"))
    assert code == 2 and "is not a readable safetensors file" in out and "damaged" in out, out
    (run / "model.safetensors").unlink()
    code, out = invoke("export", str(run), "--out", str(tmp_path / "small.safetensors"))
    assert code == 2 and "unfinished run" in out and "--resume" in out, out
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "train": {**config["train"], "dataset": "custom"}}))
    (run / "model.safetensors").write_bytes(b"")
    code, out = invoke("export", str(run), "--out", str(tmp_path / "small.safetensors"))
    assert code == 2 and "export it from Python with panning.compaction.save_sparse" in out, out
    (run / "config.json").write_text("{}")
    code, out = invoke("export", str(run), "--out", str(tmp_path / "small.safetensors"))
    assert code == 2 and "is not the config of a panning run" in out, out


def test_masks_of_another_registered_model_are_refused_even_where_their_names_fit(
    data_root: Path, tmp_path: Path
) -> None:
    masks = panning.prune(panning.models.create("lenet300"), 0.9, "magnitude", input_shape=(1, 28, 28))
    masks.metadata["model"] = "resnet20"  # as if screened on a smaller relative whose names fit
    panning.masks.save(masks, tmp_path / "m.safetensors")
    mask_file = str(tmp_path / "m.safetensors")
    for command in (
        ["train", *"--model lenet300 --dataset mnist --epochs 1 --masks".split(), mask_file],
        ["compact", *"--model lenet300 --dataset mnist --masks".split(), mask_file],
    ):
        code, out = invoke(*command, "--out", str(tmp_path / "out"))
        assert code == 2 and "holds masks of resnet20, not lenet300; pass --model resnet20" in out, out
        assert not (tmp_path / "out").exists()


def test_masks_from_other_data_or_missing_a_layer_are_flagged(data_root: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = panning.models.create("lenet300")
    masks = panning.prune(model, 0.5, "magnitude", input_shape=(1, 28, 28))
    masks.metadata["dataset"] = "fashion-mnist"
    del masks["fc3.weight"]
    panning.masks.save(masks, tmp_path / "m.safetensors")
    code, out = invoke(
        "train",
        "--model",
        "lenet300",
        "--dataset",
        "mnist",
        "--masks",
        str(tmp_path / "m.safetensors"),
        "--epochs",
        "1",
        "--out",
        str(tmp_path / "run"),
        *FAST,
    )
    assert code == 0, out
    assert "warning: the masks were screened on fashion-mnist, not mnist: pass --dataset fashion-mnist" in out
    assert "warning: the masks leave fc3.weight out: it trains dense" in out


def test_any_method_option_reaches_the_method_from_the_command_line(data_root: Path, tmp_path: Path) -> None:
    base = ["prune", "--model", "lenet300", "--dataset", "mnist", "--method", "prospr", "--sparsity", "0.9"]
    base += ["--val-size", "50", "--samples-per-class", "2"]
    code, out = invoke(
        *base, "-O", "inner_steps=1", "--option", "inner_lr=0.05", "--out", str(tmp_path / "m.safetensors")
    )
    assert code == 0, out
    options = panning.masks.load(tmp_path / "m.safetensors").metadata["options"]
    assert options == {"inner_steps": 1, "inner_lr": 0.05}
    for bad, message in (
        ("inner_step=1", "unknown option 'inner_step' for method 'prospr'; valid: inner_steps, inner_lr"),
        ("inner_steps", "--option takes NAME=VALUE"),
        ("inner_steps=-1", "inner_steps must be a non-negative integer"),
    ):
        code, out = invoke(*base, "-O", bad, "--out", str(tmp_path / "n.safetensors"))
        assert code == 2 and message in out and len(out.strip().splitlines()) == 1, out
