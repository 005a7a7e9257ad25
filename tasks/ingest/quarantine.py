"""Quarantine: one record per rejected file, NDJSON line or row, with the rule it broke.

Nothing is dropped silently: every input item ends up either ingested or here, and the run's summary checks
`received == ingested + quarantined`. Records name inputs by their landing object (content address) and position
(line, Bundle entry, tag, row, column, manifest field), never by values: neither a message nor a location may quote
anything read from the input (a sample id may be an MRN, a JSON key or a resourceType may hold a name).
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import polars as pl

from tasks.atomic import write_with

SCHEMA = {"source_uri": pl.Utf8, "sha256": pl.Utf8, "location": pl.Utf8, "source": pl.Utf8, "stage": pl.Utf8,
          "rule": pl.Utf8, "message": pl.Utf8, "run_id": pl.Utf8, "contract_version": pl.Utf8}


@dataclass(frozen=True)
class Rejection:
    source_uri: str  # landing object of the input, e.g. data/landing/objects/ab/ab12...; never an original file name
    sha256: str  # of the landed object
    location: str  # "" for a whole file, "line 17", "line 3 entry 2", "tag (0028,0010)", "row 5", "column 3"
    source: str  # dicom | fhir | omics | pacs
    stage: str  # ingest | deidentify | validate
    rule: str  # a stable rule id, e.g. fhir.json, labs.unit, ref.patient
    message: str  # what is wrong, without quoting values
    run_id: str = ""
    contract_version: str = ""


@dataclass
class Quarantine:
    """Collects rejections of one run (thread-safe: tasks on a thread runner add to it concurrently)."""

    run_id: str
    rejections: list[Rejection] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, rejection: Rejection) -> None:
        with self._lock:
            self.rejections.append(rejection if rejection.run_id else Rejection(**{**asdict(rejection),
                                                                                   "run_id": self.run_id}))

    def extend(self, rejections: list[Rejection]) -> None:
        for r in rejections:
            self.add(r)

    def reasons(self, source: str | None = None) -> dict[str, int]:
        return dict(Counter(r.rule for r in self.rejections if source is None or r.source == source))

    def count(self, source: str | None = None) -> int:
        return sum(1 for r in self.rejections if source is None or r.source == source)

    def write(self, directory: Path, name: str | None = None) -> Path | None:
        """Write `<directory>/<name or run_id>.parquet` (sorted, so the same rejections give the same bytes); None
        when empty. Atomic: a hidden temporary file renamed over the name, so a kill leaves the old file or the new
        one, never half of one. A file already there with the same records, run id aside (a rerun over the same
        input, e.g. after a kill before the run's ledger event), is kept as it is: a rerun adds no copy and does not
        rewrite it."""
        if not self.rejections:
            return None
        directory.mkdir(parents=True, exist_ok=True)
        frame = pl.DataFrame([asdict(r) for r in self.rejections], schema=SCHEMA)
        frame = frame.sort(["source", "source_uri", "location", "rule"])
        path = directory / f"{name or self.run_id}.parquet"
        if path.exists() and _same_records(path, frame):
            return path
        return write_with(path, frame.write_parquet)


def _same_records(path: Path, frame: pl.DataFrame) -> bool:
    try:
        return pl.read_parquet(path).drop("run_id").equals(frame.drop("run_id"))
    except (OSError, pl.exceptions.PolarsError):  # unreadable: write it again
        return False


def read_quarantine(directory: Path) -> pl.DataFrame:
    """All quarantine records of a workspace, every run."""
    files = sorted(Path(directory).glob("*.parquet"))
    return pl.concat([pl.read_parquet(f) for f in files]) if files else pl.DataFrame(schema=SCHEMA)
