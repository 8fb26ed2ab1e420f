"""The ``panning`` command line: prune, train, run (prune then train), info, compact, export, bench,
report and agent. Each command lives in a module of this package; this one only wires them.

Every user mistake ends with a one-line ``error: ...`` and exit status 2.
"""

from __future__ import annotations

from panning.cli import agent, compaction, grids, screen
from panning.cli.base import cli

__all__ = ["agent", "cli", "compaction", "grids", "main", "screen"]


def main() -> None:
    """Entry point of the ``panning`` console script."""
    cli(prog_name="panning")


if __name__ == "__main__":
    main()
