"""Faults made to happen: each gets one line, exit status 2, and leaves what was written as it was."""

from __future__ import annotations

import errno
import os
import warnings
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from panning.cli import cli

FAST = ["--val-size", "50", "--batch-size", "64", "--quiet", "--device", "cpu"]
TRAIN = ["train", "--model", "lenet300", "--dataset", "mnist", "--dense", *FAST]


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _save_failing_after_first(save: object, error: BaseException) -> object:
    """torch.save that works once, then writes half a file and raises ``error`` (a fault mid-write)."""
    calls = {"n": 0}

    def failing(obj: object, f: object, *args: object, **kwargs: object) -> None:
        calls["n"] += 1
        if calls["n"] > 1:
            Path(str(f)).write_bytes(b"half a checkpoint")
            raise error
        save(obj, f, *args, **kwargs)  # type: ignore[operator]

    return failing


def test_a_read_only_out_folder_is_refused_before_any_work(
    data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: False if Path(path) == locked else access(path, mode))
    run = ["run", "--model", "lenet300", "--dataset", "mnist", "--method", "synflow", "--sparsity", "0.9"]
    code, out = invoke(*run, "--epochs", "1", "--out", str(locked / "run"), *FAST)
    assert code == 2 and out.count("\n") == 1 and "not a writable folder" in out, out
    code, out = invoke("prune", *run[1:], "--out", str(locked / "m.safetensors"))
    assert code == 2 and "cannot write into" in out, out
    assert list(locked.iterdir()) == []


