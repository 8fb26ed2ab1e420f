"""Fetching a dataset from its canonical address into the cache, verified before use."""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from panning.io import atomic_path


@dataclass(frozen=True)
class RemoteFile:
    """One file of a dataset at its canonical address, with its published MD5."""

    url: str
    md5: str

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]


class DownloadError(RuntimeError):
    """The dataset could not be fetched (no network, server error, or a checksum mismatch)."""


def md5sum(path: Path) -> str:
    """The MD5 hex digest of a file, read in blocks."""
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch(remote: RemoteFile, folder: Path, timeout: float = 30.0) -> Path:
    """Download ``remote`` into ``folder``; the file appears only once its checksum matches."""
    target = folder / remote.filename
    if target.is_file() and md5sum(target) == remote.md5:
        return target
    try:
        with atomic_path(target) as tmp:
            with urllib.request.urlopen(remote.url, timeout=timeout) as response, tmp.open("wb") as out:
                shutil.copyfileobj(response, out, 1 << 20)
            got = md5sum(tmp)
            if got != remote.md5:
                raise DownloadError(f"{remote.url}: checksum {got} does not match the published {remote.md5}")
    except (urllib.error.URLError, OSError, TimeoutError) as error:
        raise DownloadError(f"could not download {remote.url}: {error}") from None
    return target


def extract(archive: Path, folder: Path) -> None:
    """Unpack a tar or zip archive into ``folder`` via a temporary folder, refusing unsafe paths."""
    staging = folder.parent / f".{folder.name}.extracting"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zipped:
                zipped.extractall(staging)
        else:
            with tarfile.open(archive) as tarred:
                tarred.extractall(staging, filter="data")
        for item in staging.iterdir():
            destination = folder / item.name
            if not destination.exists():
                os.replace(item, destination)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
