"""The `mmfm` command (DESIGN.md §7).

Contract for every command: `--workspace DIR` (default: the current directory) and `--json`, which makes the last
line of stdout one JSON object summarising what happened. Exit 0: the stage did its job (quarantined input is not a
failure); exit 1: it could not, with one line on stderr naming why (`--debug` for the traceback).
Heavy libraries are imported inside the commands so `mmfm --help` stays fast.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from tasks.settings import bounded_mlflow_retries, quiet_telemetry
from tasks.workspace_lock import WAIT_ENV, WorkspaceBusy

# errors whose message already says what happened and what to do (matched by name: importing their modules would
# load Prefect/DVC into every CLI start)
SELF_EXPLAINING = ("CuratedChanged", "PublishError", "NoSpaceLeft", "PromotionRefused")

app = typer.Typer(
    name="mmfm", no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
    help="Governed multimodal medical foundation model: ingest, de-identify, validate, version, train, register, "
         "monitor.",
)

WorkspaceOpt = Annotated[Path, typer.Option("--workspace", "-w", help="Workspace directory (git + DVC repo).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON summary as the last line of stdout.")]
DebugOpt = Annotated[bool, typer.Option("--debug", help="Show the full traceback on error.")]
WaitOpt = Annotated[float | None, typer.Option(
    "--wait", help="Seconds to wait for another process holding the workspace (default 0: refuse at once, naming it; "
                   f"also {WAIT_ENV}).")]


class StageError(Exception):
    """A stage could not do its job; the message names the rule or input at fault (and never quotes PHI)."""


def _console(stderr: bool = True):
    """Progress and errors go to stderr; human summaries to stdout (replaced by the JSON line under --json)."""
    from rich.console import Console

    return Console(stderr=stderr)


def command(fn: Callable) -> Callable:
    """Run a command with telemetry off; turn any failure into one line on stderr and exit 1 (unless --debug)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        quiet_telemetry()
        bounded_mlflow_retries()  # a dead tracking server fails in about a minute, not MLflow's 4 (every command)
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except Exception as exc:  # noqa: BLE001 - the CLI boundary: one clear line, not a traceback
            if kwargs.get("debug"):
                raise
            from rich.markup import escape

            clean = isinstance(exc, StageError | ValueError | WorkspaceBusy) or type(exc).__name__ in SELF_EXPLAINING
            name = "" if clean else f"{type(exc).__name__}: "
            _console().print(f"[bold red]error:[/] {escape(name + str(exc))}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None

    return wrapper


def lock_wait(seconds: float | None) -> None:
    """--wait: how long the workspace lock (tasks.workspace_lock) may be waited for by every flow this command runs."""
    import os

    if seconds is not None:
        os.environ[WAIT_ENV] = str(seconds)


def emit(result: dict, as_json: bool, render: Callable[[dict], None]) -> None:
    """Human summary on stderr/stdout, or the JSON object as the very last line of stdout."""
    if as_json:
        sys.stdout.write(json.dumps(result, default=str) + "\n")
    else:
        render(result)


def progress_bar(total: int, description: str):
    """A rich progress bar on stderr, so stdout stays clean for --json."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                   console=_console(), transient=True)
    return bar, bar.add_task(description, total=total)


@app.command()
@command
def init(
    directory: Annotated[Path, typer.Argument(help="Directory of the new workspace.")],
    as_json: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Create a workspace: git + DVC repository, params.yaml, data layout and a local DVC remote."""
    from flows.pipeline import render_dvc_yaml
    from tasks.workspace import init_workspace

    ws = init_workspace(directory, dvc_yaml=render_dvc_yaml())
    from tasks.settings import get_settings

    remote = get_settings(ws.root).dvc_remote_url or ".mmfm/dvc-remote"
    result = {"workspace": str(ws.root), "dvc_remote": remote, "params": str(ws.params_file)}
    emit(result, as_json, lambda r: _console(stderr=False).print(f"workspace ready: {r['workspace']}"))


@app.command()
@command
def synth(
    out: Annotated[Path, typer.Option("--out", help="Directory to write the cohort into.")],
    patients: Annotated[int, typer.Option(help="Number of patients.")] = 200,
    sites: Annotated[int, typer.Option(help="Number of hospital sites.")] = 3,
    seed: Annotated[int, typer.Option(help="Random seed: same seed, byte-identical files.")] = 0,
    missing_rate: Annotated[float, typer.Option(help="Per-modality probability of absence.")] = 0.2,
    corrupt_rate: Annotated[float, typer.Option(help="Rate of deliberate defects (reported in truth/).")] = 0.0,
    shift: Annotated[str | None, typer.Option(help="Site key (e.g. site-b) whose scanner and patients drift.")] = None,
    workspace: WorkspaceOpt = Path("."),
    as_json: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Generate a synthetic multi-site cohort (DICOM, FHIR bulk export, omics) with known ground truth."""
    from tasks.synth.generate import SynthConfig, generate

    cfg = SynthConfig(patients=patients, sites=sites, seed=seed, missing_rate=missing_rate,
                      corrupt_rate=corrupt_rate, shift=shift)
    cfg.check()
    target = out if out.is_absolute() else workspace / out
    bar, task = progress_bar(patients, "synth")
    with bar:
        summary = generate(target, cfg, progress=lambda n: bar.update(task, completed=n))
    emit(summary, as_json, _render_synth)


def _render_synth(s: dict) -> None:
    from rich.table import Table

    table = Table(title=f"synthetic cohort: {s['patients']} patients, sites {', '.join(s['sites'])}")
    table.add_column("what")
    table.add_column("count", justify="right")
    for m, n in s["modalities"].items():
        table.add_row(f"patients with {m}", str(n))
    table.add_row("DICOM files", str(s["dicom_files"]))
    for t, n in s["fhir_resources"].items():
        table.add_row(f"FHIR {t}", str(n))
    table.add_row("omics samples", str(s["omics_samples"]))
    for k, n in s["corrupted"].items():
        if n:
            table.add_row(f"corrupted: {k}", str(n))
    con = _console(stderr=False)
    con.print(table)
    con.print(f"written to {s['out']} in {s['seconds']} s; ground truth in {s['truth']}")


@app.command()
@command
def demo(
    patients: Annotated[int, typer.Option(help="Cohort size.")] = 300,
    workspace: WorkspaceOpt = Path("demo-workspace"),
    wait: WaitOpt = None,
    as_json: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Run every stage that exists on a generated cohort with embedded defaults; print where to look next."""
    import os

    lock_wait(wait)

    if not debug:  # the demo narrates its stages itself; Prefect's per-task INFO lines would drown them
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    from flows.demo import DEMO_STAGES, run_demo

    con = _console()
    bar, task = progress_bar(len(DEMO_STAGES), "demo")
    cohort = bar.add_task("synth: patients", total=patients)

    def step(name: str) -> None:
        done = DEMO_STAGES.index(name)
        bar.update(task, completed=done, description=f"demo: {name} ({done + 1}/{len(DEMO_STAGES)})")

    with bar:
        result = run_demo(workspace, patients, progress=lambda n: bar.update(cohort, completed=n),
                          say=lambda line: con.print(line, highlight=False), step=step)
        bar.update(task, completed=len(DEMO_STAGES))
    emit(result, as_json, _render_demo)


def _render_demo(r: dict) -> None:
    from rich.table import Table

    con = _console(stderr=False)
    b = r["bayes"]
    table = Table(title="best achievable macro AUROC (exact posterior from the generator)")
    table.add_column("inputs")
    table.add_column("patients", justify="right")
    table.add_column("AUROC", justify="right")
    table.add_row("all modalities each patient has", str(b["patients"]), f"{b['bayes_auroc']:.3f}")
    table.add_row("demographics only", str(b["patients"]), f"{b['demographics_auroc']:.3f}")
    for m, v in b["single_modality"].items():
        table.add_row(f"{m} alone (all: {v['bayes_auroc_same_patients']:.3f})", str(v["patients"]),
                      f"{v['auroc_alone']:.3f}")
    con.print(table)
    ing = r["ingest"]
    con.print(f"ingest: received {ing['received']}, ingested {ing['ingested']}, quarantined {ing['quarantined']} "
              f"({', '.join(f'{k}: {v}' for k, v in sorted(ing['quarantine_reasons'].items()))})")
    if r["pseudonym_key"]["created"]:
        con.print(f"created a demo pseudonym key at {r['pseudonym_key']['path']} (mode 0600); set "
                  "MMFM_PSEUDONYM_KEY for real extracts")
    ev = r.get("evaluation")
    if ev:
        table = Table(title=f"held-out test split ({ev['test_patients']} patients), 95% bootstrap CI")
        for col in ("model", "metric", "value", "CI"):
            table.add_column(col)
        for task_name, m in ev["tasks"].items():
            table.add_row(f"fine-tuned: {task_name}", m["metric"], f"{m['value']}", f"{m['ci_low']}-{m['ci_high']}")
        if "late_fusion_auroc" in ev:
            table.add_row("late fusion baseline", "auroc_macro", f"{ev['late_fusion_auroc']}", "")
        for m, v in ev.get("single_modality_auroc", {}).items():
            table.add_row(f"single modality: {m}", "auroc_macro", f"{v}", "(its patients)")
        if "bayes_auroc_same_patients" in ev:
            table.add_row("Bayes (generator posterior)", "auroc_macro", f"{ev['bayes_auroc_same_patients']}", "")
        con.print(table)
    gov = r.get("governance")
    if gov:
        con.print(f"registry: {gov['registered']}; promotion to champion: {gov['promotion']['decision']}"
                  + (f" ({gov['promotion'].get('reasons')})" if gov["promotion"].get("reasons") else ""))
        mon = gov.get("monitoring")
        if mon:
            sites = ", ".join(mon["flagged_sites"]) or "no site"
            con.print(f"monitoring the shifted extract with {mon['model']}: {mon['status']} at {sites}; retraining "
                      f"trigger: {mon['retrain'] or 'not needed'}")
            if mon.get("findings"):
                con.print(f"  what moved: {mon['findings']}")
        audit = gov["audit"]
        con.print(f"audit report: {'complete' if audit['complete'] else 'GAPS: ' + '; '.join(audit['gaps'])}")
    con.print(f"stages run: {', '.join(r['stages'])} in {r['seconds']} s")
    for label, path in r["where"].items():
        con.print(f"  {label}: {path}")


ingest_app = typer.Typer(help="Bring an extract across the de-identification boundary into staged tables.",
                         no_args_is_help=True)
app.add_typer(ingest_app, name="ingest")
SiteOpt = Annotated[str, typer.Option("--site", help="The site (hospital) the extract comes from, e.g. site-a.")]
RunnerOpt = Annotated[str, typer.Option("--runner", help=(
    "Prefect task runner: threads, dask or ray (a local cluster on loopback, or the one MMFM_DASK_ADDRESS / "
    "MMFM_RAY_ADDRESS names)."))]


def use_workspace(workspace: Path) -> Path:
    """Point Prefect's home at the workspace's state folder (before Prefect is imported) and return the root."""
    import os

    root = workspace.resolve()
    if not (root / ".dvc").is_dir():
        raise StageError(f"{root} is not an mmfm workspace: run `mmfm init {workspace}` first")
    os.environ.setdefault("PREFECT_HOME", str(root / ".mmfm" / "prefect"))
    return root


class _OneLine:
    """Logging filter: Prefect logs a failed run's traceback; the CLI shows one line instead (unless --debug)."""

    def filter(self, record) -> bool:
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        return True


def quiet_tracebacks(debug: bool) -> None:
    import logging

    if debug:
        return
    for name in ("prefect", "prefect.flow_runs", "prefect.task_runs", "prefect.engine"):
        for handler in logging.getLogger(name).handlers:
            handler.addFilter(_OneLine())


def _run_ingest(flow_name: str, as_json: bool, runner: str, debug: bool = False, **params) -> None:
    from tasks.deid import key_from_settings

    key_from_settings()  # refuse before starting anything when MMFM_PSEUDONYM_KEY is missing or short
    from flows import ingest

    quiet_tracebacks(debug)

    flow_fn = getattr(ingest, flow_name).with_options(task_runner=ingest._task_runner(runner))
    summary = flow_fn(**params)
    emit(summary, as_json, _render_ingest)


def _render_ingest(s: dict) -> None:
    con = _console(stderr=False)
    if s.get("message"):
        con.print(s["message"])
    con.print(f"{s['source']} from {s['site']}: received {s['received']}, ingested {s['ingested']}, "
              f"quarantined {s['quarantined']}")
    for rule, n in s.get("quarantine_reasons", {}).items():
        con.print(f"  quarantined under {rule}: {n}")
    for table, n in s.get("tables", {}).items():
        con.print(f"  staged {table}: {n} rows")
    if s.get("quarantine_file"):
        con.print(f"quarantine records: {s['quarantine_file']}; de-identification report: {s['deid_report']}")


@ingest_app.command("dicom")
@command
def ingest_dicom_cmd(
    source: Annotated[Path, typer.Argument(help="DICOM file, folder (recursive) or zip archive.")],
    site: SiteOpt, runner: RunnerOpt = "threads", workspace: WorkspaceOpt = Path("."), as_json: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Ingest DICOM files: de-identify (PS3.15 basic profile), decode, resample, write tensor shards."""
    root = use_workspace(workspace)
    _run_ingest("ingest_dicom", as_json, runner, debug=debug, source=source.resolve(), workspace=root, site=site)


@ingest_app.command("pacs")
@command
def ingest_pacs_cmd(
    url: Annotated[str, typer.Option("--url", help="DICOMweb base URL, e.g. http://127.0.0.1:8042/dicom-web")],
    site: SiteOpt, user: Annotated[str | None, typer.Option(envvar="MMFM_PACS_USER")] = None,
    password: Annotated[str | None, typer.Option(envvar="MMFM_PACS_PASSWORD")] = None,
    runner: RunnerOpt = "threads", workspace: WorkspaceOpt = Path("."), as_json: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Fetch new studies from a PACS over DICOMweb (QIDO-RS, WADO-RS) and ingest them."""
    root = use_workspace(workspace)
    auth = (user, password) if user else None
    _run_ingest("ingest_pacs", as_json, runner, debug=debug, url=url, workspace=root, site=site, auth=auth)


@ingest_app.command("fhir")
@command
def ingest_fhir_cmd(
    source: Annotated[Path, typer.Argument(help="FHIR bulk-export folder (manifest + NDJSON) or Bundle JSON.")],
    site: SiteOpt, workspace: WorkspaceOpt = Path("."), as_json: JsonOpt = False, debug: DebugOpt = False,
) -> None:
    """Ingest a FHIR R4 bulk export: reconcile the manifest, check, de-identify, flatten to staged tables."""
    root = use_workspace(workspace)
    _run_ingest("ingest_fhir_flow", as_json, "threads", debug=debug, source=source.resolve(), workspace=root,
                site=site)


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
    _run_ingest("ingest_omics_flow", as_json, "threads", debug=debug, source=source.resolve(), workspace=root,
                site=site, sample_sheet=sample_sheet.resolve() if sample_sheet else None)


def _run_flow(module: str, fn: str, as_json: bool, debug: bool, render: Callable[[dict], None], **params) -> dict:
    import importlib

    quiet_tracebacks(debug)
    summary = getattr(importlib.import_module(module), fn)(**params)
    emit(summary, as_json, render)
    return summary


def _render_validate(s: dict) -> None:
    con = _console(stderr=False)
    for name, t in s["tables"].items():
        con.print(f"{name}: checked {t['rows_checked']}, passed {t['rows_passed']}, quarantined "
                  f"{t['rows_quarantined']}, failed rules {t['failures'] or 'none'} "
                  f"(contract {t['contract_version']})")
    con.print(f"curated: {s.get('curated')}; GX results and Data Docs in {s['gx_results']}")


@app.command()
@command
def validate(workspace: WorkspaceOpt = Path("."), as_json: JsonOpt = False, debug: DebugOpt = False) -> None:
    """Run every data contract on the staged tables; publish what passes to data/curated (exit 1 if a rule blocks)."""
    root = use_workspace(workspace)
    from flows.validate import ValidationBlocked

    try:
        _run_flow("flows.validate", "validate", as_json, debug, _render_validate, workspace=root)
    except ValidationBlocked as exc:
        raise StageError(f"validation blocked: {exc}") from None


@app.command()
@command
def version(workspace: WorkspaceOpt = Path("."), as_json: JsonOpt = False, debug: DebugOpt = False) -> None:
    """Publish the validated curated snapshot: dvc commit + dvc push + git commit, all or nothing."""
    root = use_workspace(workspace)
    _run_flow("flows.version", "version", as_json, debug,
              lambda r: _console(stderr=False).print(
                  f"dataset version {r['dataset_version']} "
                  + ("already published (nothing new)" if r.get("already_published") else "published")),
              workspace=root)


@app.command()
@command
def pipeline(
    force: Annotated[bool, typer.Option(help="Run every stage even if DVC says it is up to date.")] = False,
    wait: WaitOpt = None,
    workspace: WorkspaceOpt = Path("."), as_json: JsonOpt = False, debug: DebugOpt = False,
) -> None:
    """Run the out-of-date stages in order (DVC decides, Prefect runs); skip the current ones."""
    root = use_workspace(workspace)
    lock_wait(wait)
    def render(r: dict) -> None:
        recorded = f"; recorded (finished before an interruption): {', '.join(r['recorded'])}" if r["recorded"] \
            else ""
        _console(stderr=False).print(f"ran: {', '.join(r['ran']) or 'nothing'}; skipped (up to date): "
                                     f"{', '.join(r['skipped']) or 'nothing'}{recorded}; {r['seconds']} s")

    _run_flow("flows.pipeline", "pipeline", as_json, debug, render, workspace=root, force=force)


@app.command()
@command
def lineage(
    uri: Annotated[str, typer.Argument(help="A workspace path, dataset version, run id or ledger event id.")],
    workspace: WorkspaceOpt = Path("."), as_json: JsonOpt = False, debug: DebugOpt = False,
) -> None:
    """Upstream and downstream of a file, dataset, run or event, from the lineage ledger."""
    from tasks.lineage import Ledger
    from tasks.lineage import lineage as walk

    root = use_workspace(workspace)
    ledger = Ledger.of_workspace(root)
    # a dataset version (or its git rev) names the `version` event that published it
    published = [e for e in ledger.events() if e.stage == "version" and uri and (
        (e.facts or {}).get("dataset_version") == uri or str((e.facts or {}).get("git_rev", "")).startswith(uri))]
    if published:
        uri = published[-1].event_id
    try:
        graph = walk(ledger, uri, root=root)
    except LookupError as exc:
        raise StageError(str(exc)) from None
    emit(graph, as_json, lambda g: _console(stderr=False).print(g["text"], highlight=False, markup=False))


audit_app = typer.Typer(help="Governance: verify the lineage chain and the artifacts it names.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")


@audit_app.command("export")
@command
def audit_export(
    out: Annotated[Path, typer.Option("--out", help="NDJSON file of OpenLineage RunEvents, one per ledger event.")],
    workspace: WorkspaceOpt = Path("."), as_json: JsonOpt = False, debug: DebugOpt = False,
) -> None:
    """Export the lineage ledger as OpenLineage RunEvents; also POST them to OPENLINEAGE_URL when it is set."""
    import os

    from tasks.lineage import Ledger
    from tasks.openlineage import export_openlineage, send_openlineage

    root = use_workspace(workspace)
    ledger = Ledger.of_workspace(root)
    result = {"file": str(out), "events": export_openlineage(ledger, out), "sent": 0}
    if os.environ.get("OPENLINEAGE_URL"):
        result["sent"] = send_openlineage(ledger.events(), os.environ["OPENLINEAGE_URL"])
    emit(result, as_json, lambda r: _console(stderr=False).print(f"{r['events']} OpenLineage events written to "
                                                                 f"{r['file']}; {r['sent']} sent"))


@audit_app.command("verify")
@command
def audit_verify(workspace: WorkspaceOpt = Path("."), as_json: JsonOpt = False, debug: DebugOpt = False) -> None:
    """Re-hash the ledger's chain and every artifact it names; exit 1 on any tampering."""
    from tasks.lineage import Ledger, verify

    root = use_workspace(workspace)
    report = verify(Ledger.of_workspace(root), root)
    emit(report.to_dict(), as_json, lambda _: _console(stderr=False).print(report.text(), highlight=False,
                                                                          markup=False))
    if not report.ok:
        raise typer.Exit(1)


if __name__ != "__main__":  # `python -m flows.cli` runs the imported module's app below, with every command
    from flows import cli_models, cli_registry  # noqa: E402,F401 - register the model and registry commands


def main() -> None:  # pragma: no cover - console-script shim
    app()


if __name__ == "__main__":  # pragma: no cover
    from flows.cli import main as registered_main

    registered_main()