def test_a_full_disk_at_a_checkpoint_stops_cleanly_and_the_run_resumes(
    data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = tmp_path / "run"
    save = torch.save
    monkeypatch.setattr(torch, "save", _save_failing_after_first(save, OSError(errno.ENOSPC, "No space left")))
    code, out = invoke(*TRAIN, "--epochs", "3", "--out", str(run))
    assert code == 2 and out.count("\n") == 1, out
    assert "no space left" in out and "checkpoint.pt" in out and "--resume" in out
    before = _files(run)
    assert not [name for name in before if name.endswith(".tmp")]  # nothing half-written is left
    assert torch.load(run / "checkpoint.pt", weights_only=False)["epoch"] == 1  # the last good epoch
    monkeypatch.setattr(torch, "save", save)
    code, out = invoke(*TRAIN, "--epochs", "3", "--out", str(run), "--resume")
    assert code == 0 and "final test accuracy" in out, out


def test_a_process_killed_while_writing_a_checkpoint_keeps_the_previous_one(
    data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = tmp_path / "run"
    monkeypatch.setattr(torch, "save", _save_failing_after_first(torch.save, KeyboardInterrupt()))
    code, _ = invoke(*TRAIN, "--epochs", "3", "--out", str(run))
    assert code != 0
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]
    assert torch.load(run / "checkpoint.pt", weights_only=False)["epoch"] == 1


def test_a_foreign_metrics_file_is_named_and_left_alone(data_root: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.json").write_text("epoch,accuracy\n1,0.9\n")
    before = _files(run)
    for extra in ([], ["--resume"]):
        code, out = invoke(*TRAIN, "--epochs", "1", "--out", str(run), *extra)
        assert code == 2 and out.count("\n") == 1 and "not a JSON file written by panning" in out, out
    assert _files(run) == before


def _stopped_after_one_epoch(run: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A 3-epoch run stopped by a full disk after epoch 1: a checkpoint to resume from."""
    save = torch.save
    monkeypatch.setattr(torch, "save", _save_failing_after_first(save, OSError(errno.ENOSPC, "No space left")))
    invoke(*TRAIN, "--epochs", "3", "--out", str(run))
    monkeypatch.setattr(torch, "save", save)  # (undo() would also drop data_root's PANNING_DATA)
    return run


def test_a_damaged_checkpoint_or_a_json_file_that_is_no_object_is_one_line_and_left_alone(
    data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = _stopped_after_one_epoch(tmp_path / "run", monkeypatch)
    (run / "checkpoint.pt").write_bytes(b"garbage")
    before = _files(run)
    code, out = invoke(*TRAIN, "--epochs", "3", "--out", str(run), "--resume")
    assert code == 2 and out.count("\n") == 1 and "checkpoint.pt is damaged (" in out, out
    assert _files(run) == before
    torch.save({"model": {"other.weight": torch.zeros(1)}}, run / "checkpoint.pt")  # readable, another network's
    before = _files(run)
    code, out = invoke(*TRAIN, "--epochs", "3", "--out", str(run), "--resume")
    assert code == 2 and "does not fit this model" in out and "delete the file only if it is damaged" in out, out
    assert _files(run) == before
    (run / "metrics.json").write_text("[]")
    code, out = invoke(*TRAIN, "--epochs", "3", "--out", str(run), "--resume")
    assert code == 2 and "holds a list, not an object" in out, out
    (run / "metrics.json").unlink()
    (run / "config.json").write_text("{}")
    code, out = invoke(*TRAIN, "--epochs", "3", "--out", str(run), "--resume")
    assert code == 2 and "config.json is not the config of a panning run" in out, out


def test_an_existing_trace_file_is_refused_before_screening(data_root: Path, tmp_path: Path) -> None:
    trace = tmp_path / "trace.csv"
    trace.write_text("precious\n")
    prune = "prune --model lenet300 --dataset mnist --method synflow --iterations 2 --val-size 50".split()
    code, out = invoke(*prune, "--sparsity", "0.9", "--trace", str(trace), "--out", str(tmp_path / "m.safetensors"))
    assert code == 2 and "trace.csv already exists; choose another --trace" in out, out
    assert trace.read_text() == "precious\n" and not (tmp_path / "m.safetensors").exists()


def test_resuming_in_a_read_only_run_folder_is_refused_before_training(
    data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = _stopped_after_one_epoch(tmp_path / "run", monkeypatch)
    before = _files(run)
    access = os.access
    read_only = lambda path, mode: False if Path(path) == run and mode == os.W_OK else access(path, mode)  # noqa: E731
    monkeypatch.setattr(os, "access", read_only)
    code, out = invoke(*TRAIN, "--epochs", "3", "--out", str(run), "--resume")
    assert code == 2 and out.count("\n") == 1 and f"cannot write into {run}" in out, out
    assert _files(run) == before


def test_resume_in_a_folder_without_a_run_says_a_new_one_starts(tmp_path: Path) -> None:
    from panning.training.run import check_out_dir

    with pytest.warns(UserWarning, match="--resume: .* holds no run yet, so a new one starts there"):
        check_out_dir(tmp_path / "typo", resume=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_out_dir(tmp_path / "new", resume=False)


def test_a_damaged_mask_file_of_a_run_says_the_run_cannot_resume(
    data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = ["run", "--model", "lenet300", "--dataset", "mnist", "--method", "synflow", "--sparsity", "0.9", *FAST]
    save = torch.save
    monkeypatch.setattr(torch, "save", _save_failing_after_first(save, OSError(errno.ENOSPC, "No space left")))
    invoke(*run, "--iterations", "2", "--epochs", "3", "--out", str(tmp_path / "r"))
    monkeypatch.setattr(torch, "save", save)
    (tmp_path / "r" / "masks.safetensors").write_bytes(b"garbage")
    code, out = invoke(*run, "--iterations", "2", "--epochs", "3", "--out", str(tmp_path / "r"), "--resume")
    assert code == 2 and "the run cannot resume: start it anew in another --out" in out, out


def test_a_full_disk_under_safetensors_is_one_line_and_leaves_no_file(
    data_root: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from safetensors import SafetensorError

    import panning.masks

    def full_disk(*args: object, **kwargs: object) -> None:
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(panning.masks, "save_file", full_disk)
    out = tmp_path / "masks" / "m.safetensors"
    out.parent.mkdir()
    prune = "prune --model lenet300 --dataset mnist --method random --sparsity 0.9 --val-size 50".split()
    code, output = invoke(*prune, "--out", str(out))
    assert code == 2 and "no space left on its device" in output and "Traceback" not in output
    assert list(out.parent.iterdir()) == []  # neither the file nor a temporary one
