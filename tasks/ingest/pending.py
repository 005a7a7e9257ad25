"""Staging pending omics samples once their patients are known.

Omics often arrives before the FHIR export of the same patients. Such samples broke no rule, so quarantining them
for good (and marking their files processed, so that every retry said "nothing new") lost them. Instead omics
ingest holds them as pending (tasks/ingest/omics.py, IngestState.add_pending) and the FHIR ingest that publishes
their patients calls `stage_resolvable`: it re-reads just those samples from the landed objects (by object and
position; nothing of the sample was kept), de-identifies and stages them as their own ingest (staged part, ledger
event, accounting), and drops them from the pending table.

A batch: the resolvable samples of one omics extract, named `<extract_id>-pending-<hash of their places>`. It is
claimed in the ingest state before it is published, so a run killed while publishing it republishes the same batch
under the same part name (the staged part is overwritten, never doubled).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

from tasks.ingest.accounting import BatchResult
from tasks.ingest.landing import Extract, LandedFile
from tasks.ingest.state import IngestState


def _batch_id(extract_id: str, samples: list[dict]) -> str:
    places = "\n".join(sorted(f"{p['sha256']} {p['location']}" for p in samples))
    return f"{extract_id}-pending-{hashlib.sha256(places.encode()).hexdigest()[:12]}"


def claim_resolvable(state: IngestState, site: str, known: set[str]) -> dict[str, list[dict]]:
    """Batch id -> its samples: those claimed before (an interrupted run's) and the site's pending samples whose
    patient pseudonym is now in `known`, grouped by the omics extract they came from."""
    waiting = state.pending(site)
    fresh: dict[str, list[dict]] = {}
    for p in waiting:
        if not p["batch"] and p["patient_key"] in known:
            fresh.setdefault(p["extract_id"], []).append(p)
    for extract_id, samples in fresh.items():
        state.claim_pending(site, samples, _batch_id(extract_id, samples))
    batches: dict[str, list[dict]] = {}
    for p in state.pending(site):
        if p["batch"]:
            batches.setdefault(p["batch"], []).append(p)
    return batches


def batch_extract(batch: str, site: str, samples: list[dict]) -> tuple[Extract, set[tuple[str, str]]]:
    """The landed objects a batch's samples are read from, as an extract (matrices, then their sample sheets, named
    by role and suffix only), and the (object, position) places of the samples."""
    matrices = {p["sha256"]: p["suffix"] for p in samples}
    sheets = {p["sheet_sha256"]: p["sheet_suffix"] for p in samples}
    files = [LandedFile(rel_path=f"matrix-{i}{suffix}", sha256=sha, size=0)
             for i, (sha, suffix) in enumerate(sorted(matrices.items()))]
    files += [LandedFile(rel_path=f"sample_sheet{suffix}", sha256=sha, size=0)
              for sha, suffix in sorted(sheets.items())]
    extract = Extract(extract_id=batch, source="omics", site=site, files=tuple(files), already_landed=True)
    return extract, {(p["sha256"], p["location"]) for p in samples}


def stage_resolvable(state: IngestState, landing: Path, site: str, known: set[str],
                     ingest: Callable[[Extract, set[tuple[str, str]]], BatchResult],
                     publish: Callable[[Extract, BatchResult, list[Path]], dict]) -> list[dict]:
    """Stage every resolvable pending sample of `site`, one published ingest per batch; their summaries.

    `ingest(extract, places)` re-reads the samples (ingest_omics with `only=places`), `publish(extract, result,
    inputs)` publishes them (tasks.ingest.publish); a sample still unresolvable stays pending, unclaimed."""
    summaries = []
    for batch, samples in sorted(claim_resolvable(state, site, known).items()):
        extract, places = batch_extract(batch, site, samples)
        result = ingest(extract, places)
        still = {(p["sha256"], p["location"]) for p in result.pending}
        manifests = sorted({landing / "omics" / f"{p['extract_id']}.json" for p in samples})
        summary = publish(extract, result, manifests)
        state.resolve_pending(site, batch, keep=still)
        summaries.append({**summary, "staged_from_pending": result.ingested})
    return summaries


def pending_lines(state: IngestState) -> list[str]:
    """One line per site and reason: "N omics samples pending: <reason> (site X)"; counts only."""
    counts: dict[tuple[str, str], int] = {}
    for p in state.pending():
        counts[(p["site"], p["reason"])] = counts.get((p["site"], p["reason"]), 0) + 1
    return [f"{n} omics samples pending: {reason} (site {site})" for (site, reason), n in sorted(counts.items())]
