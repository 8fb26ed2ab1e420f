"""Training on two gloo processes (DistributedDataParallel) against one process at the same global batch."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file

import panning
from conftest import write_mnist
from panning import distributed
from panning.training import TrainConfig, build, train

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="this torch build has no torch.distributed")


class Interrupt(Exception):
    pass


def _config(**overrides: object) -> TrainConfig:
    base = dict(model="lenet300", dataset="mnist", epochs=3, batch_size=32, val_size=50, seed=0, device="cpu")
    base.update(overrides)
    return TrainConfig(**base)  # type: ignore[arg-type]


def _masks(model: torch.nn.Module) -> panning.Masks:
    return panning.prune(model, 0.9, "random", input_shape=(1, 28, 28), seed=0)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _rank(rank: int, world: int, port: int, folder: str) -> None:
    """One training process: refusals, an interrupted run resumed, and an uninterrupted one."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank)
    )
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    out, report = Path(folder), {}
    try:
        config = _config()
        model, data = build(config)
        try:
            train(model, data, _config(compact=True), out / "compact", masks=_masks(model), progress=False)
        except ValueError as error:
            report["compact"] = str(error)
        own = panning.prune(model, 0.9, "random", input_shape=(1, 28, 28), seed=rank)  # each rank screened its own
        try:
            train(model, data, config, out / "mixed", masks=own, progress=False)
        except ValueError as error:
            report["mixed"] = str(error)

        def stop_after_first(end: panning.training.EpochEnd) -> None:
            if end.epoch == 1:
                raise Interrupt

        model, data = build(config)
        try:
            train(
                model, data, config, out / "resumed", masks=_masks(model), progress=False, callbacks=[stop_after_first]
            )
        except Interrupt:
            report["interrupted"] = True
        dist.barrier()
        model, data = build(config)
        report["resumed"] = train(
            model, data, config, out / "resumed", masks=_masks(model), resume=True, progress=False
        )
        model, data = build(config)
        seen: set[int] = set()
        model.register_forward_pre_hook(lambda module, args: seen.add(len(args[0])) if module.training else None)
        report["whole"] = train(model, data, config, out / "whole", masks=_masks(model), progress=False)
        report["training_batches"] = sorted(seen)
    finally:
        dist.destroy_process_group()
    (out / f"rank{rank}.json").write_text(json.dumps(report))


def test_two_gloo_processes_train_like_one_and_resume(data_root: Path, tmp_path: Path) -> None:
    mp.spawn(_rank, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    reports = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    for report in reports:
        assert "not supported on several processes" in report["compact"] and report["interrupted"]
        assert "rank(s) 1 hold other masks than rank 0" in report["mixed"]
        assert report["resumed"]["test_accuracy"] == report["whole"]["test_accuracy"]
        assert max(report["training_batches"]) == 16  # each rank takes half of every global batch of 32
    assert not (tmp_path / "compact").exists() and not (tmp_path / "mixed").exists()

    config = _config()
    model, data = build(config)
    single = train(model, data, config, tmp_path / "single", masks=_masks(model), progress=False)
    whole, resumed = (
        load_file(tmp_path / "whole" / "model.safetensors"),
        load_file(tmp_path / "resumed" / "model.safetensors"),
    )
    one = load_file(tmp_path / "single" / "model.safetensors")
    masks = _masks(build(config)[0])
    for name in whole:
        assert torch.equal(whole[name], resumed[name]), name  # a resumed run is the uninterrupted one
        # Two processes at the same global batch are one process but for the order of float sums.
        assert torch.allclose(whole[name], one[name], atol=1e-4), name
    for name, mask in masks.items():
        assert torch.all(whole[name][~mask] == 0), name
    assert abs(reports[0]["whole"]["test_accuracy"] - single["test_accuracy"]) <= 0.02
    saved = json.loads((tmp_path / "whole" / "config.json").read_text())
    assert saved["distributed"] == {
        "world_size": 2,
        "backend": "gloo",
        "global_batch": 32,
        "batch_per_process": 16,
        "lr": config.lr,
    }
    assert not (tmp_path / "whole" / "checkpoint.pt").exists()


def test_torchrun_runs_the_cli_on_two_processes_screening_once(tmp_path: Path) -> None:
    root = tmp_path / "data"
    write_mnist(root / "mnist")
    common = ["--model", "lenet300", "--dataset", "mnist", "--method", "synflow", "--sparsity", "0.9"]
    common += ["--epochs", "1", "--batch-size", "32", "--val-size", "50", "--seed", "0", "--quiet"]
    env = {**os.environ, "PANNING_DATA": str(root), "OMP_NUM_THREADS": "1"}
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--standalone"]
    done = subprocess.run(
        [
            *launcher,
            "-m",
            "panning",
            "run",
            *common,
            "--trace",
            str(tmp_path / "trace.csv"),
            "--out",
            str(tmp_path / "two"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("final test accuracy") == 1  # rank 0 alone prints, screens and writes
    assert done.stdout.count("wrote the per-step trace") == 1
    single = subprocess.run(
        [sys.executable, "-m", "panning", "run", *common, "--out", str(tmp_path / "one")], env=env, capture_output=True
    )
    assert single.returncode == 0
    two, one = (json.loads((tmp_path / run / "metrics.json").read_text()) for run in ("two", "one"))
    assert abs(two["test_accuracy"] - one["test_accuracy"]) <= 0.02
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(p.name for p in (tmp_path / "one").iterdir())
    masks = panning.masks.load(tmp_path / "two" / "masks.safetensors")
    assert masks.equal(panning.masks.load(tmp_path / "one" / "masks.safetensors"))
    weights = load_file(tmp_path / "two" / "model.safetensors")
    for name, mask in masks.items():
        assert torch.all(weights[name][~mask] == 0), name


def test_the_environment_of_torchrun_is_read_and_checked() -> None:
    assert distributed.from_environment({"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1"}) == distributed.Workers(
        3, 4, 1
    )
    with pytest.raises(ValueError, match="rank 2 of 2"):
        distributed.from_environment({"WORLD_SIZE": "2", "RANK": "2"})
    with pytest.raises(ValueError, match="must be integers"):
        distributed.from_environment({"WORLD_SIZE": "two"})
    assert distributed.start("cpu") == distributed.Workers()  # outside torchrun: one process, no group
    assert not dist.is_initialized()
