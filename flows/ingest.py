"""Ingest flows: land an extract, check it, de-identify it, write staged tables, quarantine what fails.

    mmfm ingest dicom PATH --site S      files, folders, zip archives
    mmfm ingest pacs --url URL --site S  DICOMweb (QIDO-RS + WADO-RS) from a real PACS, then the DICOM path
    mmfm ingest pacs --dimse HOST:PORT --aet AET --site S   the same over DIMSE (C-FIND + C-GET)
    mmfm ingest fhir PATH --site S       FHIR R4 bulk export (manifest + NDJSON) or Bundles
    mmfm ingest omics PATH --site S      expression matrix + sample sheet

Each flow reads only the extract, writes only landing/, staged/, quarantine/ and reports/, and returns a summary
whose `received == ingested + quarantined + pending` is checked before it is returned (tasks.ingest.publish).
Omics samples of patients not yet ingested are pending (tasks/ingest/pending.py); the FHIR ingest that publishes
those patients stages them in the same run (its summary's `pending_omics`). Work is mapped
over batches of Prefect tasks; the task runner is threads by default, or a local Dask or Ray cluster
(tasks.runners), with identical outputs. The pseudonym key is read by each task from the environment, never passed
as a parameter.

What Prefect's run database learns (flows/boundary.py, docs/privacy.md): the extract's path (`source`,
`sample_sheet`) and the PACS credentials are withheld from the stored flow-run parameters; an exception leaves each
task and flow as a value-free PipelineError (step, rule, class) unless its message is value-free by construction;
summaries and log lines name the landing extract (`extract_id`) and landing objects, never the extract's file names.
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

from prefect import get_run_logger, unmapped
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from flows.boundary import guarded_task, private_flow
from flows.run_names import run_name
from tasks.deid import Pseudonymizer, key_from_settings
from tasks.ingest.accounting import BatchResult
from tasks.ingest.dicom import batch_series, imaging_config, ingest_series_batch, prepare_readers, scan_headers
from tasks.ingest.fhir import ingest_fhir
from tasks.ingest.guards import check_key, check_site, check_source
from tasks.ingest.landing import Extract, land
from tasks.ingest.omics import find_sample_sheet, ingest_omics
from tasks.ingest.pacs import PacsError
from tasks.ingest.pending import pending_lines, stage_resolvable
from tasks.ingest.publish import has_new, new_part, nothing_new, publish
from tasks.ingest.remote import DicomWeb, PacsSource, fetch_all, find_failed, parse_dimse, retry_options, transient
from tasks.ingest.sources import configured_sources, known_patients
from tasks.ingest.state import IngestState
from tasks.workspace import Workspace
from tasks.workspace_lock import holds_workspace_lock

IO_RETRIES = dict(retries=3, retry_delay_seconds=[2, 5, 15])


def _keys() -> Pseudonymizer:
    return Pseudonymizer(key_from_settings())


def _refuse_early(ws: Workspace, site: str, source: Path | None = None) -> None:
    """Before anything is landed: the site's name, the source's content, the workspace's pseudonym key."""
    check_site(site)
    if source is not None:
        check_source(source)
    check_key(ws.state, _keys())  # refuses a missing or short key too


@guarded_task(name="land-extract", cache_policy=NO_CACHE)
def land_extract(source: Path, landing: Path, kind: str, site: str) -> Extract:
    extract = land(source, landing, kind, site)
    again = " (landed before)" if extract.already_landed else ""
    get_run_logger().info("landed %s extract %s from site %s: %d files, %d refused%s", kind, extract.extract_id, site,
                          len(extract.files), len(extract.refused), again)
    return extract


def _published(ws: Workspace, part: Extract, result: BatchResult, skipped: int, inputs=None) -> dict:
    summary = publish(ws, part, result, skipped, this_run=str(flow_run.id or "local"), inputs=inputs)
    get_run_logger().info("ingested %d of %d %s items (%d quarantined, %d pending) from site %s", result.ingested,
                          result.received, result.source, result.quarantined, len(result.pending), part.site)
    return summary


