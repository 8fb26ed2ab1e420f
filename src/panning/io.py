"""Small file helpers: every file the library writes appears whole or not at all."""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import re
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from panning.errors import UserError


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    Examples:
        >>> import tempfile, pathlib
        >>> target = pathlib.Path(tempfile.mkdtemp()) / "x.txt"
        >>> with atomic_path(target) as tmp:
        ...     _ = tmp.write_text("hello")
        >>> target.read_text()
        'hello'
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(handle)
    tmp = Path(name)
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would make every written file private
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def os_fault(path: str | os.PathLike[str], error: OSError, doing: str = "write") -> UserError:
    """A one-line error for an operating-system fault on ``path``, naming the fix.

    Examples:
        >>> print(os_fault("runs/x/checkpoint.pt", OSError(errno.ENOSPC, "No space left on device")))
        cannot write runs/x/checkpoint.pt: no space left on its device; free some space and rerun (a run: with --resume)
    """
    if error.errno == errno.ENOSPC:
        return UserError(
            f"cannot {doing} {path}: no space left on its device; free some space and rerun (a run: with --resume)"
        )
    if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return UserError(
            f"cannot {doing} {path}: {error.strerror}; fix its permissions or choose a folder you can {doing}"
        )
    return UserError(f"cannot {doing} {path}: {error.strerror or error}")


