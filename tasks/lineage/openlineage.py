"""Ledger events as OpenLineage RunEvents (spec 2-0-2), for Marquez or any other OpenLineage consumer.

One ledger event becomes one COMPLETE RunEvent: job = {namespace, stage}, datasets named by the workspace-relative
URI, each carrying its sha256 twice: in the standard `version` facet (what Marquez shows as the dataset version)
and in an `mmfm_sha256` custom facet. The ledger's own fields (event id, hashes, actor, code version, params,
facts) travel in the `mmfm_ledger` run facet. Nothing here sends anything unless `send_openlineage` is called.

Why inside tasks.lineage: it is the ledger seen through another standard, and reads nothing but ledger events.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path

import httpx

from tasks.atomic import write_with
from tasks.lineage.ledger import Event, Ledger

# The producer URI OpenLineage asks for ("a git url with a given tag or sha"); replace with the project's real
# repository URL when it has a public one. The custom facets' schema URLs hang off it and are not published yet.
PRODUCER = "https://github.com/mmfm/mmfm"
SCHEMA_URL = "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent"
VERSION_FACET_URL = "https://openlineage.io/spec/facets/1-0-1/DatasetVersionDatasetFacet.json#/$defs/DatasetVersionDatasetFacet"
JOB_TYPE_FACET_URL = "https://openlineage.io/spec/facets/2-0-3/JobTypeJobFacet.json#/$defs/JobTypeJobFacet"
# The two facet URLs below are identifiers already written into exports: kept as they were when this module was
# tasks/openlineage.py, so a consumer sees one schema URL per facet across the move.
SHA256_FACET_URL = f"{PRODUCER}/blob/main/tasks/openlineage.py#Sha256DatasetFacet"
LEDGER_FACET_URL = f"{PRODUCER}/blob/main/tasks/openlineage.py#LedgerRunFacet"
RUN_NAMESPACE = uuid.UUID("6f1c1a52-3b0e-5a43-9d4e-6d6d666d6c6e")  # fixed: the same run always maps to one runId


def run_uuid(namespace: str, stage: str, run_id: str) -> str:
    """OpenLineage wants a UUID per run of a job; ours are free text and may be shared by several stages of one
    pipeline run, so the runId is a UUIDv5 of (namespace, stage, run_id): stable across exports and resends."""
    return str(uuid.uuid5(RUN_NAMESPACE, f"{namespace}\n{stage}\n{run_id}"))


def _dataset(entry: Mapping, namespace: str, producer: str) -> dict:
    sha = entry["sha256"]
    return {"namespace": namespace, "name": entry["uri"], "facets": {
        "version": {"_producer": producer, "_schemaURL": VERSION_FACET_URL, "datasetVersion": sha},
        "mmfm_sha256": {"_producer": producer, "_schemaURL": SHA256_FACET_URL, "sha256": sha},
    }}


def to_openlineage(event: Event, namespace: str = "mmfm", producer: str = PRODUCER) -> dict:
    """One ledger event as a COMPLETE RunEvent (a plain dict, ready for json.dumps)."""
    ledger_facet = {"_producer": producer, "_schemaURL": LEDGER_FACET_URL, "eventId": event.event_id,
                    "hash": event.hash, "prevHash": event.prev_hash, "runId": event.run_id, "actor": event.actor,
                    "codeVersion": event.code_version, "params": event.params, "facts": event.facts}
    job_type = {"_producer": producer, "_schemaURL": JOB_TYPE_FACET_URL, "processingType": "BATCH",
                "integration": "MMFM", "jobType": "STAGE"}
    return {
        "eventType": "COMPLETE",
        "eventTime": event.time,
        "run": {"runId": run_uuid(namespace, event.stage, event.run_id), "facets": {"mmfm_ledger": ledger_facet}},
        "job": {"namespace": namespace, "name": event.stage, "facets": {"jobType": job_type}},
        "inputs": [_dataset(e, namespace, producer) for e in event.inputs],
        "outputs": [_dataset(e, namespace, producer) for e in event.outputs],
        "producer": producer,
        "schemaURL": SCHEMA_URL,
    }


def export_openlineage(ledger: Ledger, path: Path, namespace: str = "mmfm") -> int:
    """Write every ledger event as one RunEvent per line (NDJSON), atomically; returns the number written."""
    events = ledger.events()

    def write(tmp: Path) -> None:  # line by line: a long ledger is never held as one string
        with open(tmp, "w", encoding="utf-8") as fh:
            for event in events:
                fh.write(json.dumps(to_openlineage(event, namespace), sort_keys=True) + "\n")

    write_with(Path(path), write)
    return len(events)


def send_openlineage(events: Iterable[Event | Mapping], url: str, namespace: str = "mmfm",
                     timeout_s: float = 10.0) -> int:
    """POST each event to `{url}/api/v1/lineage` (Marquez's endpoint); returns how many were accepted.

    Ledger events are converted with `to_openlineage`; dicts are sent as they are (e.g. lines of an export).
    Raises httpx.HTTPStatusError on the first refusal, so a partial send is visible; resending is harmless for
    Marquez because the runId and eventTime of an event never change.
    """
    endpoint = url.rstrip("/") + "/api/v1/lineage"
    sent = 0
    with httpx.Client(timeout=timeout_s) as client:
        for event in events:
            body = to_openlineage(event, namespace) if isinstance(event, Event) else dict(event)
            client.post(endpoint, json=body).raise_for_status()
            sent += 1
    return sent
