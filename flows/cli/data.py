"""The data commands of `mmfm`: init, synth, demo, validate, version, pipeline and lineage."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from flows.cli.common import (
    DebugOpt,
    JsonOpt,
    StageError,
    WaitOpt,
    WorkspaceOpt,
    app,
    command,
    console,
    emit,
    lock_wait,
    progress_bar,
    run_flow,
    say,
    use_workspace,
)


@app.command()
@command
def init(
    directory: Annotated[Path, typer.Argument(help="Directory of the new workspace.")],
    as_json: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Create a workspace: git + DVC repository, params.yaml, data layout and a local DVC remote."""
    from flows.pipeline import render_dvc_yaml
    from tasks.settings import get_settings
    from tasks.workspace import init_workspace

    ws = init_workspace(directory, dvc_yaml=render_dvc_yaml())
    remote = get_settings(ws.root).dvc_remote_url or ".mmfm/dvc-remote"
    result = {"workspace": str(ws.root), "dvc_remote": remote, "params": str(ws.params_file)}
    emit(result, as_json, lambda r: say(f"workspace ready: {r['workspace']}"))


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
    emit(summary, as_json, render_synth)


def render_synth(s: dict) -> None:
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
    say(table)
    say(f"written to {s['out']} in {s['seconds']} s; ground truth in {s['truth']}")


