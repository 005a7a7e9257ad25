"""Publishing one ingested extract: staged parts, quarantine records, the de-identification report, the ledger event
and, last, the ingest-state record that commits it; and which part of an extract is new.

Safe to kill anywhere and rerun: every file is written atomically (tasks.atomic) under a name fixed by the extract
(parts) or by the run that first claimed the extract (quarantine, report, ledger event; see IngestState.claim), so
the rerun of a killed publish overwrites the same files with the same bytes and finds its ledger event again.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from tasks.atomic import write_text
from tasks.faults import kill_point
from tasks.ingest.accounting import BatchResult
from tasks.ingest.landing import Extract, refusal_rejections
from tasks.ingest.omics import PENDING_REASON
from tasks.ingest.quarantine import Quarantine
from tasks.ingest.staged import build_cohort, write_part
from tasks.ingest.state import IngestState
from tasks.lineage import record
from tasks.workspace import Workspace


def new_part(extract: Extract, state: IngestState, always: tuple[str, ...] = ()) -> tuple[Extract, int]:
    """The files of an extract not processed before (plus metadata files named in `always`), and how many were;
    refused entries (landing's) not accounted for before."""
    done = state.processed(extract.source, extract.site)
    keep = tuple(f for f in extract.files if f.sha256 not in done or Path(f.rel_path).name in always)
    refused = tuple(r for r in extract.refused if r.key not in done)
    return dataclasses.replace(extract, files=keep, refused=refused), len(extract.files) - len(keep)


def has_new(part: Extract, metadata: tuple[str, ...] = ()) -> bool:
    """Whether a part (from new_part) holds anything to account for: a file other than `metadata`, or a refusal."""
    return bool(part.refused) or any(Path(f.rel_path).name not in metadata for f in part.files)


def nothing_new(extract: Extract, skipped: int, source: str) -> dict:
    """The summary of an extract whose every file was ingested before."""
    return {"source": source, "site": extract.site, "extract_id": extract.extract_id, "new_files": 0,
            "already_ingested_files": skipped, "received": 0, "ingested": 0, "quarantined": 0,
            "quarantine_reasons": {}, "message": "nothing new: every file of this extract was ingested before"}


def pending_message(n: int, site: str, source: str = "omics") -> str:
    """The one line that says samples wait for their patient (summaries, CLI); counts and the site only."""
    return f"{n} {source} samples pending: {PENDING_REASON} (site {site})"


def publish(ws: Workspace, extract: Extract, result: BatchResult, skipped: int, this_run: str,
            inputs: list[Path] | None = None) -> dict:
    """Write staged parts, the quarantine and the de-identification report; remember what was processed.

    `this_run` is the calling flow run's id; an earlier run killed while publishing the same extract lends its own
    instead. The ingest-state record comes last and is the commit point: until it exists the extract counts as not
    ingested. Landing's refused entries (hidden files, links) join the result here, received and quarantined, so
    every source's summary accounts for them the same way. Pending items (result.pending) are held in the ingest
    state just before the commit point, so `received == ingested + quarantined + pending` holds for the extract.
    `inputs` names the ledger event's inputs when they are not the extract's landing manifest (staging pending
    samples names the manifests of the extracts they came from).
    """
    refusals = refusal_rejections(extract)
    result.received += len(refusals)
    result.rejections.extend(refusals)
    if not result.balanced():
        raise RuntimeError(f"accounting broke for extract {extract.extract_id}: received {result.received}, "
                           f"ingested {result.ingested}, quarantined {result.quarantined}, "
                           f"pending {len(result.pending)}")
    state = IngestState(ws.state)
    run_id = state.claim(extract.source, extract.site, extract.extract_id, this_run)
    tables, written = {}, []
    for table, rows in sorted(result.rows.items()):
        path = write_part(ws.staged, table, extract.extract_id, rows)
        if path is not None:
            tables[table] = len(rows)
            written.append(path)
    quarantine = Quarantine(run_id)
    quarantine.extend(result.rejections)
    qpath = quarantine.write(ws.quarantine)
    report = write_text(ws.reports / f"deid-{run_id}.json", result.deid.to_json())
    kill_point("ingest.after_parts")
    cohort = build_cohort(ws.staged)
    written += [ws.root / f for f in result.files_written] + [p for p in (qpath, report) if p is not None]
    manifests = inputs if inputs is not None else [ws.landing / extract.source / f"{extract.extract_id}.json"]
    event = record(ws, "ingest", run_id, inputs=manifests,
                   outputs=written, params={"source": extract.source, "site": extract.site},
                   facts={"received": result.received, "ingested": result.ingested,
                          "quarantined": result.quarantined, "pending": len(result.pending)})
    kill_point("ingest.after_ledger")
    if result.pending:
        state.add_pending(extract.site, extract.extract_id, result.pending)
    state.mark_processed([f.sha256 for f in extract.files] + [r.key for r in extract.refused], extract.source,
                         extract.site, extract.extract_id, run_id)
    held = {"pending": len(result.pending), "pending_reasons": _reasons(result.pending)}
    if result.pending:
        held["message"] = pending_message(len(result.pending), extract.site, result.source)
    return {
        "source": result.source, "site": extract.site, "extract_id": extract.extract_id, "run_id": run_id,
        "resumed": run_id != this_run, "new_files": len(extract.files), "already_ingested_files": skipped,
        "received": result.received, "ingested": result.ingested, "quarantined": result.quarantined, **held,
        "quarantine_reasons": dict(sorted(Quarantine(run_id, result.rejections).reasons().items())),
        "tables": tables, "patients_in_cohort": cohort.height, "files_written": len(result.files_written),
        "quarantine_file": str(qpath.relative_to(ws.root)) if qpath else None,
        "deid_report": str(report.relative_to(ws.root)), "lineage_event": event.event_id, **result.facts,
    }


def _reasons(pending: list[dict]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for p in pending:
        counts[p["reason"]] = counts.get(p["reason"], 0) + 1
    return dict(sorted(counts.items()))
