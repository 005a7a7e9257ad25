"""Ingest flows: land an extract, check it, de-identify it, write staged tables, quarantine what fails.

    mmfm ingest dicom PATH --site S      files, folders, zip archives
    mmfm ingest pacs --url URL --site S  DICOMweb (QIDO-RS + WADO-RS) from a real PACS, then the DICOM path
    mmfm ingest fhir PATH --site S       FHIR R4 bulk export (manifest + NDJSON) or Bundles
    mmfm ingest omics PATH --site S      expression matrix + sample sheet

Each flow reads only the extract, writes only landing/, staged/, quarantine/ and reports/, and returns a summary
whose `received == ingested + quarantined` is checked before it is returned. Work is mapped over batches of
Prefect tasks; the task runner is threads by default, or a local Dask cluster (`runner="dask"`), with identical
outputs. The pseudonym key is read by each task from the environment, never passed as a parameter.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

from prefect import flow, get_run_logger, task, unmapped
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from tasks.deid import Pseudonymizer, key_from_settings
from tasks.faults import kill_point
from tasks.ingest.accounting import BatchResult
from tasks.ingest.landing import Extract, land
from tasks.ingest.quarantine import Quarantine
from tasks.ingest.staged import build_cohort, write_part
from tasks.ingest.state import IngestState
from tasks.lineage import record
from tasks.workspace import Workspace
from tasks.workspace_lock import holds_workspace_lock

IO_RETRIES = dict(retries=3, retry_delay_seconds=[2, 5, 15])


def _keys() -> Pseudonymizer:
    return Pseudonymizer(key_from_settings())


def _task_runner(runner: str, workers: int = 2):
    """The flow's task runner: `threads`, `dask` or `ray`, with `workers` threads, processes or CPUs.

    Dask and Ray start a local cluster for the flow, listening on loopback only and shut down when the flow ends, or
    join the existing cluster named by MMFM_DASK_ADDRESS / MMFM_RAY_ADDRESS (docs/scale-out.md). Their workers
    import `flows` and `tasks` from the installed package and read MMFM_PSEUDONYM_KEY from their own environment
    (inherited from this process on a local cluster; set on the workers of an existing one): the key is never a
    task parameter, so it never reaches Prefect's API or a cluster's object store.
    """
    if runner == "threads":
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner(max_workers=workers)
    if runner == "dask":
        from prefect_dask import DaskTaskRunner

        if address := os.environ.get("MMFM_DASK_ADDRESS"):
            return DaskTaskRunner(address=address)
        return DaskTaskRunner(cluster_kwargs={"n_workers": workers, "threads_per_worker": 1, "processes": True,
                                              "host": "127.0.0.1", "dashboard_address": None})
    if runner == "ray":
        from prefect_ray import RayTaskRunner  # imports ray lazily, on the runner's first use

        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        if address := os.environ.get("MMFM_RAY_ADDRESS"):
            return RayTaskRunner(address=address)
        # Ray replaces a loopback node address by the host's routable one (and its gRPC servers then listen on every
        # interface) unless this switch is off; ray reads it once, when it is imported
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
        constants = sys.modules.get("ray._private.ray_constants")
        if constants is not None and constants.ENABLE_RAY_CLUSTER:
            raise RuntimeError("--runner ray: ray was imported before RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 was set, so "
                               "a local cluster would listen on every interface; set it before importing ray")
        return RayTaskRunner(init_kwargs={"num_cpus": workers, "include_dashboard": False,
                                          "_node_ip_address": "127.0.0.1", "log_to_driver": False,
                                          "configure_logging": False})
    raise ValueError(f"--runner must be threads, dask or ray, not {runner!r}")


def _imaging_config(ws: Workspace):
    from tasks.ingest.dicom import ImagingConfig

    p = ws.params().get("ingest", {}).get("imaging", {})
    return ImagingConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in p.items()})


@task(name="land-extract", cache_policy=NO_CACHE)
def land_extract(source: Path, landing: Path, kind: str, site: str) -> Extract:
    return land(source, landing, kind, site)


def new_part(extract: Extract, state: IngestState, always: tuple[str, ...] = ()) -> tuple[Extract, int]:
    """The files of an extract not processed before (plus metadata files named in `always`)."""
    done = state.processed(extract.source, extract.site)
    keep = tuple(f for f in extract.files if f.sha256 not in done or Path(f.rel_path).name in always)
    return dataclasses.replace(extract, files=keep), len(extract.files) - len(keep)


def _write_atomically(path: Path, write) -> Path:
    """`write(tmp)` to a hidden sibling, then rename: a kill leaves the old file or the new one, never half of one
    (hidden names are outside every table's glob and every tree hash; the rerun reuses and replaces the name)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.incoming")
    write(tmp)
    os.replace(tmp, path)
    return path


def _write_quarantine(ws: Workspace, quarantine: Quarantine) -> Path | None:
    """`Quarantine.write` into a hidden folder, then renamed into data/quarantine/<run_id>.parquet."""
    incoming = ws.quarantine / f".incoming-{quarantine.run_id}"
    shutil.rmtree(incoming, ignore_errors=True)
    written = quarantine.write(incoming)
    path = None if written is None else _write_atomically(ws.quarantine / written.name,
                                                          lambda tmp: os.replace(written, tmp))
    shutil.rmtree(incoming, ignore_errors=True)
    return path


def publish(ws: Workspace, extract: Extract, result: BatchResult, skipped: int) -> dict:
    """Write staged parts, the quarantine and the de-identification report; remember what was processed.

    Safe to kill anywhere and rerun: every file is written atomically under a name fixed by the extract (parts)
    or by the run that first claimed the extract (quarantine, report, ledger event; see IngestState.claim), so the
    rerun of a killed publish overwrites the same files with the same bytes and finds its ledger event again. The
    ingest-state record comes last and is the commit point: until it exists the extract counts as not ingested.
    """
    if not result.balanced():
        raise RuntimeError(f"accounting broke for extract {extract.extract_id}: received {result.received}, "
                           f"ingested {result.ingested}, quarantined {result.quarantined}")
    state = IngestState(ws.state)
    this_run = str(flow_run.id or "local")
    run_id = state.claim(extract.source, extract.site, extract.extract_id, this_run)
    tables, written = {}, []
    for table, rows in sorted(result.rows.items()):
        path = write_part(ws.staged, table, extract.extract_id, rows)
        if path is not None:
            tables[table] = len(rows)
            written.append(path)
    quarantine = Quarantine(run_id)
    quarantine.extend(result.rejections)
    qpath = _write_quarantine(ws, quarantine)
    report = _write_atomically(ws.reports / f"deid-{run_id}.json", lambda tmp: tmp.write_text(result.deid.to_json()))
    kill_point("ingest.after_parts")
    cohort = build_cohort(ws.staged)
    written += [ws.root / f for f in result.files_written] + [p for p in (qpath, report) if p is not None]
    event = record(ws, "ingest", run_id, inputs=[ws.landing / extract.source / f"{extract.extract_id}.json"],
                   outputs=written, params={"source": extract.source, "site": extract.site},
                   facts={"received": result.received, "ingested": result.ingested,
                          "quarantined": result.quarantined})
    kill_point("ingest.after_ledger")
    state.mark_processed([f.sha256 for f in extract.files], extract.source, extract.site, extract.extract_id, run_id)
    summary = {
        "source": result.source, "site": extract.site, "extract_id": extract.extract_id, "run_id": run_id,
        "resumed": run_id != this_run, "new_files": len(extract.files), "already_ingested_files": skipped,
        "received": result.received, "ingested": result.ingested, "quarantined": result.quarantined,
        "quarantine_reasons": dict(sorted(Quarantine(run_id, result.rejections).reasons().items())),
        "tables": tables, "patients_in_cohort": cohort.height, "files_written": len(result.files_written),
        "quarantine_file": str(qpath.relative_to(ws.root)) if qpath else None,
        "deid_report": str(report.relative_to(ws.root)), "lineage_event": event.event_id, **result.facts,
    }
    get_run_logger().info("ingested %d of %d %s items (%d quarantined) from site %s", result.ingested,
                          result.received, result.source, result.quarantined, extract.site)
    return summary


def _nothing_new(extract: Extract, skipped: int, source: str) -> dict:
    return {"source": source, "site": extract.site, "extract_id": extract.extract_id, "new_files": 0,
            "already_ingested_files": skipped, "received": 0, "ingested": 0, "quarantined": 0,
            "quarantine_reasons": {}, "message": "nothing new: every file of this extract was ingested before"}


# ---- DICOM ---------------------------------------------------------------------------------------------------------

@task(name="scan-dicom-headers", cache_policy=NO_CACHE)
def scan_dicom(extract: Extract, landing: Path, site: str):
    from tasks.ingest.dicom import scan_headers

    return scan_headers(extract, landing, site)


@task(name="ingest-series-batch", cache_policy=NO_CACHE)
def ingest_series(batch, landing: Path, staged: Path, site: str, cfg) -> BatchResult:
    from tasks.ingest.dicom import ingest_series_batch

    return ingest_series_batch(batch, landing, staged, _keys(), site, cfg)


def _ingest_dicom_extract(ws: Workspace, extract: Extract, source: str, cfg, max_items: int) -> dict:
    from tasks.ingest.dicom import batch_series

    part, skipped = new_part(extract, IngestState(ws.state))
    if not part.files:
        return _nothing_new(extract, skipped, source)
    import monai.transforms  # noqa: F401 - imported once here: threads importing MONAI at once deadlock
    from pydicom import config as pydicom_config

    # value validation warns with the offending value quoted (PHI in logs); the switch is process-wide, so set it
    # once before worker threads start rather than toggling it per file
    pydicom_config.settings.reading_validation_mode = pydicom_config.IGNORE
    logging.getLogger("pydicom").setLevel(logging.ERROR)  # truncation warnings: each such file is quarantined
    warnings.filterwarnings("ignore", category=UserWarning, module="pydicom")

    groups, result = scan_dicom(part, ws.landing, extract.site)
    result.source = source
    batches = batch_series(groups, max_items=max_items)
    futures = ingest_series.map(batches, unmapped(ws.landing), unmapped(ws.staged), unmapped(extract.site),
                                unmapped(cfg))
    for fut in futures:  # in batch order: the same output whatever finished first
        result.merge(fut.result())
    return publish(ws, part, result, skipped)


@flow(name="ingest-dicom")
@holds_workspace_lock("mmfm ingest dicom")
def ingest_dicom(source: Path, workspace: Path, site: str, max_items: int = 64) -> dict:
    """Land DICOM files/folders/zips from `source` and ingest the new ones."""
    _keys()  # refuse before touching anything when the key is missing
    ws = Workspace(Path(workspace))
    extract = land_extract(Path(source), ws.landing, "dicom", site)
    return _ingest_dicom_extract(ws, extract, "dicom", _imaging_config(ws), max_items)


# ---- PACS (DICOMweb) -----------------------------------------------------------------------------------------------

def _transient(task, task_run, state) -> bool:
    from tasks.ingest.pacs import is_retryable

    try:
        state.result()
    except Exception as exc:  # noqa: BLE001 - the failure is what we classify
        return is_retryable(exc)
    return False


def pacs_retries(ws: Workspace) -> dict:
    """Prefect retry options of the PACS tasks: params.yaml `ingest.pacs.retry_delays`, seconds, one per retry
    (default [2, 5, 15]: three retries with back-off). Always bounded: at most 10 retries of at most 600 s each."""
    pacs = (ws.params().get("ingest") or {}).get("pacs") or {}
    delays = pacs.get("retry_delays", IO_RETRIES["retry_delay_seconds"])
    if not (isinstance(delays, list) and len(delays) <= 10 and all(
            isinstance(d, int | float) and not isinstance(d, bool) and 0 <= d <= 600 for d in delays)):
        raise ValueError("params.yaml ingest.pacs.retry_delays: a list of at most 10 delays in seconds (each 0 to "
                         "600), one per retry, e.g. [2, 5, 15]")
    return {"retries": len(delays), "retry_delay_seconds": list(delays) or 0}


@task(name="find-pacs-studies", retry_condition_fn=_transient, cache_policy=NO_CACHE, **IO_RETRIES)
def find_pacs_studies(url: str, auth):
    from tasks.ingest.pacs import find_studies

    return find_studies(url, auth=auth)


@task(name="retrieve-pacs-study", retry_condition_fn=_transient, cache_policy=NO_CACHE, **IO_RETRIES)
def retrieve_pacs_study(url: str, study_uid: str, dest: Path, auth) -> list[Path]:
    from tasks.ingest.pacs import retrieve_study

    return retrieve_study(url, study_uid, dest, auth=auth)


PACS_BATCH = 8  # retrievals in flight at once: a PACS that dies costs at most this many retry sequences


def _fetch_all(url: str, todo: list, scratch: Path, auth, retry: dict) -> None:
    """Retrieve every study into `scratch`, or raise one PacsError naming the PACS and how many did not arrive.

    In batches of PACS_BATCH, stopping after the first batch with a study that could not be retrieved: against a
    PACS that went away, the run ends after one batch's retries instead of every study's (1000 studies x 22 s).
    Each batch is waited for in full, so no retrieval is still writing into `scratch` when the caller removes it."""
    from prefect.futures import wait

    from tasks.ingest.pacs import PacsError, display_url

    retrieve = retrieve_pacs_study.with_options(**retry)
    for start in range(0, len(todo), PACS_BATCH):
        batch = list(enumerate(todo))[start:start + PACS_BATCH]
        futures = [retrieve.submit(url, s.study_instance_uid, scratch / f"{i:05d}", auth) for i, s in batch]
        wait(futures)
        failures = [f.state.result(raise_on_failure=False) for f in futures if not f.state.is_completed()]
        if failures:
            untried = len(todo) - start - len(batch)
            raise PacsError(f"PACS {display_url(url)}: {len(failures)} of {len(todo)} studies not retrieved (WADO-RS"
                            f"{_retried(failures[0], retry)}{f', {untried} not tried' if untried else ''}): "
                            f"{failures[0]}; nothing was ingested, rerun once the PACS answers")


def _retried(exc: BaseException, retry: dict) -> str:
    from tasks.ingest.pacs import is_retryable

    return f", {retry['retries']} retries after {retry['retry_delay_seconds']} s" if is_retryable(exc) else ""


@flow(name="ingest-pacs")
@holds_workspace_lock("mmfm ingest pacs")
def ingest_pacs(url: str, workspace: Path, site: str, auth: tuple[str, str] | None = None,
                max_items: int = 64) -> dict:
    """Find studies on a DICOMweb PACS, fetch those not fetched before, and ingest them as a DICOM extract.

    All or nothing per run: the new studies are fetched into a scratch folder and landed only once every one has
    arrived. A PACS that goes away mid-run fails the run (after the bounded task retries) with one line naming the
    PACS, and leaves no landed file, staged part, quarantine record or ledger event; a rerun fetches the same
    studies again and ingests each once."""
    from tasks.ingest.pacs import PacsError, display_url

    keys = _keys()
    ws = Workspace(Path(workspace))
    retry = pacs_retries(ws)
    state = IngestState(ws.state)
    try:
        found = find_pacs_studies.with_options(**retry)(url, auth)
    except PacsError as exc:
        raise PacsError(f"PACS {display_url(url)}: finding studies failed (QIDO-RS{_retried(exc, retry)}): {exc}"
                        ) from None
    known = state.fetched()
    todo = [s for s in found if keys.uid(s.study_instance_uid) not in known]
    if not todo:
        return {"source": "pacs", "site": site, "studies_found": len(found), "studies_fetched": 0, "received": 0,
                "ingested": 0, "quarantined": 0, "quarantine_reasons": {},
                "message": "nothing new: every study on the PACS was fetched before"}
    with tempfile.TemporaryDirectory(dir=ws.state, prefix="pacs-") as tmp:
        _fetch_all(url, todo, Path(tmp), auth, retry)
        extract = land_extract(Path(tmp), ws.landing, "pacs", site)
    summary = _ingest_dicom_extract(ws, extract, "pacs", _imaging_config(ws), max_items)
    state.mark_fetched([keys.uid(s.study_instance_uid) for s in todo], keys.uid(url), summary.get("run_id", ""))
    return {**summary, "studies_found": len(found), "studies_fetched": len(todo)}


# ---- FHIR ----------------------------------------------------------------------------------------------------------

@task(name="ingest-fhir-export", cache_policy=NO_CACHE)
def ingest_fhir_export(extract: Extract, landing: Path, site: str) -> BatchResult:
    from tasks.ingest.fhir import ingest_fhir

    return ingest_fhir(extract, landing, _keys(), site)


@flow(name="ingest-fhir")
@holds_workspace_lock("mmfm ingest fhir")
def ingest_fhir_flow(source: Path, workspace: Path, site: str) -> dict:
    """Land a FHIR bulk export (or Bundles) and ingest its new files."""
    _keys()
    ws = Workspace(Path(workspace))
    extract = land_extract(Path(source), ws.landing, "fhir", site)
    part, skipped = new_part(extract, IngestState(ws.state), always=("manifest.json",))
    if not any(Path(f.rel_path).name != "manifest.json" for f in part.files):
        return _nothing_new(extract, skipped, "fhir")
    return publish(ws, part, ingest_fhir_export(part, ws.landing, site), skipped)


# ---- omics ---------------------------------------------------------------------------------------------------------

@task(name="ingest-omics-matrix", cache_policy=NO_CACHE)
def ingest_omics_matrix(extract: Extract, landing: Path, site: str, known_patients: set[str], sheet) -> BatchResult:
    from tasks.ingest.omics import ingest_omics

    return ingest_omics(extract, landing, _keys(), site, known_patients, sample_sheet=sheet)


@flow(name="ingest-omics")
@holds_workspace_lock("mmfm ingest omics")
def ingest_omics_flow(source: Path, workspace: Path, site: str, sample_sheet: Path | None = None) -> dict:
    """Land an omics extract (matrix + sample sheet) and ingest its new samples; sample MRNs must belong to
    patients already staged from the same site's EHR extract."""
    from tasks.ingest.omics import find_sample_sheet
    from tasks.ingest.staged import read_table

    _keys()
    ws = Workspace(Path(workspace))
    extract = land_extract(Path(source), ws.landing, "omics", site)
    sheet = (land_extract(Path(sample_sheet), ws.landing, "omics", site).files[0] if sample_sheet
             else find_sample_sheet(extract))
    part, skipped = new_part(extract, IngestState(ws.state))
    if sheet is not None:
        part = dataclasses.replace(part, files=tuple(f for f in part.files if f.sha256 != sheet.sha256))
    if not part.files:
        return _nothing_new(extract, skipped, "omics")
    patients = read_table(ws.staged, "patients")
    known = set(patients.filter(patients["site"] == site)["patient_id"].to_list()) if patients.height else set()
    return publish(ws, part, ingest_omics_matrix(part, ws.landing, site, known, sheet), skipped)



# ---- every configured source: the pipeline's `ingest` stage -----------------------------------------------------

KIND_ORDER = ("fhir", "omics", "dicom")  # EHR first: omics samples must match staged patients
FLOWS = {"fhir": ingest_fhir_flow, "omics": ingest_omics_flow, "dicom": ingest_dicom}


def configured_sources(ws: Workspace) -> list[dict]:
    """`params.yaml: ingest.sources` ([{kind, path, site}]); by default every `extracts/**/<site>/<kind>` folder."""
    listed = ws.params().get("ingest", {}).get("sources")
    if listed:
        return [{**s, "path": ws.root / s["path"]} for s in listed]
    found = [{"kind": p.name, "path": p, "site": p.parent.name} for p in sorted(ws.extracts.glob("**/*"))
             if p.is_dir() and p.name in KIND_ORDER and any(p.iterdir())]
    return sorted(found, key=lambda s: (s["site"], KIND_ORDER.index(s["kind"]), str(s["path"])))


def run(workspace: Path, say=lambda _: None) -> dict:
    """Ingest every configured source of the workspace; totals and one summary per source."""
    ws = Workspace(Path(workspace))
    totals = {"received": 0, "ingested": 0, "quarantined": 0, "quarantine_reasons": {}, "sources": []}
    for src in configured_sources(ws):
        s = FLOWS[src["kind"]](source=src["path"], workspace=ws.root, site=src["site"])
        say(f"ingest {src['kind']} from {src['site']}: received {s['received']}, ingested {s['ingested']}, "
            f"quarantined {s['quarantined']}")
        totals["sources"].append({k: s.get(k) for k in ("source", "site", "received", "ingested", "quarantined")})
        for k in ("received", "ingested", "quarantined"):
            totals[k] += s[k]
        for rule, n in s["quarantine_reasons"].items():
            totals["quarantine_reasons"][rule] = totals["quarantine_reasons"].get(rule, 0) + n
    return totals


if __name__ == "__main__":  # `dvc repro` runs `python -m flows.ingest` in the workspace
    from tasks.settings import quiet_telemetry

    quiet_telemetry()
    print(run(Path.cwd()))