@app.command()
@command
def demo(
    # 1,000: a 200-patient test split, enough for the gate's paired CIs to tell a model from its baselines
    patients: Annotated[int, typer.Option(help="Cohort size.")] = 1000,
    workspace: WorkspaceOpt = Path("demo-workspace"),
    wait: WaitOpt = None,
    as_json: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Run every stage that exists on a generated cohort with embedded defaults; print where to look next."""
    lock_wait(wait)
    if not debug:  # the demo narrates its stages itself; Prefect's per-task INFO lines would drown them
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    from flows.demo import DEMO_STAGES, run_demo

    con = console()
    bar, task = progress_bar(len(DEMO_STAGES), "demo")
    cohort = bar.add_task("synth: patients", total=patients)

    def step(name: str) -> None:
        done = DEMO_STAGES.index(name)
        bar.update(task, completed=done, description=f"demo: {name} ({done + 1}/{len(DEMO_STAGES)})")

    with bar:
        result = run_demo(workspace, patients, progress=lambda n: bar.update(cohort, completed=n),
                          say=lambda line: con.print(line, highlight=False), step=step)
        bar.update(task, completed=len(DEMO_STAGES))
    emit(result, as_json, render_demo)


def render_demo(r: dict) -> None:
    from rich.table import Table

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
    say(table)
    ing = r["ingest"]
    say(f"ingest: received {ing['received']}, ingested {ing['ingested']}, quarantined {ing['quarantined']} "
        f"({', '.join(f'{k}: {v}' for k, v in sorted(ing['quarantine_reasons'].items()))})")
    if r["pseudonym_key"]["created"]:
        say(f"created the demo pseudonym key at {r['pseudonym_key']['path']} (mode 0600; derived from the synthetic "
            "cohort's seed, so every fresh demo gets the same split: synthetic data only); set MMFM_PSEUDONYM_KEY "
            "for real extracts")
    if r.get("evaluation"):
        say(_evaluation_table(r["evaluation"]))
    gov = r.get("governance")
    if gov:
        _render_governance(gov)
    say(f"stages run: {', '.join(r['stages'])} in {r['seconds']} s")
    for label, path in r["where"].items():
        say(f"  {label}: {path}")


def _evaluation_table(ev: dict):
    from rich.table import Table

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
    return table


def _render_governance(gov: dict) -> None:
    promotion = gov["promotion"]
    say(f"registry: {gov['registered']}; promotion to champion: {promotion['decision']}"
        + (f" ({plain(promotion['reasons'])})" if promotion.get("reasons") else ""))
    mon = gov.get("monitoring")
    if mon:
        sites = ", ".join(mon["flagged_sites"]) or "no site"
        say(f"monitoring the shifted extract with {mon['model']}: {mon['status']} at {sites}; retraining "
            f"trigger: {mon['retrain'] or 'not needed'}")
        if mon.get("findings"):
            say(f"  what moved: {plain(mon['findings'])}")
    audit = gov["audit"]
    say(f"audit report: {'complete' if audit['complete'] else 'GAPS: ' + '; '.join(audit['gaps'])}")


def plain(value: object) -> str:
    """A list or mapping as words for a person (`a: 1; b: 2`), never a Python repr."""
    if isinstance(value, dict):
        return "; ".join(f"{k}: {plain(v)}" for k, v in value.items())
    if isinstance(value, list | tuple | set):
        return ", ".join(plain(v) for v in value)
    return str(value)


def render_validate(s: dict) -> None:
    from rich.table import Table

    table = Table(title="data contracts on the staged tables")
    for col, justify in (("table", "left"), ("contract", "left"), ("checked", "right"), ("passed", "right"),
                         ("quarantined", "right"), ("failed rules", "left")):
        table.add_column(col, justify=justify)
    for name, t in s["tables"].items():
        table.add_row(name, str(t["contract_version"]), str(t["rows_checked"]), str(t["rows_passed"]),
                      str(t["rows_quarantined"]), plain(t["failures"]) or "none")
    say(table)
    curated = s.get("curated")
    if isinstance(curated, dict):
        rows = Table(title="published to data/curated")
        rows.add_column("table")
        rows.add_column("rows", justify="right")
        for name, n in curated.items():
            rows.add_row(name, str(n))
        say(rows)
    elif curated is not None:
        say(f"curated: {plain(curated)}")
    say(f"GX results and Data Docs in {s['gx_results']}")


@app.command()
@command
def validate(workspace: WorkspaceOpt = Path("."), as_json: JsonOpt = False, debug: DebugOpt = False) -> None:
    """Run every data contract on the staged tables; publish what passes to data/curated (exit 1 if a rule blocks)."""
    root = use_workspace(workspace)
    from tasks.validation.publish import ValidationBlocked

    try:
        run_flow("flows.validate", "validate", as_json, debug, render_validate, workspace=root)
    except ValidationBlocked as exc:
        raise StageError(f"validation blocked: {exc}") from None


@app.command()
@command
def version(workspace: WorkspaceOpt = Path("."), as_json: JsonOpt = False, debug: DebugOpt = False) -> None:
    """Publish the validated curated snapshot: dvc commit + dvc push + git commit, all or nothing."""
    root = use_workspace(workspace)
    run_flow("flows.version", "version", as_json, debug, lambda r: say(
        f"dataset version {r['dataset_version']} "
        + ("already published (nothing new)" if r.get("already_published") else "published")), workspace=root)


def render_pipeline(r: dict) -> None:
    from rich.table import Table

    outcome = {name: "ran" for name in r["ran"]} | {name: "up to date (skipped)" for name in r["skipped"]}
    outcome |= {name: "recorded (finished before an interruption)" for name in r["recorded"]}
    table = Table(title=f"pipeline: {r['seconds']} s")
    table.add_column("stage")
    table.add_column("outcome")
    for name, what in outcome.items():
        table.add_row(name, what)
    say(table if outcome else f"no stage to run; {r['seconds']} s")


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
    if not force:
        from flows.cli.fastpath import nothing_to_do

        done = nothing_to_do(root)  # every stage current: answered by DVC alone, no Prefect run
        if done is not None:
            emit(done, as_json, render_pipeline)
            return
    run_flow("flows.pipeline", "pipeline", as_json, debug, render_pipeline, workspace=root, force=force)


@app.command()
@command
def lineage(
    uri: Annotated[str, typer.Argument(help="A workspace path, dataset version, run id or ledger event id; a model "
                                            "version (NAME/VERSION, NAME@alias, models:/NAME/VERSION, "
                                            "models:/NAME@alias); or a raw extract file or folder as received "
                                            "(matched by sha256 to what ingest landed).")],
    workspace: WorkspaceOpt = Path("."), as_json: JsonOpt = False, debug: DebugOpt = False,
) -> None:
    """Upstream and downstream of a file, dataset, model version, run or event, from the lineage ledger (a model
    version's downstream holds its approvals, refusals and rollbacks, with approver and reason)."""
    from tasks.lineage import Ledger
    from tasks.lineage import lineage as walk
    from tasks.lineage.graph import extract_lineage
    from tasks.registry.gated import split_ref
    from tasks.versioning.dataset import find

    root = use_workspace(workspace)
    ledger = Ledger.of_workspace(root)
    published = find(root, uri)  # a dataset version (or its git rev) names the `version` event that published it
    on_disk = next((p for p in (Path(uri), root / uri) if p.exists()), None)
    query, note = published.event_id if published else uri, None
    try:
        name, version, alias = split_ref(uri)
    except ValueError:
        name = None
    if name is not None and published is None and on_disk is None:
        version, note = _model_version(root, ledger, name, version, alias)
        query = f"models:/{name}/{version}"
    try:
        graph = walk(ledger, query, root=root)
    except LookupError as exc:
        if on_disk is None or published is not None:
            raise StageError(str(exc)) from None
        try:  # not a path the ledger names: a raw extract, found by the sha256s ingest landed
            graph = extract_lineage(ledger, root, on_disk)
        except LookupError as extract_exc:
            raise StageError(str(extract_exc)) from None
    if note:
        graph = {**graph, "alias": note, "text": f"{note['text']}\n{graph['text']}"}
    emit(graph, as_json, lambda g: say(g["text"], highlight=False, markup=False))


def _model_version(root: Path, ledger, name: str, version: str | None, alias: str | None) -> tuple[str, dict | None]:
    """NAME@alias -> (the version the registry's alias points to, a note comparing it with the ledger)."""
    if alias is None:
        return str(version), None
    import mlflow

    from tasks import tracking
    from tasks.registry.gated import ledger_aliases, ungated_message

    tracking.configure(root)
    try:
        current = str(mlflow.MlflowClient().get_model_version_by_alias(name, alias).version)
    except mlflow.exceptions.MlflowException as exc:
        raise StageError(f"{name}@{alias}: MLflow refused: {str(exc).splitlines()[0][:300]}") from None
    said = ledger_aliases(ledger.events()).get((name, alias))
    gated = said is not None and said.gated and said.version == current
    text = (f"{name}@{alias} -> version {current} (set through the gate: {said.describe()})" if gated else
            f"{name}@{alias} -> version {current}; WARNING: {ungated_message(name, alias, current, said)}")
    return current, {"name": name, "alias": alias, "version": current, "gated": gated, "text": text}
