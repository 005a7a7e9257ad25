"""Atomic writes and folder swaps: the one idiom every stage uses to publish a file or a folder.

Why one module: a kill -9 may land between any two statements, and every reader (a table's `*.parquet` glob, DVC's
hash of a folder, the ledger's tree hash, a rerun) must see the old content or the new one, never half of either.
The temporary sibling is always hidden (`.<name>.incoming`): names starting with '.' are outside every glob and
every tree hash, and a rerun reuses (and replaces) the same temporary name instead of leaving strays behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path


def incoming(path: Path) -> Path:
    """The hidden sibling a new version of `path` is written to before it is renamed into place."""
    return path.with_name(f".{path.name}.incoming")


def write_with(path: Path, write: Callable[[Path], object], *, fsync: bool = False) -> Path:
    """`write(tmp)` to the hidden sibling, then rename it over `path`; returns `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = incoming(path)
    try:
        write(tmp)
        if fsync:
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_bytes(path: Path, data: bytes, *, fsync: bool = False) -> Path:
    return write_with(path, lambda tmp: tmp.write_bytes(data), fsync=fsync)


def write_text(path: Path, text: str, *, fsync: bool = False) -> Path:
    return write_with(path, lambda tmp: tmp.write_text(text, encoding="utf-8"), fsync=fsync)


def write_json(path: Path, body: object, *, indent: int | None = 1, fsync: bool = False) -> Path:
    return write_text(path, json.dumps(body, indent=indent, default=str) + "\n", fsync=fsync)


def replace_dir(src: Path, dst: Path) -> None:
    """Swap a freshly written folder in: readers see the old one or the new one, never half of each."""
    old = dst.with_name(f".{dst.name}-previous")
    shutil.rmtree(old, ignore_errors=True)
    if dst.exists():
        dst.rename(old)
    src.rename(dst)
    shutil.rmtree(old, ignore_errors=True)


def fresh_dir(path: Path) -> Path:
    """An empty hidden staging folder beside `path` (`.<name>-incoming`), for a folder published by replace_dir."""
    staging = path.with_name(f".{path.name.lstrip('.')}-incoming")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    return staging


def write_content_addressed(data: bytes, directory: Path, prefix: str, suffix: str) -> Path:
    """`directory/<prefix><sha256[:16]><suffix>`, written atomically unless it exists: a rerun rewrites nothing and a
    kill leaves no torn file (image shards, stored DICOM objects)."""
    path = directory / f"{prefix}{hashlib.sha256(data).hexdigest()[:16]}{suffix}"
    if not path.exists():
        directory.mkdir(parents=True, exist_ok=True)
        write_bytes(path, data)
    return path
