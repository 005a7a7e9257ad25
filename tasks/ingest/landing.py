"""Landing: extracts kept exactly as received, content-addressed by sha256, never modified.

    data/landing/objects/ab/ab12...           one read-only copy of every distinct file received
    data/landing/<source>/<extract_id>.json   the extract's manifest: relative path, sha256, size per file

The extract id is the hash of its manifest, so landing the same extract twice is a no-op that says so, and a new
extract that repeats old files stores (and later processes) only the new ones. Relative paths stay inside landing
(they may carry PHI in real exports); everything downstream names files by their object URI.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tasks.atomic import write_json
from tasks.lineage.hashing import sha256_file


@dataclass(frozen=True)
class LandedFile:
    rel_path: str
    sha256: str
    size: int

    def object_path(self, landing: Path) -> Path:
        return object_path(landing, self.sha256)


@dataclass(frozen=True)
class Extract:
    extract_id: str
    source: str
    site: str
    files: tuple[LandedFile, ...]
    already_landed: bool  # the very same extract was landed before


def object_path(landing: Path, sha: str) -> Path:
    return landing / "objects" / sha[:2] / sha


def object_uri(landing: Path, sha: str) -> str:
    """How quarantine records and lineage name a landed file: relative to the workspace, no original file name."""
    return f"data/landing/objects/{sha[:2]}/{sha}"


def _iter_files(source: Path) -> list[tuple[str, Path]]:
    if source.is_file():
        return [(source.name, source)]
    files = [p for p in source.rglob("*") if p.is_file() and not p.name.startswith(".")]
    return sorted(((p.relative_to(source).as_posix(), p) for p in files), key=lambda t: t[0])


def _store(landing: Path, path: Path, sha: str) -> None:
    """Put one file into the object store (atomically; read-only once there)."""
    target = object_path(landing, sha)
    if target.exists():
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".incoming-")
    os.close(fd)
    try:
        shutil.copyfile(path, tmp)
        os.chmod(tmp, stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def land(source: Path, landing: Path, kind: str, site: str) -> Extract:
    """Land a file or folder as one extract of `kind` (dicom | fhir | omics | pacs) from `site`."""
    source = Path(source)
    if not source.exists():
        raise FileNotFoundError(f"no such extract: {source}")
    entries = []
    for rel, path in _iter_files(source):
        sha = sha256_file(path)
        _store(landing, path, sha)
        entries.append(LandedFile(rel_path=rel, sha256=sha, size=path.stat().st_size))
    listing = json.dumps([[e.rel_path, e.sha256] for e in entries], separators=(",", ":"))
    extract_id = hashlib.sha256(f"{kind}\n{site}\n{listing}".encode()).hexdigest()[:16]
    manifest = landing / kind / f"{extract_id}.json"
    already = manifest.exists()
    if not already:
        manifest.parent.mkdir(parents=True, exist_ok=True)
        body = {"extract_id": extract_id, "source": kind, "site": site,
                "files": [{"path": e.rel_path, "sha256": e.sha256, "size": e.size} for e in entries]}
        write_json(manifest, body)
    return Extract(extract_id=extract_id, source=kind, site=site, files=tuple(entries), already_landed=already)
