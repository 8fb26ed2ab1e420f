"""The benchmark grid runner and its reports: hashed cells, reuse, resume, failures, bad configs."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner

import panning
from conftest import SMALL_GRID as SMALL
from conftest import write_mnist
from panning import bench, report
from panning.cli import cli
from panning.errors import UserError
from panning.io import source_commit
from panning.screening.pruning import register_method, unregister_method

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted(str(p.relative_to(REPO / "benchmarks")) for p in (REPO / "benchmarks").glob("**/*.toml"))


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


@pytest.fixture
def big_enough_mnist(data_root: Path) -> Path:
    """The committed configs hold out 5,000 validation examples: give them 5,200 training ones."""
    write_mnist(data_root / "mnist", train=5200, test=200)
    return data_root


@pytest.mark.parametrize("config", CONFIGS)
def test_committed_configs_parse_with_and_without_quick(config: str) -> None:
    full = bench.load_grid(REPO / "benchmarks" / config)
    quick = bench.load_grid(REPO / "benchmarks" / config, quick=True)
    assert len(quick.cells) < len(full.cells)
    assert quick.name == full.name + "-quick"


def test_quick_grid_runs_end_to_end_and_a_rerun_does_no_new_work(big_enough_mnist: Path, tmp_path: Path) -> None:
    config = str(REPO / "benchmarks" / "smoke" / "lenet5-mnist.toml")
    out, cells = tmp_path / "results", tmp_path / "cells"
    code, text = invoke("bench", config, "--quick", "--out", str(out), "--cells", str(cells))
    assert code == 0, text
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert len(rows) == 12 and {r["status"] for r in rows} == {"ok"}
    assert set(bench.RESULT_COLUMNS) <= set(rows[0])
    # Every column is filled, by the cell or by the run's metrics of the same name (RunResult).
    assert {column for r in rows for column in bench.RESULT_COLUMNS if r[column] == ""} == {"error", "variant"}
    assert {r["method"] for r in rows} == {"random", "magnitude", "snip", "grasp", "synflow", "iter-snip"}
    for row in rows:
        assert 0 <= float(row["test_accuracy"]) <= 1 and 0 <= float(row["val_accuracy"]) <= 1
        assert float(row["nominal_sparsity"]) == pytest.approx(float(row["sparsity"]), abs=1e-5)
        assert float(row["effective_sparsity"]) >= float(row["nominal_sparsity"])
    jsonl = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["cell"] for r in jsonl] == [r["cell"] for r in rows]
    stamps = {p: p.stat().st_mtime_ns for p in cells.glob("*/result.json")}
    assert len(stamps) == 12
    code, text = invoke("bench", config, "--quick", "--out", str(out), "--cells", str(cells))
    assert code == 0, text
    assert "0 run now, 12 already done, 0 failed" in text
    assert {p: p.stat().st_mtime_ns for p in cells.glob("*/result.json")} == stamps


@pytest.mark.parametrize(
    "config", [c for c in CONFIGS if (REPO / "benchmarks" / "results" / c[: -len(".toml")] / "results.jsonl").is_file()]
)
def test_committed_results_keep_the_keys_their_config_gives(config: str) -> None:
    results = REPO / "benchmarks" / "results" / config[: -len(".toml")] / "results.jsonl"
    rows = [json.loads(line) for line in results.open()]
    grid = bench.load_grid(REPO / "benchmarks" / config)
    expected = {(c.label, c.model, c.dataset, c.sparsity, c.seed): c.key for c in grid.cells}
    committed = {(r["label"], r["model"], r["dataset"], r["sparsity"], r["seed"]): r["cell"] for r in rows}
    assert committed == expected


def test_every_stored_cell_sits_in_the_folder_its_config_names() -> None:
    """A committed cell moved, edited or migrated by hand would be reused under a config it does not hold."""
    listed = subprocess.run(
        ["git", "ls-files", "benchmarks/results/cells/*/cell.json"], cwd=REPO, capture_output=True, text=True
    )
    stored = [REPO / line for line in listed.stdout.splitlines()]
    assert stored, "no committed cells found"
    wrong = []
    for path in stored:
        written = json.loads(path.read_text())
        canonical = {name: value for name, value in written.items() if name not in ("key", "label")}
        if not path.parent.name == written["key"] == bench.canonical_key(canonical):
            wrong.append(path.parent.name)
    assert not wrong, f"cells whose folder, recorded key and config disagree: {wrong}"


def test_format_2_keys_hold_resolved_values_so_a_changed_default_gets_new_cells() -> None:
    def key(method: dict[str, Any], **screening: Any) -> str:
        return bench.parse_grid({**SMALL, "methods": [method], "screening": screening}).cells[0].key

    default = panning.screening.multi_index.Panning()
    assert key({"name": "panning"}) == key(
        {"name": "panning", "options": {"combination": default.combination, "stages": default.stages}}
    )
    assert key({"name": "panning"}) != key({"name": "panning", "options": {"stages": "paper"}})
    assert (
        key({"name": "synflow"})
        == key({"name": "synflow", "iterations": 100})
        == key({"name": "synflow"}, iterations=100)
    )
    assert key({"name": "snip"}) == key({"name": "snip", "options": {"temperature": 1.0}})
    assert key({"name": "snip"}) == key({"name": "snip"}, samples_per_class=10)
    assert key({"name": "snip"}) != key({"name": "snip"}, samples_per_class=2)
    written = bench.parse_grid({**SMALL, "format": 1, "methods": [{"name": "snip"}]}).cells[0]
    assert dict(written.options) == {} and "format" not in written.canonical()


def test_an_option_default_changed_later_keeps_format_1_cells_only_when_pinned() -> None:
    def cell(options: dict[str, Any]) -> bench.Cell:
        return bench.parse_grid({**SMALL, "format": 1, "methods": [{"name": "panning", "options": options}]}).cells[0]

    pinned, default = cell({"precision": "float64"}), cell({})
    assert dict(pinned.options) == {} and pinned.method_options() == {"precision": "float64"}
    assert dict(default.options) == {"precision": "float32"} == default.method_options()
    assert pinned.key != default.key == cell({"precision": "float32"}).key
    # Format 2 holds the resolved value either way.
    assert (
        bench.parse_grid({**SMALL, "methods": [{"name": "panning"}]}).cells[0].method_options()["precision"]
        == "float32"
    )


def test_a_method_may_run_at_its_own_sparsities() -> None:
    methods = [{"name": "random", "label": "dense", "sparsities": [0.0]}, {"name": "synflow", "iterations": 5}]
    grid = bench.parse_grid({**SMALL, "methods": methods})
    assert [(c.label, c.sparsity) for c in grid.cells] == [("dense", 0.0), ("synflow", 0.9), ("synflow", 0.99)]
    assert "sparsities" not in dict(grid.cells[0].screening)
    with pytest.raises(UserError, match=r"methods\[0\].sparsities must be a non-empty list"):
        bench.parse_grid({**SMALL, "methods": [{"name": "random", "sparsities": 0.5}]})


def test_a_training_default_changed_later_keeps_old_cells_only_when_pinned() -> None:
    pinned = bench.parse_grid({**SMALL, "format": 1, "training": {**SMALL["training"], "clip_grad_norm": "none"}})
    pinned = pinned.cells[0]
    default = bench.parse_grid({**SMALL, "format": 1}).cells[0]
    assert "clip_grad_norm" not in dict(pinned.training)  # the key cells had before the field existed
    assert dict(default.training)["clip_grad_norm"] == panning.training.TrainConfig().clip_grad_norm
    assert pinned.key != default.key
    assert pinned.train_config().clip_grad_norm is None


def test_cell_key_follows_the_canonical_config_not_the_label() -> None:
    base = bench.parse_grid(SMALL).cells[0]
    relabelled = bench.parse_grid({**SMALL, "methods": [{"name": "random", "label": "rnd"}]}).cells[0]
    longer = bench.parse_grid({**SMALL, "training": {**SMALL["training"], "epochs": 2}}).cells[0]
    assert relabelled.key == base.key
    assert longer.key != base.key
    assert len({c.key for c in bench.parse_grid(SMALL).cells}) == 4


def test_parallel_jobs_give_the_rows_of_a_serial_run(data_root: Path, tmp_path: Path) -> None:
    grid = bench.parse_grid(SMALL)
    serial = bench.run_grid(grid, tmp_path / "serial", jobs=1, device="cpu")
    parallel = bench.run_grid(grid, tmp_path / "parallel", jobs=2, device="cpu")
    assert parallel.ran == serial.ran == 4 and parallel.failed == 0
    for a, b in zip(serial.rows, parallel.rows):
        assert (a["cell"], a["nominal_sparsity"], a["effective_sparsity"]) == (
            b["cell"],
            b["nominal_sparsity"],
            b["effective_sparsity"],
        )
        assert a["test_accuracy"] == pytest.approx(b["test_accuracy"], abs=0.02)


def test_collect_writes_the_finished_cells_and_marks_the_rest_pending_without_running(
    data_root: Path, tmp_path: Path
) -> None:
    grid = bench.parse_grid(SMALL)
    bench.run_grid(grid, tmp_path / "out", jobs=1)
    waiting = grid.cells[-1]
    shutil.rmtree(tmp_path / "out" / "cells" / waiting.key)
    code, text = invoke(
        "bench",
        str(_write_config(tmp_path)),
        "--collect",
        "--out",
        str(tmp_path / "out"),
        "--cells",
        str(tmp_path / "out" / "cells"),
    )
    assert code == 0, text
    assert "0 run now, 3 already done, 0 failed, 1 pending" in text
    assert "1 cell(s) of the grid not run yet" in text
    assert not (tmp_path / "out" / "cells" / waiting.key).exists()
    rows = bench.read_results(tmp_path / "out" / "results.csv")
    assert [row["status"] for row in rows] == ["ok", "ok", "ok", "pending"]
    assert rows[-1]["cell"] == waiting.key and rows[-1]["test_accuracy"] is None


def _write_config(folder: Path) -> Path:
    methods = "".join(
        f'[[methods]]\nname = "{m["name"]}"\n' + (f"iterations = {m['iterations']}\n" if "iterations" in m else "")
        for m in SMALL["methods"]
    )
    training = ", ".join(f"{k} = {v}" for k, v in SMALL["training"].items())
    path = folder / "small.toml"
    path.write_text(
        'models = ["lenet300"]\ndatasets = ["mnist"]\nsparsities = [0.9, 0.99]\nseeds = [0]\n'
        f"training = {{ {training} }}\n{methods}"
    )
    assert [c.key for c in bench.load_grid(path).cells] == [c.key for c in bench.parse_grid(SMALL).cells]
    return path


def test_only_runs_the_cells_of_the_labels_asked_for_and_leaves_the_rest_pending(
    data_root: Path, tmp_path: Path
) -> None:
    config = tmp_path / "small.toml"
    config.write_text(
        'models = ["lenet300"]\ndatasets = ["mnist"]\nsparsities = [0.9, 0.99]\nseeds = [0]\n'
        "training = { epochs = 1, val_size = 50, batch_size = 64 }\n"
        '[[methods]]\nname = "random"\n[[methods]]\nname = "magnitude"\n'
    )
    store, out = str(tmp_path / "cells"), str(tmp_path / "out")
    code, text = invoke("bench", str(config), "--cells", store, "--out", out, "--only", "magnitude")
    assert code == 0 and "2 run now" in text and "2 pending" in text
    rows = bench.read_results(Path(out) / "results.csv")
    assert {(r["label"], r["status"]) for r in rows} == {("magnitude", "ok"), ("random", "pending")}
    code, text = invoke("bench", str(config), "--cells", store, "--out", out, "--only", "random,snip")
    assert code == 2 and "has no method labelled 'snip'; its labels: magnitude, random" in text
    code, text = invoke("bench", str(config), "--cells", store, "--out", out, "--only", ",")
    assert code == 2 and "needs at least one label to run" in text
    grid = bench.load_grid(config)
    again = bench.run_grid(grid, out, store=store, only=(label for label in ["random"]))  # a generator
    assert again.ran == 2 and {r["status"] for r in again.rows} == {"ok"}


def test_any_executor_with_submit_and_result_runs_the_cells(data_root: Path, tmp_path: Path) -> None:
    class Job:  # the shape of a submitit job: result(), not a concurrent.futures.Future
        def __init__(self, value: dict[str, Any]) -> None:
            self.value = value

        def result(self) -> dict[str, Any]:
            return self.value

    class InlineExecutor:
        def __init__(self) -> None:
            self.submitted = 0

        def submit(self, fn: Any, *args: Any) -> Job:
            self.submitted += 1
            return Job(fn(*args))

    grid = bench.parse_grid(SMALL)
    serial = bench.run_grid(grid, tmp_path / "serial", jobs=1)
    executor = InlineExecutor()
    other = bench.run_grid(grid, tmp_path / "other", executor=executor, threads_per_cell=torch.get_num_threads())
    assert executor.submitted == 4 and other.ran == 4
    assert [(r["cell"], r["test_accuracy"]) for r in other.rows] == [
        (r["cell"], r["test_accuracy"]) for r in serial.rows
    ]


@pytest.mark.slow
def test_submitits_local_executor_runs_the_cells_as_slurm_would(data_root: Path, tmp_path: Path) -> None:
    """The Slurm path of the benchmarks guide, with submitit's local executor standing in for Slurm:
    every cell a separate pickled job in its own process, results the same as in this process."""
    submitit = pytest.importorskip("submitit", reason="the slurm extra is not installed (pip install 'panning[slurm]')")
    grid = bench.parse_grid({**SMALL, "sparsities": [0.9]})
    serial = bench.run_grid(grid, tmp_path / "serial", jobs=1)
    executor = submitit.AutoExecutor(folder=tmp_path / "logs", cluster="local")
    executor.update_parameters(timeout_min=10)
    other = bench.run_grid(grid, tmp_path / "slurm", executor=executor, threads_per_cell=torch.get_num_threads())
    assert other.ran == 2 and other.failed == 0
    assert len(list((tmp_path / "logs").glob("*_result.pkl"))) == 2  # one submitit job per cell
    assert [(r["cell"], r["test_accuracy"]) for r in other.rows] == [
        (r["cell"], r["test_accuracy"]) for r in serial.rows
    ]


@pytest.fixture
def exploding_method() -> Any:
    class Explodes:
        data_driven = False
        default_iterations = 1

        def __call__(self, model: torch.nn.Module, context: Any) -> dict[str, torch.Tensor]:
            raise RuntimeError("boom in the scorer")

    register_method("explodes-at-step")(Explodes)

    yield "explodes-at-step"
    unregister_method("explodes-at-step")
    assert "explodes-at-step" not in panning.method_names()
    with pytest.raises(ValueError, match="no method .explodes-at-step. is registered"):
        unregister_method("explodes-at-step")


def test_failed_cell_is_recorded_the_grid_goes_on_and_a_rerun_retries_only_it(
    data_root: Path, tmp_path: Path, exploding_method: str
) -> None:
    grid = bench.parse_grid({**SMALL, "methods": [{"name": exploding_method}, {"name": "random"}]})
    summary = bench.run_grid(grid, tmp_path / "out")
    assert summary.failed == 2 and summary.ran == 4
    failed = [r for r in summary.rows if r["status"] == "failed"]
    assert all("boom in the scorer" in r["error"] for r in failed)
    assert all(r["status"] == "ok" for r in summary.rows if r["method"] == "random")
    assert "Traceback" in (tmp_path / "out" / "cells" / failed[0]["cell"] / "error.txt").read_text()
    again = bench.run_grid(grid, tmp_path / "out")
    assert (again.ran, again.reused, again.failed) == (2, 2, 2)
    table = report.results_table(again.rows)
    assert "(1 failed)" in table and "4 run(s) failed" not in table and "2 run(s) failed" in table


def test_interrupted_cell_resumes_to_the_uninterrupted_result(
    data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cell = bench.parse_grid({**SMALL, "training": {**SMALL["training"], "epochs": 2}}).cells[1]
    reference = bench.run_cell(cell, tmp_path / "reference")
    real_train = bench.cells.train

    def stop_after_first_epoch(*args: Any, **kwargs: Any) -> Any:
        def interrupt(event: Any) -> None:
            if event.epoch == 1:
                raise KeyboardInterrupt

        return real_train(*args, callbacks=[interrupt], **kwargs)

    monkeypatch.setattr(bench.cells, "train", stop_after_first_epoch)
    with pytest.raises(KeyboardInterrupt):
        bench.run_cell(cell, tmp_path / "store")
    assert (tmp_path / "store" / cell.key / "run" / "checkpoint.pt").is_file()
    monkeypatch.setattr(bench.cells, "train", real_train)
    resumed = bench.run_cell(cell, tmp_path / "store")
    assert resumed["test_accuracy"] == reference["test_accuracy"]
    first = (tmp_path / "reference" / cell.key / "run" / "model.safetensors").read_bytes()
    assert (tmp_path / "store" / cell.key / "run" / "model.safetensors").read_bytes() == first


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"colour": "red"}, "unknown key 'colour' in the config; valid: name, description, models"),
        ({"methods": [{"name": "snipp"}]}, "unknown method 'snipp' in methods[0]; valid: "),
        ({"methods": [{"name": "snip", "optons": {}}]}, "unknown key 'optons' in methods[0]; valid: name, label"),
        ({"methods": [{"name": "snip", "options": {"temprature": 2}}]}, "unknown option 'temprature' for"),
        ({"methods": [{"name": "snip", "options": {"temperature": "hot"}}]}, "temperature must be a positive number"),
        ({"methods": [{"name": "panning", "options": {"temperature": -1}}]}, "temperature must be a finite positive"),
        ({"models": ["lenet7"]}, "unknown model 'lenet7' in models; valid: "),
        ({"seeds": []}, "the grid has no cells: seeds is empty"),
        ({"sparsities": [1.0]}, "sparsity"),
        ({"training": {"epoch": 1}}, "unknown key 'epoch' in [training]; valid: epochs"),
        ({"screening": {"samples": 3}}, "unknown key 'samples' in [screening]"),
        ({"screening": {"schedule": "cubic"}}, "[screening]: unknown schedule 'cubic'; valid: exponential, linear"),
        ({"methods": [{"name": "snip", "iterations": 0}]}, "methods[0]: iterations must be a positive integer"),
        ({"methods": [{"name": "snip", "regrowth": "no"}]}, "methods[0]: regrowth must be True or False"),
        ({"methods": [{"name": "snip"}, {"name": "snip"}]}, "two methods share the label 'snip'"),
        ({"format": 3}, "format must be 1 to 2 (the cell-key layout), got 3"),
    ],
)
def test_bad_configs_name_the_problem(change: dict[str, Any], message: str) -> None:
    with pytest.raises(UserError) as error:
        bench.parse_grid({**SMALL, **change})
    assert message in str(error.value)


def test_bench_cli_errors_are_one_line_exit_2(tmp_path: Path) -> None:
    config = tmp_path / "grid.toml"
    config.write_text('models = ["lenet300"]\ndatasets = ["mnist"]\nsparsities = [0.9]\nseeds = [0]\n')
    code, text = invoke("bench", str(config), "--quick")
    assert code == 2 and text.count("\n") == 1 and "has no [quick] table" in text
    config.write_text("models = [")
    code, text = invoke("bench", str(config))
    assert code == 2 and "is not valid TOML" in text
    code, text = invoke("bench", str(tmp_path / "missing.toml"))
    assert code == 2 and "no config file" in text
    code, text = invoke("report", str(tmp_path / "missing.csv"))
    assert code == 2 and "no results file" in text


def _rows() -> list[dict[str, Any]]:
    rows = []
    for label, base in (("a", 0.9), ("b", 0.8)):
        for sparsity in (0.9, 0.99):
            for seed in (0, 1, 2):
                rows.append(
                    {
                        "model": "lenet300",
                        "dataset": "mnist",
                        "method": label,
                        "label": label,
                        "sparsity": sparsity,
                        "seed": seed,
                        "status": "ok",
                        "epochs": 1,
                        "nominal_sparsity": sparsity,
                        "effective_sparsity": sparsity + 0.001 * seed,
                        "prune_seconds": 0.5,
                        "test_accuracy": base - (sparsity - 0.9) * (5 if label == "a" else 1) + 0.01 * seed,
                        "val_accuracy": base,
                        "dead": False,
                        "collapsed": False,
                        "layer_density": json.dumps({"fc1.weight": 1 - sparsity, "fc2.weight": 0.5}),
                        "format": 1,
                    }
                )
    return rows


def test_report_marks_the_best_mean_per_column_and_regenerates_identically(tmp_path: Path) -> None:
    bench.write_results(tmp_path, _rows())
    code, first = invoke("report", str(tmp_path / "results.csv"))
    assert code == 0, first
    table = (tmp_path / "report.md").read_text()
    assert "| a | **91.00 ± 1.00** | 46.00 ± 1.00 |" in table
    assert "| b | 81.00 ± 1.00 | **72.00 ± 1.00** |" in table
    pngs = sorted(p.name for p in tmp_path.glob("*.png"))
    assert pngs == [f"lenet300-mnist-{kind}.png" for kind in ("accuracy", "effective", "layers", "screening")]
    images = {p: p.read_bytes() for p in tmp_path.glob("*.png")}
    assert all(data[:8] == b"\x89PNG\r\n\x1a\n" for data in images.values())
    code, _ = invoke("report", str(tmp_path / "results.jsonl"))
    assert code == 0
    assert (tmp_path / "report.md").read_text() == table
    assert {p: p.read_bytes() for p in tmp_path.glob("*.png")} == images


def test_report_plots_stay_in_their_folder_and_tell_many_methods_apart(tmp_path: Path) -> None:
    rows = [{**row, "model": "../../escaped"} for row in _rows()]
    plots = report.plot_results(rows, tmp_path / "plots")
    assert plots and all(Path(plot).parent == tmp_path / "plots" for plot in plots)
    assert not list(tmp_path.glob("*.png"))
    labels = [f"method-{i}" for i in range(15)]  # the real-budget grids plot up to 15 methods
    styles = report._styles(labels)
    assert len({(style["color"], style["marker"]) for style in styles.values()}) == 15
    assert len({style["color"] for style in report._styles(labels[:10]).values()}) == 10


def test_results_of_an_older_layout_read_and_a_newer_one_is_refused(tmp_path: Path) -> None:
    old = tmp_path / "old.csv"
    old.write_text("model,dataset,method,sparsity,seed,test_accuracy,status\nlenet5,mnist,snip,0.99,0,0.9,ok\n")
    (row,) = bench.read_results(old)
    assert row["label"] == "snip" and row["val_accuracy"] is None and row["format"] == 1
    assert "snip" in report.results_table([row])
    newer = tmp_path / "new.jsonl"
    newer.write_text(json.dumps({**row, "format": bench.RESULTS_FORMAT + 1}) + "\n")
    with pytest.raises(UserError, match="newer panning"):
        bench.read_results(newer)
    other = tmp_path / "other.csv"
    other.write_text("a,b\n1,2\n")
    with pytest.raises(UserError, match="not a results table"):
        bench.read_results(other)


@pytest.mark.parametrize(
    "line,message",
    [
        ("lenet5,mnist,snip,,0,0.9,ok,{}", "row 2: no sparsity"),
        ("lenet5,mnist,snip,0.99,0,high,ok,{}", "row 2: column test_accuracy holds 'high', which is not a float"),
        ("lenet5,mnist,snip,0.99,0,0.9,ok,{oops", "row 2: column layer_density is not JSON"),
        ("lenet5,mnist,snip,0.99,0,97.5,ok,{}", "row 2: column test_accuracy holds 97.5, which is not a fraction"),
        ("lenet5,mnist,snip,1.5,0,0.9,ok,{}", "row 2: column sparsity holds 1.5, which is not a fraction"),
        ("lenet5,mnist,snip,0.99,0,nan,ok,{}", "row 2: column test_accuracy holds nan, which is not a fraction"),
    ],
)
def test_a_damaged_results_file_is_one_line_naming_row_and_column(tmp_path: Path, line: str, message: str) -> None:
    damaged = tmp_path / "results.csv"
    good = "lenet5,mnist,snip,0.99,1,0.9,ok,{}"
    damaged.write_text(f"model,dataset,method,sparsity,seed,test_accuracy,status,layer_density\n{good}\n{line}\n")
    code, text = invoke("report", str(damaged), "--no-plots")
    assert code == 2 and message in text and "Traceback" not in text, text
    damaged.write_bytes(b"model,method,sparsity,test_accuracy\n\xff\xfe\n")
    code, text = invoke("report", str(damaged), "--no-plots")
    assert code == 2 and "is not a text file" in text


def test_a_cut_results_jsonl_names_its_line(tmp_path: Path) -> None:
    bench.write_results(tmp_path, _rows())
    lines = (tmp_path / "results.jsonl").read_text().splitlines()
    (tmp_path / "results.jsonl").write_text("\n".join([*lines[:2], lines[2][:20]]) + "\n")
    with pytest.raises(UserError, match="results.jsonl, line 3: not JSON"):
        bench.read_results(tmp_path / "results.jsonl")


def test_a_results_file_saved_by_a_spreadsheet_keeps_its_dead_runs(tmp_path: Path) -> None:
    saved = tmp_path / "results.csv"
    header = "model,dataset,method,sparsity,seed,test_accuracy,status,dead"
    saved.write_text(f"{header}\nlenet5,mnist,snip,0.99,0,0.1135,ok,TRUE\nlenet5,mnist,snip,0.99,1,0.98,ok,FALSE\n")
    assert [row["dead"] for row in bench.read_results(saved)] == [True, False]
    saved.write_text(f"{header}\nlenet5,mnist,snip,0.99,0,0.1135,ok,perhaps\n")
    with pytest.raises(UserError, match="column dead holds 'perhaps', which is not a bool"):
        bench.read_results(saved)


def test_report_plots_a_screening_trace(data_root: Path, tmp_path: Path) -> None:
    trace = tmp_path / "trace.csv"
    code, text = invoke(
        "prune",
        *("--model", "lenet300", "--dataset", "mnist", "--method", "panning", "--sparsity", "0.99"),
        *("--iterations", "4", "--val-size", "50", "--trace", str(trace), "--out", str(tmp_path / "m.safetensors")),
    )
    assert code == 0, text
    code, text = invoke("report", str(trace))
    assert code == 0, text
    assert (tmp_path / "trace.png").read_bytes()[:4] == b"\x89PNG"
    lines = trace.read_text().splitlines()
    damaged = tmp_path / "damaged.csv"
    for content, message in (
        ("\n".join([lines[0], "garbage" + lines[1][1:]]), "line 2: step is 'garbage"),
        (lines[0] + "\n", "holds no steps"),
    ):
        damaged.write_text(content)
        code, text = invoke("report", str(damaged))
        assert code == 2 and message in text and not (tmp_path / "damaged.png").exists(), text
    damaged.write_bytes(lines[0].encode() + b"\n1,\xff\xfe\n")
    code, text = invoke("report", str(damaged))
    assert code == 2 and "not UTF-8" in text, text
    code, text = invoke("report", str(trace), "--no-plots")
    assert code == 2 and "drop --no-plots" in text


def test_registry_model_in_grid_is_created_at_its_seed(data_root: Path, tmp_path: Path) -> None:
    cell = bench.parse_grid(SMALL).cells[0]
    row = bench.run_cell(cell, tmp_path)
    masks = panning.masks.load(tmp_path / cell.key / "run" / "masks.safetensors")
    torch.manual_seed(cell.seed)
    model = panning.models.create("lenet300")
    assert masks.metadata["init_seed"] == 0 and row["status"] == "ok"
    again = panning.prune(model, cell.sparsity, "random", input_shape=(1, 28, 28), seed=cell.seed)
    assert all(torch.equal(again[n], masks[n]) for n in masks)


def test_the_source_commit_is_dirty_for_changed_code_but_not_for_written_results(tmp_path: Path) -> None:
    def git(*args: str) -> None:
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    (tmp_path / "code.py").write_text("a = 1\n")
    (tmp_path / "benchmarks" / "results" / "results.csv").write_text("x\n1\n")
    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "first")
    clean = source_commit(tmp_path)
    assert clean != "unknown" and not clean.endswith("+dirty")
    (tmp_path / "benchmarks" / "results" / "results.csv").write_text("x\n2\n")
    assert source_commit(tmp_path) == clean
    (tmp_path / "code.py").write_text("a = 2\n")
    assert source_commit(tmp_path) == clean + "+dirty"


def test_a_cell_with_fewer_runs_than_seeds_says_how_many_it_has() -> None:
    def row(label: str, seed: int) -> dict[str, Any]:
        return {
            "model": "m",
            "dataset": "d",
            "label": label,
            "sparsity": 0.9,
            "seed": seed,
            "status": "ok",
            "test_accuracy": 0.9,
            "val_accuracy": 0.9,
            "effective_sparsity": 0.9,
            "prune_seconds": 1.0,
        }

    table = report.results_table([row("a", 0), row("a", 1), row("b", 0)])
    assert "| b | **90.00 ± 0.00** (1 of 2 runs) |" in table and "| a | **90.00 ± 0.00** |" in table


@pytest.mark.parametrize("damage", ["[]", "{}", "garbage"])
def test_a_damaged_cell_result_is_pending_and_its_cell_runs_again(data_root: Path, tmp_path: Path, damage: str) -> None:
    grid = bench.parse_grid(SMALL)
    bench.run_grid(grid, tmp_path / "out", jobs=1)
    damaged = grid.cells[0]
    result = tmp_path / "out" / "cells" / damaged.key / "result.json"
    result.write_text(damage)
    with pytest.warns(UserWarning, match="the cell runs again"):
        summary = bench.run_grid(grid, tmp_path / "collected", store=tmp_path / "out" / "cells", run=False)
    rows = bench.read_results(summary.results_csv)
    assert [row["status"] for row in rows] == ["pending", "ok", "ok", "ok"]
    with pytest.warns(UserWarning, match="the cell runs again"):
        bench.run_grid(grid, tmp_path / "out", jobs=1)
    assert json.loads(result.read_text())["status"] == "ok"


def test_a_typo_in_quick_or_a_label_that_only_cannot_name_is_refused_without_quick() -> None:
    with pytest.raises(UserError, match=r"\[quick\]"):
        bench.parse_grid({**SMALL, "quick": {"bogus": 1}})
    with pytest.raises(UserError, match="epoks"):
        bench.parse_grid({**SMALL, "quick": {"training": {"epoks": 1}}})
    for label in ("", "a,b"):
        with pytest.raises(UserError, match=r"methods\[0\].label must be a non-empty name without commas"):
            bench.parse_grid({**SMALL, "methods": [{"name": "random", "label": label}]})
    assert len(bench.parse_grid({**SMALL, "quick": {"seeds": [1]}}).cells) == len(bench.parse_grid(SMALL).cells)


def test_a_data_dir_without_the_grids_data_is_refused_before_any_cell(data_root: Path, tmp_path: Path) -> None:
    config = tmp_path / "g.toml"
    grid = 'models = ["lenet300"]\ndatasets = ["mnist"]\nsparsities = [0.9, 0.95]\nseeds = [0]\n'
    config.write_text(grid + '[[methods]]\nname = "random"\n')
    empty = tmp_path / "empty"
    empty.mkdir()
    args = ["--cells", str(tmp_path / "c"), "--out", str(tmp_path / "o"), "--data-dir", str(empty)]
    code, text = invoke("bench", str(config), *args)
    assert code == 2 and f"--data-dir {empty} holds no mnist" in text, text
    assert not (tmp_path / "c").exists()  # refused before anything was written
    sanity = ["sanity", "--model", "lenet300", "--dataset", "mnist", "--method", "random", "--sparsity", "0.9"]
    code, text = invoke(*sanity, *args)
    assert code == 2 and "holds no mnist" in text, text


def test_a_cell_pinned_to_float64_screens_in_float64(data_root: Path, tmp_path: Path) -> None:
    """Panning's key names float64 by leaving it out (so cells from before keep their keys); the
    cell must still run in float64, not in today's default."""
    methods = [
        {"name": "panning", "label": "p64", "iterations": 3, "options": {"precision": "float64"}},
        {"name": "panning", "label": "p32", "iterations": 3},
    ]
    grid = bench.parse_grid({**SMALL, "sparsities": [0.99], "methods": methods})
    pinned, default = grid.cells
    assert "precision" not in pinned.options and pinned.method_options()["precision"] == "float64"
    for cell, precision in ((pinned, "float64"), (default, "float32")):
        assert bench.run_cell(cell, tmp_path)["status"] == "ok"
        masks = panning.masks.load(tmp_path / cell.key / "run" / "masks.safetensors")
        assert masks.metadata["options"]["precision"] == precision, cell.label


def test_a_cell_finished_by_another_grid_while_waiting_is_reused(
    data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import contextlib

    from panning.bench import cells

    cell = bench.parse_grid(SMALL).cells[0]
    finished = bench.run_cell(cell, tmp_path / "first")
    real_lock = cells._cell_lock

    @contextlib.contextmanager
    def other_grid_finishes_first(store: Path, key: str) -> Iterator[None]:
        with real_lock(store, key):  # the other grid held the cell and wrote its result meanwhile
            shutil.copy(tmp_path / "first" / key / "result.json", store / key / "result.json")
            yield

    monkeypatch.setattr(cells, "_cell_lock", other_grid_finishes_first)
    monkeypatch.setattr(cells, "train", lambda *args, **kwargs: pytest.fail("the cell was trained twice"))
    assert bench.run_cell(cell, tmp_path / "second") == finished
    assert (tmp_path / "second" / ".locks" / f"{cell.key}.lock").is_file()
    assert not (tmp_path / "second" / cell.key / "run").exists()
