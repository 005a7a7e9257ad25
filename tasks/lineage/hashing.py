"""How the ledger names things: canonical JSON, event hashes, file and folder content hashes, artifact entries.

Why apart from the ledger: every stage, the bundle writer and the run journal hash artifacts the same way the ledger
does, and `verify` re-hashes with exactly these functions; none of them needs SQLite. The entry checks here are the
gate that keeps anything but a workspace-relative path and a sha256 (and so any PHI) out of the ledger.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

TREE_HASH_HEADER = b"mmfm-tree-v1\n"  # keeps a folder's hash from ever equalling a file's
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
HASHED = ("event_id", "prev_hash", "time", "actor", "stage", "run_id", "inputs", "outputs", "params", "code_version",
          "facts")
SHA_RE = re.compile(r"[0-9a-f]{64}")
SCHEME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:")  # models:/x/3, s3://b/k ; one letter would be a drive (C:)
CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    """A file's sha256, read in 1 MiB chunks (landing names objects by it; the ledger and verify hash with it)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def canonical_json(obj: object) -> str:
    """The one serialisation that is hashed: sorted keys, no spaces, UTF-8, no NaN (not JSON, and not stable)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def event_hash(body: Mapping) -> str:
    return hashlib.sha256(canonical_json({k: body[k] for k in HASHED}).encode()).hexdigest()


def tree_sha256(directory: Path) -> str:
    """A folder's content hash, deterministic across machines and independent of mtimes and listing order.

    sha256 of `mmfm-tree-v1\\n` followed, for every file under the folder sorted by its POSIX path relative to the
    folder, by the line `<relative path>\\0<sha256 of the file>\\n`. Names and bytes count; mtimes, modes and empty
    folders do not. Hidden entries (any path part starting with '.') are skipped so the temporary files of an atomic
    write (`.incoming-*`) and OS litter never change a table's or shard folder's hash.
    """
    directory = Path(directory)
    files = []
    for dirpath, dirnames, filenames in os.walk(directory):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if not name.startswith("."):
                path = Path(dirpath) / name
                files.append((path.relative_to(directory).as_posix(), path))
    h = hashlib.sha256(TREE_HASH_HEADER)
    for rel, path in sorted(files, key=lambda t: t[0]):
        h.update(f"{rel}\0{sha256_file(path)}\n".encode())
    return h.hexdigest()


def artifact_sha256(path: Path) -> str:
    """sha256 of a file's bytes, or `tree_sha256` of a folder (a table of parquet parts, a shard folder)."""
    return tree_sha256(path) if Path(path).is_dir() else sha256_file(path)


def artifact_entry(path: Path, root: Path) -> dict:
    """{uri, sha256} naming `path` inside workspace `root`; the URI is relative so no host path reaches the ledger."""
    abs_path, abs_root = Path(os.path.abspath(path)), Path(os.path.abspath(root))
    if not abs_path.is_relative_to(abs_root):
        raise ValueError(f"{path} is outside the workspace {root}: the ledger only names workspace-relative paths")
    return {"uri": abs_path.relative_to(abs_root).as_posix(), "sha256": artifact_sha256(abs_path)}


def is_external(uri: str) -> bool:
    """A URI with a scheme (`models:/backbone/3`, `s3://...`) names something outside the workspace tree."""
    return bool(SCHEME_RE.match(uri))


def _check_entry(entry: Mapping) -> dict:
    """Exactly {uri, sha256}: no extra keys, so nothing but a path and a hash can reach the ledger through here."""
    if set(entry) != {"uri", "sha256"}:
        raise ValueError(f"an artifact entry is exactly {{uri, sha256}}, got keys {sorted(entry)}")
    uri, sha = entry["uri"], entry["sha256"]
    if not isinstance(uri, str) or not uri or (not is_external(uri) and (
            uri.startswith("/") or "\\" in uri or ".." in uri.split("/") or re.match(r"^[A-Za-z]:", uri))):
        raise ValueError(f"artifact uri must be workspace-relative (or carry a scheme), got {uri!r}")
    if not isinstance(sha, str) or not SHA_RE.fullmatch(sha):
        raise ValueError(f"sha256 of {uri} must be 64 lowercase hex digits, got {sha!r}")
    return {"uri": uri, "sha256": sha}


def _entries(entries: Iterable[Mapping]) -> list[dict]:
    """Validated, deduplicated and sorted: inputs and outputs are sets, and their hash must not depend on order."""
    unique = {(e["uri"], e["sha256"]): e for e in map(_check_entry, entries)}
    return [unique[k] for k in sorted(unique)]


def _plain(obj: Mapping | None, what: str) -> dict:
    """Round-trip through canonical JSON so what is hashed now is exactly what `verify` re-reads later."""
    if obj is None:
        return {}
    if not isinstance(obj, Mapping):
        raise TypeError(f"{what} must be a mapping, got {type(obj).__name__}")
    try:
        return json.loads(canonical_json(dict(obj)))
    except (TypeError, ValueError) as err:
        raise TypeError(f"{what} must be plain JSON (str, numbers, bools, lists, dicts; no NaN): {err}") from err
