"""Where a grid's cells run besides local processes: a Ray cluster (``pip install 'panning[ray]'``),
or any executor with ``submit(fn, *args) -> handle.result()`` passed to :func:`panning.bench.run_grid`
(``concurrent.futures`` executors, submitit's Slurm executor).

Every worker must see the grid's cell store (a shared file system on a cluster); a cell's folder
is written by one worker only, and an interrupted cell resumes on the next run, wherever it runs.

Examples:
    >>> executor_names()
    ['local', 'ray']
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

from panning.errors import UserError, first_line


def executor_names() -> list[str]:
    """The executors ``panning bench --executor`` knows."""
    return ["local", "ray"]


def _check_reachable(address: str | None, seconds: float = 10.0) -> None:
    """Refuse, within ``seconds``, a ``host:port`` address nothing answers at (Ray itself retries
    for minutes); other forms (``auto``, ``ray://...``) are left to Ray."""
    if not address or address == "auto" or "://" in address or address.count(":") != 1:
        return
    host, _, port = address.rpartition(":")
    if not port.isdigit():
        return
    try:
        socket.create_connection((host, int(port)), timeout=seconds).close()
    except OSError as error:
        raise UserError(
            f"nothing answers at the Ray address {address} ({error.strerror or error}); check --address "
            "(host:port of the cluster's head, from `ray start --head`)"
        ) from None


class RayExecutor:
    """Each submitted call becomes a Ray task asking for ``cpus_per_cell`` CPUs (and
    ``gpus_per_cell`` GPUs; ``None``: one where the cluster has GPUs, else none); ``address``
    joins a running cluster, ``None`` starts a local one. A cluster with fewer CPUs or GPUs than a
    cell asks for is refused at once (its tasks would wait for ever).

    Examples:
        >>> executor = RayExecutor(address="auto", cpus_per_cell=2, gpus_per_cell=1)  # doctest: +SKIP
        >>> run_grid(grid, "runs/x", store="/shared/cells", executor=executor, threads_per_cell=2)  # doctest: +SKIP
    """

    def __init__(
        self,
        address: str | None = None,
        cpus_per_cell: int = 1,
        gpus_per_cell: float | None = 0,
        **init: Any,
    ) -> None:
        try:
            import ray
        except ImportError:
            raise UserError("the ray executor needs Ray: pip install 'panning[ray]'") from None
        if isinstance(cpus_per_cell, bool) or not isinstance(cpus_per_cell, int) or cpus_per_cell < 1:
            raise UserError(f"cpus per cell must be a positive integer, got {cpus_per_cell!r}")
        self._ray: Any = ray
        self._started = not ray.is_initialized()
        if self._started:
            _check_reachable(address)
            try:
                ray.init(address=address, include_dashboard=False, log_to_driver=False, **init)
            except (ValueError, ConnectionError, RuntimeError) as error:
                first = first_line(error)
                raise UserError(
                    f"cannot join the Ray cluster at {address}: {first}; check --address (host:port of its head, "
                    "or leave it out for a local cluster)"
                ) from None
        resources = ray.cluster_resources()
        cpus, gpus = float(resources.get("CPU", 0)), float(resources.get("GPU", 0))
        if gpus_per_cell is None:
            gpus_per_cell = 1 if gpus >= 1 else 0
        if gpus_per_cell > gpus or cpus_per_cell > cpus:
            self.shutdown()
            fix = (
                "join a cluster with GPUs (--address) or use --device cpu"
                if gpus_per_cell > gpus
                else f"ask for at most {cpus:g} (--cpus-per-cell) or join a larger cluster (--address)"
            )
            raise UserError(
                f"the Ray cluster has {cpus:g} CPUs and {gpus:g} GPUs and each cell asks for {cpus_per_cell} CPUs "
                f"and {gpus_per_cell:g} GPUs: its cells would wait for ever; {fix}"
            )
        self.resources = {"num_cpus": cpus_per_cell, "num_gpus": gpus_per_cell}

    def submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` as a Ray task; a ``concurrent.futures.Future`` of its result."""
        return self._ray.remote(**self.resources)(fn).remote(*args).future()

    def shutdown(self) -> None:
        """Stop the local Ray instance this executor started (a joined cluster keeps running)."""
        if self._started and self._ray.is_initialized():
            self._ray.shutdown()

    def __enter__(self) -> RayExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


__all__ = ["RayExecutor", "executor_names"]