# ---- DICOM ---------------------------------------------------------------------------------------------------------

@guarded_task(name="scan-dicom-headers", cache_policy=NO_CACHE)
def scan_dicom(extract: Extract, landing: Path, site: str):
    return scan_headers(extract, landing, site)


@guarded_task(name="ingest-series-batch", cache_policy=NO_CACHE)
def ingest_series(batch, landing: Path, staged: Path, site: str, cfg) -> BatchResult:
    return ingest_series_batch(batch, landing, staged, _keys(), site, cfg)


def _ingest_dicom_extract(ws: Workspace, extract: Extract, source: str, max_items: int) -> dict:
    cfg = imaging_config(ws.params())
    part, skipped = new_part(extract, IngestState(ws.state))
    if not has_new(part):
        return nothing_new(extract, skipped, source)
    prepare_readers()  # once, before worker threads start
    groups, result = scan_dicom(part, ws.landing, extract.site)
    result.source = source
    futures = ingest_series.map(batch_series(groups, max_items=max_items), unmapped(ws.landing), unmapped(ws.staged),
                                unmapped(extract.site), unmapped(cfg))
    for fut in futures:  # in batch order: the same output whatever finished first
        result.merge(fut.result())
    return _published(ws, part, result, skipped)


@private_flow("ingest-dicom", private=("source",), flow_run_name=run_name("ingest-dicom"))
@holds_workspace_lock("mmfm ingest dicom")
def ingest_dicom(source: Path, workspace: Path, site: str, max_items: int = 64) -> dict:
    """Land DICOM files/folders/zips from `source` and ingest the new ones."""
    ws = Workspace(Path(workspace))
    _refuse_early(ws, site, Path(source))
    extract = land_extract(Path(source), ws.landing, "dicom", site)
    return _ingest_dicom_extract(ws, extract, "dicom", max_items)


# ---- PACS (DICOMweb or DIMSE) --------------------------------------------------------------------------------------

@guarded_task(name="find-pacs-studies", retry_condition_fn=transient, cache_policy=NO_CACHE, **IO_RETRIES)
def find_pacs_studies(source: PacsSource) -> list[str]:
    return source.find()


@guarded_task(name="retrieve-pacs-study", retry_condition_fn=transient, cache_policy=NO_CACHE, **IO_RETRIES)
def retrieve_pacs_study(source: PacsSource, study_uid: str, dest: Path) -> list[Path]:
    return source.retrieve(study_uid, dest)


def _ingest_from_pacs(source: PacsSource, workspace: Path, site: str, max_items: int) -> dict:
    """Find the PACS's studies, fetch those not fetched before into a scratch folder, land them once every one has
    arrived, and ingest them as a DICOM extract."""
    keys = _keys()
    ws = Workspace(Path(workspace))
    _refuse_early(ws, site)
    retry = retry_options(ws.params())
    state = IngestState(ws.state)
    try:
        found = find_pacs_studies.with_options(**retry)(source)
    except PacsError as exc:
        raise find_failed(source, exc, retry) from None
    known = state.fetched()
    todo = [uid for uid in found if keys.uid(uid) not in known]
    if not todo:
        return {"source": "pacs", "site": site, "studies_found": len(found), "studies_fetched": 0, "received": 0,
                "ingested": 0, "quarantined": 0, "quarantine_reasons": {},
                "message": "nothing new: every study on the PACS was fetched before"}
    retrieve = retrieve_pacs_study.with_options(**retry)
    with tempfile.TemporaryDirectory(dir=ws.state, prefix="pacs-") as tmp:
        fetch_all(lambda uid, dest: retrieve.submit(source, uid, dest), source, todo, Path(tmp), retry)
        extract = land_extract(Path(tmp), ws.landing, "pacs", site)
    summary = _ingest_dicom_extract(ws, extract, "pacs", max_items)
    state.mark_fetched([keys.uid(uid) for uid in todo], keys.uid(source.key), summary.get("run_id", ""))
    return {**summary, "studies_found": len(found), "studies_fetched": len(todo)}