def write_atomic(path: str | os.PathLike[str], writer: Callable[[Path], Any]) -> None:
    """Call ``writer(tmp_path)`` and move the result onto ``path`` atomically.

    An operating-system fault (a full disk, a read-only folder) becomes a one-line ``UserError``;
    the file that was there before stays as it was.
    """
    from safetensors import SafetensorError

    try:
        with atomic_path(path) as tmp:
            try:
                writer(tmp)
            except (RuntimeError, SafetensorError) as error:
                # torch.save reports a failed write as a RuntimeError, safetensors as its own error
                # ("I/O error: ... (os error 28)"); a full disk is the usual cause.
                code = re.search(r"\(os error (\d+)\)", str(error))
                if code is not None:
                    raise OSError(int(code.group(1)), os.strerror(int(code.group(1)))) from error
                if shutil.disk_usage(tmp.parent).free < 1 << 20:
                    raise OSError(errno.ENOSPC, "No space left on device") from error
                raise
    except OSError as error:
        raise os_fault(path, error) from None


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The SHA-256 of a file's bytes, in hex: how a grid cell and a mask name the files a method read.

    Examples:
        >>> import tempfile
        >>> file = Path(tempfile.mkdtemp()) / "f.txt"
        >>> _ = file.write_bytes(b"abc")
        >>> file_sha256(file)[:16]
        'ba7816bf8f01cfea'
    """
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _finite(data: Any) -> Any:
    if isinstance(data, float) and not math.isfinite(data):
        return None
    if isinstance(data, dict):
        return {key: _finite(value) for key, value in data.items()}
    if isinstance(data, (list, tuple)):
        return [_finite(value) for value in data]
    return data


def write_json(path: str | os.PathLike[str], data: Any) -> None:
    """Write ``data`` as indented strict JSON, atomically; NaN and infinities become ``null``.

    Examples:
        >>> import tempfile, pathlib
        >>> target = pathlib.Path(tempfile.mkdtemp()) / "m.json"
        >>> write_json(target, {"a": 1})
        >>> read_json(target)
        {'a': 1}
    """
    text = json_text(data, indent=2) + "\n"
    write_atomic(path, lambda tmp: tmp.write_text(text))


def json_text(data: Any, indent: int | None = None) -> str:
    """``data`` as strict JSON with sorted keys: NaN and infinities become ``null``, numpy and torch
    values numbers or lists (:func:`json_value`).

    Examples:
        >>> json_text({"b": float("nan"), "a": 1})
        '{"a": 1, "b": null}'
    """
    return json.dumps(_finite(data), indent=indent, sort_keys=True, allow_nan=False, default=json_value)


def json_value(value: Any) -> Any:
    """A value JSON has no type for, as the nearest it has: numpy and torch scalars as numbers,
    arrays as lists, anything else (a path, a set) as its text.

    Examples:
        >>> import numpy as np
        >>> json_value(np.int64(3)), json_value(np.float32(0.5)), json_value(Path("a/b"))
        (3, 0.5, 'a/b')
    """
    if hasattr(value, "tolist") and callable(value.tolist):  # numpy and torch: scalars and arrays
        return value.tolist()
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=str)
    return str(value)


def changed_settings(
    before: Mapping[str, Any], now: Mapping[str, Any], names: Iterable[str]
) -> dict[str, tuple[Any, Any]]:
    """The settings among ``names`` whose values differ between a run's saved record and now.

    Values compare as JSON (a tuple equals a list). A name the saved record lacks is not
    compared: it was recorded from a later version on. One check for every resumable thing
    (training runs, screenings, agents), so they all refuse a changed setting alike.

    Examples:
        >>> changed_settings({"lr": 0.1, "seed": 0}, {"lr": 0.01, "seed": 0, "new": 1}, ["lr", "seed", "new"])
        {'lr': (0.1, 0.01)}
    """
    differing = {}
    for name in names:
        if name not in before:
            continue
        was = json.loads(json.dumps(before[name], default=str))
        asked = json.loads(json.dumps(now.get(name), default=str))
        if was != asked:
            differing[name] = (was, asked)
    return differing


def read_json(path: str | os.PathLike[str]) -> Any:
    """Read a JSON object (every file panning writes holds one); an unreadable or foreign file is a
    one-line ``UserError``."""
    try:
        value = json.loads(Path(path).read_text())
    except OSError as error:
        raise os_fault(path, error, "read") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UserError(
            f"{path} is not a JSON file written by panning ({error}); move it away or choose another folder"
        ) from None
    if not isinstance(value, dict):
        raise UserError(
            f"{path} is not a JSON file written by panning (it holds a {type(value).__name__}, not an object); "
            "move it away or choose another folder"
        )
    return value


_RESULTS_EXCLUDED = ":(top,exclude)benchmarks/results"


def source_commit(folder: str | os.PathLike[str] | None = None) -> str:
    """The short git commit of ``folder`` (default: this package's source), ``+dirty`` when the
    tree has uncommitted changes to tracked files, or ``unknown`` outside a git checkout.

    Files under ``benchmarks/results/`` do not count: a grid that writes its results there must
    not mark the next grid of the same session as run on changed code.

    Examples:
        >>> import tempfile
        >>> source_commit(tempfile.mkdtemp())
        'unknown'
    """
    where = str(folder if folder is not None else Path(__file__).resolve().parent)
    try:
        head = subprocess.run(
            ["git", "-C", where, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        )
        status = subprocess.run(
            ["git", "-C", where, "status", "--porcelain", "--untracked-files=no", "--", ":(top)", _RESULTS_EXCLUDED],
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head.stdout.strip() + ("+dirty" if status.stdout.strip() else "")


def recorded_command(program: str, arguments: Sequence[str], environ: Mapping[str, str] | None = None) -> str:
    """``program arguments`` as a shell line to store beside a result, without this machine's paths.

    A path inside the folder named by ``$PANNING_DATA`` is written relative to ``$PANNING_DATA``,
    so the line reruns on any machine that sets it, and a stored result names no local folder.

    Examples:
        >>> recorded_command("panning", ["run", "--data-dir", "/srv/mnist", "--seed", "0"], {"PANNING_DATA": "/srv"})
        'panning run --data-dir "$PANNING_DATA/mnist" --seed 0'
    """
    data = (environ if environ is not None else os.environ).get("PANNING_DATA", "").rstrip("/")
    words = [program]
    for argument in arguments:
        if data and (argument == data or argument.startswith(data + "/")):
            words.append('"$PANNING_DATA' + argument[len(data) :] + '"')
        else:
            words.append(shlex.quote(argument))
    return " ".join(words)


def check_new_file(target: str | os.PathLike[str], option: str = "--out") -> None:
    """Refuse, before any work, an output file (named by the command-line ``option``) that exists
    or cannot be written.

    Examples:
        >>> import tempfile
        >>> existing = Path(tempfile.mkdtemp()) / "m.safetensors"
        >>> _ = existing.write_bytes(b"")
        >>> check_new_file(existing)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        panning.errors.UserError: .../m.safetensors already exists; choose another --out or delete it first (...)
    """
    raw, path = os.fspath(target), Path(target)
    if raw.endswith(("/", os.sep)) or path.is_dir():
        raise UserError(f"{option} {raw} names a folder; give a file name, e.g. {path / 'masks.safetensors'}")
    if path.exists():
        raise UserError(f"{path} already exists; choose another {option} or delete it first (nothing was changed)")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise UserError(f"the folder of {option} {path} does not exist; create {folder} first")
    if not os.access(folder, os.W_OK):
        raise UserError(f"cannot write into {folder}; choose a {option} in a writable folder")
