"""Grids on other executors: a local Ray cluster gives the cells of a local run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from conftest import SMALL_GRID
from panning import bench
from panning.cli import cli
from panning.errors import UserError
from panning.executors import RayExecutor


class _NeverCalled:
    def submit(self, *args: object) -> None:
        raise AssertionError("a finished cell was submitted")


@pytest.fixture
def one_thread() -> object:
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # the Ray workers take one thread per cell: compare like with like
    yield
    torch.set_num_threads(before)


def test_a_grid_on_a_local_ray_cluster_gives_the_cells_of_jobs_1(
    data_root: Path, tmp_path: Path, one_thread: object
) -> None:
    pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'panning[ray]')")
    grid = bench.parse_grid(SMALL_GRID)
    serial = bench.run_grid(grid, tmp_path / "serial", jobs=1, data_dir=str(data_root))
    with RayExecutor(cpus_per_cell=1, num_cpus=2, num_gpus=0) as executor:
        remote = bench.run_grid(grid, tmp_path / "ray", data_dir=str(data_root), executor=executor, threads_per_cell=1)
        # On the same (GPU-less) cluster: "auto" asks for no GPU; cells that need one are refused at
        # once instead of waiting for ever, and the driver itself needs no GPU to say so.
        assert RayExecutor(gpus_per_cell=None).resources["num_gpus"] == 0
        with pytest.raises(UserError, match="2 CPUs and 0 GPUs and each cell asks for 1 CPUs and 1 GPUs.*--device cpu"):
            RayExecutor(gpus_per_cell=1)
        with pytest.raises(UserError, match="asks for 4 CPUs and 0 GPUs.*ask for at most 2 \\(--cpus-per-cell\\)"):
            RayExecutor(cpus_per_cell=4)
        config = tmp_path / "g.toml"
        grid_text = 'models = ["lenet300"]\ndatasets = ["mnist"]\nsparsities = [0.9]\nseeds = [0]\n'
        config.write_text(grid_text + '[[methods]]\nname = "random"\n')
        args = ["bench", str(config), "--executor", "ray", "--device", "cuda", "--out", str(tmp_path / "o")]
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 2 and "and 0 GPUs and each cell asks for" in result.output, result.output
    assert remote.ran == 4 and remote.failed == 0
    fields = ("cell", "nominal_sparsity", "effective_sparsity", "layer_density", "test_accuracy", "val_accuracy")
    assert [[r[f] for f in fields] for r in remote.rows] == [[r[f] for f in fields] for r in serial.rows]
    rerun = bench.run_grid(grid, tmp_path / "ray", data_dir=str(data_root), executor=_NeverCalled())
    assert rerun.ran == 0 and rerun.reused == 4  # finished cells are never submitted again


def test_the_ray_executor_without_ray_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import builtins

    real_import = builtins.__import__

    def no_ray(name: str, *args: object, **kwargs: object) -> object:
        if name == "ray" or name.startswith("ray."):
            raise ImportError("No module named 'ray'")
        return real_import(name, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(builtins, "__import__", no_ray)
    config = tmp_path / "g.toml"
    grid = 'models = ["lenet300"]\ndatasets = ["mnist"]\nsparsities = [0.9]\nseeds = [0]\n'
    config.write_text(grid + '[[methods]]\nname = "random"\n')
    result = CliRunner().invoke(cli, ["bench", str(config), "--executor", "ray", "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "pip install 'panning[ray]'" in result.output


@pytest.mark.parametrize(
    ("address", "message"),
    [("127.0.0.1:1", "nothing answers at the Ray address 127.0.0.1:1"), ("garbage", "cannot join the Ray cluster at")],
)
def test_a_ray_address_nothing_answers_at_or_a_malformed_one_is_one_line(address: str, message: str) -> None:
    ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'panning[ray]')")
    if ray.is_initialized():
        ray.shutdown()
    with pytest.raises(UserError, match=message):
        RayExecutor(address=address)
    assert not ray.is_initialized()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--executor", "ray", "--jobs", "2"], "--jobs sets local processes; under --executor ray"),
        (["--address", "auto"], "--address applies to --executor ray only"),
        (["--jobs", "2", "--cpus-per-cell", "2"], "--cpus-per-cell applies to --executor ray only"),
    ],
)
def test_an_option_the_executor_would_ignore_is_refused(tmp_path: Path, options: list[str], message: str) -> None:
    config = tmp_path / "g.toml"
    grid = 'models = ["lenet300"]\ndatasets = ["mnist"]\nsparsities = [0.9]\nseeds = [0]\n'
    config.write_text(grid + '[[methods]]\nname = "random"\n')
    result = CliRunner().invoke(cli, ["bench", str(config), "--out", str(tmp_path / "o"), *options])
    assert result.exit_code == 2 and message in result.output
    assert not (tmp_path / "o").exists()


def test_threads_and_things_that_are_no_executor_are_refused(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    grid = bench.parse_grid(SMALL_GRID)
    with ThreadPoolExecutor(2) as threads, pytest.raises(UserError, match="cells cannot run in threads"):
        bench.run_grid(grid, tmp_path / "t", executor=threads)
    with pytest.raises(TypeError, match="executor must have submit"):
        bench.run_grid(grid, tmp_path / "o", executor=object())
    with pytest.raises(TypeError, match="from load_grid or parse_grid"):
        bench.run_grid(SMALL_GRID, tmp_path / "d")  # type: ignore[arg-type]
    if not torch.cuda.is_available():  # here, a device the machine lacks is refused before any cell
        with pytest.raises(UserError, match="no CUDA GPU is available"):
            bench.run_grid(grid, tmp_path / "c", device="cuda")
    assert not list(tmp_path.iterdir())