@private_flow("ingest-pacs", private=("auth",), flow_run_name=run_name("ingest-pacs"))
@holds_workspace_lock("mmfm ingest pacs")
def ingest_pacs(url: str, workspace: Path, site: str, auth: tuple[str, str] | None = None,
                max_items: int = 64) -> dict:
    """Find studies on a DICOMweb PACS (QIDO-RS), fetch those not fetched before (WADO-RS) and ingest them.

    All or nothing per run: a PACS that goes away mid-run fails the run (after the bounded task retries) with one
    line naming the PACS, and leaves no landed file, staged part, quarantine record or ledger event; a rerun fetches
    the same studies again and ingests each once."""
    return _ingest_from_pacs(DicomWeb(url, auth), workspace, site, max_items)


@private_flow("ingest-pacs-dimse", flow_run_name=run_name("ingest-pacs-dimse"))
@holds_workspace_lock("mmfm ingest pacs")
def ingest_pacs_dimse(address: str, called_aet: str, workspace: Path, site: str, calling_aet: str = "MMFM",
                      max_items: int = 64) -> dict:
    """The same as ingest_pacs over DIMSE: C-FIND the PACS at `address` (HOST:PORT, loopback unless configured
    otherwise) as `calling_aet`, C-GET each new study, ingest what arrived; same retries, same all-or-nothing."""
    return _ingest_from_pacs(parse_dimse(address, called_aet, calling_aet), workspace, site, max_items)


# ---- FHIR ----------------------------------------------------------------------------------------------------------

@guarded_task(name="ingest-fhir-export", cache_policy=NO_CACHE)
def ingest_fhir_export(extract: Extract, landing: Path, site: str, mrn_system: str | None) -> BatchResult:
    return ingest_fhir(extract, landing, _keys(), site, mrn_system=mrn_system)


@private_flow("ingest-fhir", private=("source",), flow_run_name=run_name("ingest-fhir"))
@holds_workspace_lock("mmfm ingest fhir")
def ingest_fhir_flow(source: Path, workspace: Path, site: str, mrn_system: str | None = None) -> dict:
    """Land a FHIR bulk export (or Bundles) and ingest its new files; the MRN is the identifier typed MR, or the one
    in `mrn_system` (default: params.yaml ingest.fhir.mrn_system)."""
    ws = Workspace(Path(workspace))
    _refuse_early(ws, site, Path(source))
    extract = land_extract(Path(source), ws.landing, "fhir", site)
    part, skipped = new_part(extract, IngestState(ws.state), always=("manifest.json",))
    if not has_new(part, metadata=("manifest.json",)):
        return _with_pending_omics(ws, site, nothing_new(extract, skipped, "fhir"))
    mrn_system = mrn_system or (ws.section("ingest").get("fhir") or {}).get("mrn_system")
    summary = _published(ws, part, ingest_fhir_export(part, ws.landing, site, mrn_system), skipped)
    return _with_pending_omics(ws, site, summary)


@guarded_task(name="stage-pending-omics", cache_policy=NO_CACHE)
def ingest_pending_omics(extract: Extract, landing: Path, site: str, known: set[str], places) -> BatchResult:
    return ingest_omics(extract, landing, _keys(), site, known, only=places)


