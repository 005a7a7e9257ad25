"""What one ingest batch produced: staged rows per table, rejections, de-identification counts, and the
received/ingested tallies that make `received == ingested + quarantined + pending` checkable for every source.

Pending (omics only so far): an item that broke no rule but names a patient not yet ingested from its site. It is
neither staged nor quarantined; publish records it in the ingest state (IngestState.add_pending) and the FHIR ingest
that brings the patient stages it (flows/ingest.py). Counting it apart keeps the identity exact at every step.

Tasks return a `BatchResult`; the flow merges them (in input order, so any task runner gives the same output).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tasks.deid.report import DeidReport
from tasks.ingest.quarantine import Rejection


@dataclass
class BatchResult:
    source: str  # dicom | fhir | omics | pacs
    received: int = 0  # input items seen: DICOM files (zip members each), NDJSON lines, omics samples
    ingested: int = 0  # items that made it into staged tables
    rows: dict[str, list[dict]] = field(default_factory=dict)  # staged table name -> rows
    rejections: list[Rejection] = field(default_factory=list)
    deid: DeidReport = field(default_factory=DeidReport)
    files_written: list[str] = field(default_factory=list)  # e.g. image shards, relative to the workspace
    facts: dict = field(default_factory=dict)  # source-specific findings for the summary (manifest, outcomes, ...)
    pending: list[dict] = field(default_factory=list)  # items waiting for their patient (IngestState.add_pending)

    @property
    def quarantined(self) -> int:
        return len(self.rejections)

    def add_rows(self, table: str, rows: list[dict]) -> None:
        self.rows.setdefault(table, []).extend(rows)

    def merge(self, other: BatchResult) -> BatchResult:
        self.received += other.received
        self.ingested += other.ingested
        for table, rows in other.rows.items():
            self.add_rows(table, rows)
        self.rejections.extend(other.rejections)
        self.deid = self.deid.merge(other.deid)
        self.files_written.extend(other.files_written)
        self.facts.update(other.facts)
        self.pending.extend(other.pending)
        return self

    def balanced(self) -> bool:
        return self.received == self.ingested + self.quarantined + len(self.pending)
