"""`mmfm ingest {dicom,pacs,fhir,omics}`: bring an extract across the de-identification boundary into staged tables."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from flows.cli.common import (
    DebugOpt,
    JsonOpt,
    WorkspaceOpt,
    app,
    command,
    emit,
    quiet_tracebacks,
    say,
    use_workspace,
)

ingest_app = typer.Typer(help="Bring an extract across the de-identification boundary into staged tables.",
                         no_args_is_help=True)
app.add_typer(ingest_app, name="ingest")
SiteOpt = Annotated[str, typer.Option("--site", help="The site (hospital) the extract comes from, e.g. site-a.")]
RunnerOpt = Annotated[str, typer.Option("--runner", help=(
    "Prefect task runner: threads, dask or ray (a local cluster on loopback, or the one MMFM_DASK_ADDRESS / "
    "MMFM_RAY_ADDRESS names)."))]


def run_ingest(flow_name: str, as_json: bool, runner: str, debug: bool = False, **params) -> None:
    from tasks.deid import Pseudonymizer, key_from_settings
    from tasks.ingest.guards import check_key, check_site, check_source
    from tasks.workspace import Workspace

    # before Prefect starts: a missing or short key, a bad site, an empty source, another key than the workspace's
    # are each one line at once (the flow checks them again for callers that skip the CLI)
    keys = Pseudonymizer(key_from_settings())
    check_site(params["site"])
    if params.get("source") is not None:
        check_source(params["source"])  # the message names the rule, never the path (it may name a patient)
    check_key(Workspace(params["workspace"]).state, keys, record=False)
    from flows import ingest
    from flows.cli.progress import flow_progress
    from tasks.runners import task_runner

    quiet_tracebacks(debug)
    flow_fn = getattr(ingest, flow_name).with_options(task_runner=task_runner(runner))
    with flow_progress(flow_fn.name):
        summary = flow_fn(**params)
    emit(summary, as_json, render_ingest)


def render_ingest(s: dict) -> None:
    """Counts, rules and landing names only: the summary names no file of the extract (they may name a patient)."""
    from rich.table import Table

    if s.get("message"):
        say(s["message"])
    extract = f" (landing extract {s['extract_id']})" if s.get("extract_id") else ""
    table = Table(title=f"{s['source']} from {s['site']}{extract}")
    table.add_column("what")
    table.add_column("count", justify="right")
    for what in ("received", "ingested", "quarantined", "pending"):
        if what in s and (what != "pending" or s[what]):
            table.add_row(what, str(s[what]))
    for rule, n in sorted(s.get("quarantine_reasons", {}).items()):
        table.add_row(f"  quarantined under {rule}", str(n))
    for name, n in s.get("tables", {}).items():
        table.add_row(f"staged {name} (rows)", str(n))
    say(table)
    if s.get("quarantine_file"):
        say(f"quarantine records: {s['quarantine_file']}; de-identification report: {s['deid_report']}")


@ingest_app.command("dicom")
@command
def ingest_dicom_cmd(
    source: Annotated[Path, typer.Argument(help="DICOM file, folder (recursive) or zip archive.")],
    site: SiteOpt, runner: RunnerOpt = "threads", workspace: WorkspaceOpt = Path("."), as_json: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Ingest DICOM files: de-identify (PS3.15 basic profile), decode, resample, write tensor shards."""
    root = use_workspace(workspace)
    run_ingest("ingest_dicom", as_json, runner, debug=debug, source=source.resolve(), workspace=root, site=site)


@ingest_app.command("pacs")
@command
def ingest_pacs_cmd(
    site: SiteOpt,
    url: Annotated[str | None, typer.Option(
        "--url", help="DICOMweb base URL, e.g. http://127.0.0.1:8042/dicom-web")] = None,
    dimse: Annotated[str | None, typer.Option(
        "--dimse", help="DIMSE instead of DICOMweb: the PACS's HOST:PORT (C-FIND, then C-GET), e.g. 127.0.0.1:4242; "
                        "loopback only.")] = None,
    aet: Annotated[str | None, typer.Option("--aet", help="With --dimse: the PACS's AE title (called AET).")] = None,
    calling_aet: Annotated[str, typer.Option("--calling-aet", help="With --dimse: our AE title.")] = "MMFM",
    user: Annotated[str | None, typer.Option(envvar="MMFM_PACS_USER")] = None,
    password: Annotated[str | None, typer.Option(envvar="MMFM_PACS_PASSWORD")] = None,
    runner: RunnerOpt = "threads", workspace: WorkspaceOpt = Path("."), as_json: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Fetch new studies from a PACS, over DICOMweb (QIDO-RS, WADO-RS) or DIMSE (C-FIND, C-GET), and ingest them."""
    if (url is None) == (dimse is None):
        raise ValueError("give either --url (DICOMweb) or --dimse HOST:PORT --aet AET (DIMSE)")
    root = use_workspace(workspace)
    if url is not None:
        auth = (user, password) if user else None
        run_ingest("ingest_pacs", as_json, runner, debug=debug, url=url, workspace=root, site=site, auth=auth)
        return
    from tasks.ingest.remote import parse_dimse

    parse_dimse(dimse, aet, calling_aet)  # a malformed address or AE title: one line, before anything starts
    run_ingest("ingest_pacs_dimse", as_json, runner, debug=debug, address=dimse, called_aet=aet, workspace=root,
               site=site, calling_aet=calling_aet)


@ingest_app.command("fhir")
@command
def ingest_fhir_cmd(
    source: Annotated[Path, typer.Argument(help="FHIR bulk-export folder (manifest + NDJSON) or Bundle JSON.")],
    site: SiteOpt, workspace: WorkspaceOpt = Path("."), as_json: JsonOpt = False, debug: DebugOpt = False,
    mrn_system: Annotated[str | None, typer.Option(
        "--mrn-system", help="Identifier system (URI) holding the MRN, for Patients whose identifiers carry no MR type "
                             "code (default: params.yaml ingest.fhir.mrn_system).")] = None,
) -> None:
    """Ingest a FHIR R4 bulk export: reconcile the manifest, check, de-identify, flatten to staged tables."""
    root = use_workspace(workspace)
    run_ingest("ingest_fhir_flow", as_json, "threads", debug=debug, source=source.resolve(), workspace=root,
               site=site, mrn_system=mrn_system)


@ingest_app.command("omics")
@command
def ingest_omics_cmd(
    source: Annotated[Path, typer.Argument(help="Matrix file or folder (CSV, TSV, parquet).")],
    site: SiteOpt,
    sample_sheet: Annotated[Path | None, typer.Option("--sample-sheet", help="sample id -> MRN sheet.")] = None,
    workspace: WorkspaceOpt = Path("."), as_json: JsonOpt = False, debug: DebugOpt = False,
) -> None:
    """Ingest an omics matrix; samples map to patients through the sample sheet."""
    root = use_workspace(workspace)
    run_ingest("ingest_omics_flow", as_json, "threads", debug=debug, source=source.resolve(), workspace=root,
               site=site, sample_sheet=sample_sheet.resolve() if sample_sheet else None)