def _with_pending_omics(ws: Workspace, site: str, summary: dict) -> dict:
    """Stage the site's pending omics samples whose patients are published now (after the FHIR commit point); the
    FHIR summary says how many were staged and how many still wait."""
    state = IngestState(ws.state)
    known = known_patients(ws.staged, site)
    staged = stage_resolvable(
        state, ws.landing, site, known,
        ingest=lambda extract, places: ingest_pending_omics(extract, ws.landing, site, known, places),
        publish=lambda extract, result, inputs: _published(ws, extract, result, 0, inputs=inputs))
    left = [line for line in pending_lines(state) if line.endswith(f"(site {site})")]
    summary = {**summary, "pending_omics": {"staged": sum(s["staged_from_pending"] for s in staged),
                                            "still_pending": sum(1 for p in state.pending(site)),
                                            "ingests": staged}}
    if staged or left:
        note = f"staged {summary['pending_omics']['staged']} pending omics samples (site {site})"
        summary["message"] = "; ".join(x for x in (summary.get("message"), note, *left) if x)
    return summary


# ---- omics ---------------------------------------------------------------------------------------------------------

@guarded_task(name="ingest-omics-matrix", cache_policy=NO_CACHE)
def ingest_omics_matrix(extract: Extract, landing: Path, site: str, known_patients: set[str], sheet) -> BatchResult:
    return ingest_omics(extract, landing, _keys(), site, known_patients, sample_sheet=sheet)


@private_flow("ingest-omics", private=("source", "sample_sheet"), flow_run_name=run_name("ingest-omics"))
@holds_workspace_lock("mmfm ingest omics")
def ingest_omics_flow(source: Path, workspace: Path, site: str, sample_sheet: Path | None = None) -> dict:
    """Land an omics extract (matrix + sample sheet) and ingest its new samples; a sample whose MRN is no patient
    staged from the same site's EHR extract yet is pending until the FHIR ingest that brings the patient."""
    ws = Workspace(Path(workspace))
    _refuse_early(ws, site, Path(source))
    extract = land_extract(Path(source), ws.landing, "omics", site)
    sheet = (land_extract(Path(sample_sheet), ws.landing, "omics", site).files[0] if sample_sheet
             else find_sample_sheet(extract))
    part, skipped = new_part(extract, IngestState(ws.state))
    if sheet is not None:
        part = dataclasses.replace(part, files=tuple(f for f in part.files if f.sha256 != sheet.sha256))
    if not has_new(part):
        return nothing_new(extract, skipped, "omics")
    known = known_patients(ws.staged, site)
    return _published(ws, part, ingest_omics_matrix(part, ws.landing, site, known, sheet), skipped)


# ---- every configured source: the pipeline's `ingest` stage -----------------------------------------------------

FLOWS = {"fhir": ingest_fhir_flow, "omics": ingest_omics_flow, "dicom": ingest_dicom}


def run(workspace: Path, say=lambda _: None) -> dict:
    """Ingest every configured source of the workspace (tasks.ingest.sources); totals and one summary per source."""
    ws = Workspace(Path(workspace))
    totals = {"received": 0, "ingested": 0, "quarantined": 0, "pending": 0, "staged_from_pending": 0,
              "quarantine_reasons": {}, "sources": []}
    for src in configured_sources(ws):
        s = FLOWS[src["kind"]](source=src["path"], workspace=ws.root, site=src["site"])
        say(f"ingest {src['kind']} from {src['site']}: received {s['received']}, ingested {s['ingested']}, "
            f"quarantined {s['quarantined']}, pending {s.get('pending', 0)}")
        totals["sources"].append({k: s.get(k) for k in ("source", "site", "received", "ingested", "quarantined",
                                                         "pending")})
        for k in ("received", "ingested", "quarantined"):
            totals[k] += s[k]
        totals["pending"] += s.get("pending", 0)  # held by this run; staged later ones are counted apart
        totals["staged_from_pending"] += (s.get("pending_omics") or {}).get("staged", 0)
        for rule, n in s["quarantine_reasons"].items():
            totals["quarantine_reasons"][rule] = totals["quarantine_reasons"].get(rule, 0) + n
    return totals


if __name__ == "__main__":  # `dvc repro` runs `python -m flows.ingest` in the workspace
    from tasks.settings import quiet_telemetry

    quiet_telemetry()
    print(run(Path.cwd()))
