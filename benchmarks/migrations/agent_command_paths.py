"""Take this machine's data folder out of the shipped agents' recorded commands (issue #18, item 8).

The two committed agents (``src/panning/agents/default.zip``, ``benchmarks/agents/lenet5-mnist.zip``)
were trained before ``recorded_command`` wrote data paths relative to ``$PANNING_DATA``, so the
command stored in their metadata names the folder of the machine they were trained on. This
script rewrites ``--data-dir <absolute path>`` in that command to ``--data-dir "$PANNING_DATA"``
(what ``recorded_command`` writes today) and leaves every other byte of the agent alone: the
policy, the optimiser states and every other entry are copied unchanged, and the script checks it.

A grid cell's identity holds the SHA-256 of the agent file it replays, so the committed
`rl-panning` cells that replayed an old file are given the key of the new one: the cell folder is
renamed and the key rewritten in ``cell.json`` and ``result.json``, and the rows of every committed
results file (smoke grids included, whose cells are not committed) get the key their config gives.
The screening and training are the same (same policy weights, same options). Files already
migrated are left alone, so the script can run again. Run from the repository root::

    python benchmarks/migrations/agent_command_paths.py
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import sys
import zipfile
from pathlib import Path

from panning import bench
from panning.io import atomic_path, write_json

REPO = Path(__file__).resolve().parents[2]
AGENTS = [REPO / "src" / "panning" / "agents" / "default.zip", REPO / "benchmarks" / "agents" / "lenet5-mnist.zip"]
ABSOLUTE_DATA_DIR = re.compile(r"--data-dir /\S+")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def rewrite_agent(path: Path) -> bool:
    """Rewrite one agent's recorded command; returns whether the file changed."""
    with zipfile.ZipFile(path) as archive:
        entries = [(info, archive.read(info)) for info in archive.infolist()]
    old_text = dict((info.filename, payload) for info, payload in entries)["data"].decode()
    command = json.loads(old_text)["panning_agent"]["command"]
    relative = ABSOLUTE_DATA_DIR.sub('--data-dir "$PANNING_DATA"', command)
    if relative == command:
        return False
    new_text = old_text.replace(json.dumps(command)[1:-1], json.dumps(relative)[1:-1])
    with atomic_path(path) as temporary:
        with zipfile.ZipFile(temporary, "w") as archive:
            for info, payload in entries:
                archive.writestr(info, new_text.encode() if info.filename == "data" else payload)
        with zipfile.ZipFile(temporary) as new:
            for info, payload in entries:
                if info.filename == "data":
                    rewritten = json.loads(new.read("data"))
                    rewritten["panning_agent"]["command"] = command
                    if rewritten != json.loads(payload):
                        sys.exit(f"{path}: the rewritten metadata differs beyond the command")
                elif new.read(info.filename) != payload:
                    sys.exit(f"{path}: entry {info.filename} changed")
    return True


def rekey_cells(old_hash: str, new_hash: str) -> dict[str, str]:
    """Give the cells that replayed the agent with ``old_hash`` the keys of ``new_hash``."""
    renamed = {}
    for cell_json in sorted((REPO / "benchmarks" / "results" / "cells").glob("*/cell.json")):
        written = json.loads(cell_json.read_text())
        if written.get("files", {}).get("agent") != old_hash:
            continue
        written["files"]["agent"] = new_hash
        canonical = {name: value for name, value in written.items() if name not in ("key", "label")}
        old_key, written["key"] = written["key"], bench.canonical_key(canonical)
        folder = cell_json.parent
        result_json = folder / "result.json"
        if result_json.is_file():
            result = json.loads(result_json.read_text())
            result["cell"] = written["key"]
            write_json(result_json, result)
        write_json(cell_json, written)
        folder.rename(folder.parent / written["key"])
        renamed[old_key] = written["key"]
    return renamed


def rekey_grids(old_hash: str, new_hash: str) -> dict[str, str]:
    """Old and new keys of every committed grid's cells that replay the agent (smoke grids included,
    whose cells are not in the committed store but whose rows are)."""
    renamed = {}
    for config in sorted((REPO / "benchmarks").rglob("*.toml")):
        for cell in bench.load_grid(config).cells:
            if dict(cell.files).get("agent") == new_hash:
                renamed[dataclasses.replace(cell, files=(("agent", old_hash),)).key] = cell.key
    return renamed


def rekey_results(renamed: dict[str, str]) -> int:
    """Rewrite the ``cell`` column of every committed results file; returns the rows changed."""
    changed = 0
    for results in sorted((REPO / "benchmarks" / "results").rglob("results.*")):
        if results.suffix not in (".csv", ".jsonl"):
            continue
        text = results.read_text()
        for old_key, new_key in renamed.items():
            changed += text.count(old_key)
            text = text.replace(old_key, new_key)
        with atomic_path(results) as temporary:
            temporary.write_text(text)
    return changed


def main() -> None:
    for agent in AGENTS:
        old_hash = sha256(agent)
        if not rewrite_agent(agent):
            print(f"{agent.relative_to(REPO)}: already without a machine path")
            continue
        renamed = rekey_cells(old_hash, sha256(agent))
        rows = rekey_results({**rekey_grids(old_hash, sha256(agent)), **renamed})
        print(
            f"{agent.relative_to(REPO)}: command rewritten; {len(renamed)} cells re-keyed, "
            f"{rows} rows of results files (csv and jsonl counted apart)"
        )


if __name__ == "__main__":
    main()
