"""Landing: extracts kept exactly as received, content-addressed by sha256, never modified.

    data/landing/objects/ab/ab12...           one read-only copy of every distinct file received
    data/landing/<source>/<extract_id>.json   the extract's manifest: relative path, sha256, size per file

The extract id is the hash of its manifest, so landing the same extract twice is a no-op that says so, and a new
extract that repeats old files stores (and later processes) only the new ones. Relative paths stay inside landing
(they may carry PHI in real exports); everything downstream names files by their object URI.

Every entry of an extract folder is received; those landing does not pass on to ingest are `refused`, each under a
rule, and publish (tasks/ingest/publish.py) counts them as received and quarantined with the rest of the extract:
    landing.hidden_file      a dotfile, or a file in a hidden folder (.DS_Store, AppleDouble ._x.dcm, editor swap
                             files): landed (kept for review) but not ingested. Such files are operating-system or
                             transfer debris far more often than data, an AppleDouble twin would add a second
                             unreadable "DICOM file" for every real one, and guessing would make the staged data
                             depend on what a file manager left behind; the record lets a reviewer re-send one.
    landing.symlink_outside  a link that resolves outside the extract folder: never followed, nothing is read
    landing.symlink_alias    a link to a file or folder inside the extract: its target is received once, under its
                             own path (a folder link, a loop included, is not walked again)
    landing.symlink_broken   a link to nothing
    landing.not_a_file       a FIFO, socket or device: reading it could block or never end
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
from tasks.ingest.quarantine import Rejection
from tasks.lineage.hashing import sha256_file

REFUSAL_MESSAGES = {
    "landing.hidden_file": "hidden file (dotfile or in a hidden folder): landed for review, not ingested",
    "landing.symlink_outside": "symbolic link leaving the extract folder: not followed",
    "landing.symlink_alias": "symbolic link to a file or folder of the extract: its target is received once, "
                             "under its own path",
    "landing.symlink_broken": "symbolic link to nothing",
    "landing.not_a_file": "neither a file nor a folder (FIFO, socket or device): not read",
}


@dataclass(frozen=True)
class LandedFile:
    rel_path: str
    sha256: str
    size: int

    def object_path(self, landing: Path) -> Path:
        return object_path(landing, self.sha256)


@dataclass(frozen=True)
class Refused:
    """An entry of the extract that is received but not passed on to ingest (see the module docstring)."""

    rel_path: str  # inside landing only (the extract's manifest), never in a quarantine record
    rule: str  # a key of REFUSAL_MESSAGES
    sha256: str = ""  # of the landed copy (hidden files); "" when nothing was read
    number: int = 0  # 1-based place in the manifest's `refused` list

    @property
    def key(self) -> str:
        """What the ingest state remembers it by, so a rerun counts it once; never a bare object hash (a data file
        with the same bytes as a hidden one, sent later, must not read as processed already)."""
        entry = f"{self.rule}\n{self.rel_path}\n{self.sha256}"
        return "refused:" + hashlib.sha256(entry.encode()).hexdigest()


@dataclass(frozen=True)
class Extract:
    extract_id: str
    source: str
    site: str
    files: tuple[LandedFile, ...]
    already_landed: bool  # the very same extract was landed before
    refused: tuple[Refused, ...] = ()  # received, not ingested: each becomes one quarantine record at publish


def object_path(landing: Path, sha: str) -> Path:
    return landing / "objects" / sha[:2] / sha


def object_uri(landing: Path, sha: str) -> str:
    """How quarantine records and lineage name a landed file: relative to the workspace, no original file name."""
    return f"data/landing/objects/{sha[:2]}/{sha}"


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _iter_files(source: Path) -> tuple[list[tuple[str, Path]], list[tuple[str, str, Path | None]]]:
    """(files to land and ingest, refused entries as (rel_path, rule, file to land or None)), sorted by path.

    Walks real folders only (never through a link), so every file inside the extract is reached exactly once, under
    its own path; links are judged by where they resolve, and nothing outside the extract folder is ever read."""
    if not source.is_dir():
        return [(source.name, source)], []
    root = source.resolve()
    files: list[tuple[str, Path]] = []
    refused: list[tuple[str, str, Path | None]] = []
    folders: list[tuple[Path, bool]] = [(source, False)]  # (folder, inside a hidden folder)
    while folders:
        folder, hidden_folder = folders.pop()
        for entry in os.scandir(folder):
            path = Path(entry.path)
            rel, hidden = path.relative_to(source).as_posix(), hidden_folder or entry.name.startswith(".")
            if entry.is_symlink():
                target = path.resolve()
                rule = ("landing.symlink_broken" if not target.exists() else
                        "landing.symlink_outside" if not _inside(target, root) else "landing.symlink_alias")
                refused.append((rel, rule, None))
            elif entry.is_dir(follow_symlinks=False):
                folders.append((path, hidden))
            elif not entry.is_file(follow_symlinks=False):
                refused.append((rel, "landing.not_a_file", None))
            elif hidden:
                refused.append((rel, "landing.hidden_file", path))
            else:
                files.append((rel, path))
    return sorted(files, key=lambda t: t[0]), sorted(refused, key=lambda t: t[0])


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
        # not quoted: an extract's path can name a patient, and this message reaches logs and the terminal
        raise FileNotFoundError(f"no such extract: the {kind} source path given for site {site} does not exist")
    entries, refused = [], []
    found, odd = _iter_files(source)
    for rel, path in found:
        sha = sha256_file(path)
        _store(landing, path, sha)
        entries.append(LandedFile(rel_path=rel, sha256=sha, size=path.stat().st_size))
    for number, (rel, rule, path) in enumerate(odd, start=1):
        sha = sha256_file(path) if path is not None else ""
        if path is not None:
            _store(landing, path, sha)
        refused.append(Refused(rel_path=rel, rule=rule, sha256=sha, number=number))
    listing = json.dumps([[e.rel_path, e.sha256] for e in entries] +
                         ([["refused", [[r.rel_path, r.rule, r.sha256] for r in refused]]] if refused else []),
                         separators=(",", ":"))
    extract_id = hashlib.sha256(f"{kind}\n{site}\n{listing}".encode()).hexdigest()[:16]
    manifest = landing / kind / f"{extract_id}.json"
    already = manifest.exists()
    if not already:
        manifest.parent.mkdir(parents=True, exist_ok=True)
        body = {"extract_id": extract_id, "source": kind, "site": site,
                "files": [{"path": e.rel_path, "sha256": e.sha256, "size": e.size} for e in entries],
                "refused": [{"path": r.rel_path, "rule": r.rule, "sha256": r.sha256} for r in refused]}
        write_json(manifest, body)
    return Extract(extract_id=extract_id, source=kind, site=site, files=tuple(entries), already_landed=already,
                   refused=tuple(refused))


def refusal_rejections(extract: Extract) -> list[Rejection]:
    """One quarantine record per refused entry: a landed one by its object, a link by its place in the extract's
    manifest (`refused <n>`, 1-based, in manifest order); never by its path, which stays inside landing."""
    manifest = f"data/landing/{extract.source}/{extract.extract_id}.json"
    return [Rejection(source_uri=object_uri(Path(), r.sha256) if r.sha256 else manifest, sha256=r.sha256,
                      location="" if r.sha256 else f"refused {r.number}", source=extract.source, stage="ingest",
                      rule=r.rule, message=REFUSAL_MESSAGES[r.rule]) for r in extract.refused]
