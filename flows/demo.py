"""`mmfm demo`: every stage that exists, end to end, on a generated cohort and the embedded defaults.

synth -> the pipeline's data stages (ingest of every site, validate) -> version -> the model stages (pretrain,
finetune, evaluate) -> register -> promote (a demo approver, through the gate) -> monitor (a generated extract with a
shifted site; the champion, or the registered version itself when the gate refused it) -> audit report. One
workspace lock is held throughout. The demo makes a pseudonym key (derived from the cohort's seed) in the workspace's
.mmfm/ (mode 0600) when MMFM_PSEUDONYM_KEY is not set, and says so; real ingest refuses without one.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import mlflow

from tasks.ingest.state import ensure_demo_key
from tasks.registry.audit_render import write_audit
from tasks.registry.gate import EXCEPTABLE
from tasks.synth.demo import cohort_is_current, evaluation_headline, synth_config
from tasks.synth.generate import SynthConfig, generate
from tasks.synth.truth import bayes_report, load_truth
from tasks.tracking import dataset_facts
from tasks.versioning.publish import head_unrecorded, unpublished
from tasks.workspace import init_workspace
from tasks.workspace_lock import holds_workspace_lock


def _current_version(root: Path) -> str | None:
    """The dataset version of the curated data now in the workspace (published by an earlier run)."""
    try:
        return dataset_facts(root)["dataset_version"]
    except RuntimeError:  # nothing validated
        return None


def _stages(root: Path, names: tuple[str, ...], step: Callable[[str], None]) -> dict:
    """`pipeline` one stage at a time (DVC still decides whether each runs), so progress can follow the stages."""
    from flows.pipeline import pipeline  # lazy: the flows load Prefect, only once the demo runs (see run_demo)

    merged: dict = {"ran": [], "skipped": [], "recorded": [], "stages": {}}
    for name in names:
        step(name)
        done = pipeline(workspace=root, stages=[name])
        for key in ("ran", "skipped", "recorded"):
            merged[key] += done[key]
        merged["stages"].update(done["stages"])
    return merged


def _labels(done: dict, names: tuple[str, ...]) -> list[str]:
    """How the summary names each stage: run now, finished by an interrupted run (DVC recorded it now), or current."""
    return [name if name in done["ran"] else f"{name} (finished before an interruption)"
            if name in done["recorded"] else f"{name} (up to date)" for name in names]


DEMO_STAGES = ("synth", "ingest", "validate", "version", "pretrain", "finetune", "evaluate", "register", "promote",
               "monitor", "audit")
SHIFTED_SITE = "site-b"


def _govern(ws, cfg: SynthConfig, patients: int, say: Callable[[str], None], step: Callable[[str], None]) -> dict:
    """register -> promote (a demo approver, through the gate) -> monitor a shifted extract -> audit report."""
    # lazy: these load Prefect (the flows; tasks.registry.promotion through tasks.stage.run), only once the demo
    # runs, after `mmfm demo` has set Prefect's logging level (see run_demo)
    from flows.monitor import monitor_flow
    from flows.promote import promote_flow
    from flows.register import register_flow
    from tasks.registry.promotion import PromotionRefused, authenticated_user, settle_promotion

    step("register")
    reg = register_flow(workspace=ws.root)
    model = f"{reg['name']}/{reg['version']}"
    say(f"registered {model} ({'already registered' if reg.get('already_registered') else 'new version'})")
    out: dict = {"registered": model}
    try:
        current = str(mlflow.MlflowClient().get_model_version_by_alias(reg["name"], "champion").version)
    except mlflow.exceptions.MlflowException:
        current = None
    step("promote")
    if current == str(reg["version"]):
        settle_promotion(mlflow.MlflowClient(), reg["name"], "champion")  # a marker a kill left after the alias
        out["promotion"] = {"decision": "already champion"}
    else:
        try:
            # where MLflow authenticates users the signed-in user approves (naming anyone else is refused)
            approver = None if authenticated_user(mlflow.get_tracking_uri()) else "demo-approver"
            promo = promote_flow(workspace=ws.root, model=model, alias="champion", approver=approver,
                                 reason="mmfm demo: the workspace's model after evaluation")
            out["promotion"] = {k: promo[k] for k in ("decision", "approver", "reason")}
            checks = promo["checks"]
        except PromotionRefused as exc:
            out["promotion"] = {"decision": "refused", "reasons": str(exc)}
            checks = exc.checks
        out["promotion"]["rules"] = [{k: c.get(k) for k in ("rule", "passed", "excepted", "reason", "detail")}
                                     for c in checks]
    say(f"promotion to champion: {out['promotion']['decision']}")
    for rule in out["promotion"].get("rules", []):  # the verdict's reasons, exceptions and the evidence rules
        if not rule["passed"]:
            say(f"  refused by {rule['rule']}: {rule['detail']}")
        elif rule["excepted"] or rule["rule"] in EXCEPTABLE:
            say(f"  {rule['rule']}: {rule['detail']}")
    step("monitor")
    shifted = ws.root / "incoming" / f"shifted-{SHIFTED_SITE}"
    if not (shifted / "truth").exists():
        size = ws.params().get("synth", {}).get("shifted_patients") or max(90, patients // 2)
        generate(shifted, SynthConfig(patients=size, sites=cfg.sites, seed=cfg.seed + 1,
                                      missing_rate=cfg.missing_rate, shift=SHIFTED_SITE))
    # the champion is monitored; when the gate refused the version, the version itself is (shadow monitoring: the
    # drift of the data it would serve is worth knowing before anyone overrides the gate)
    promoted = out["promotion"]["decision"] in ("approved", "already champion")
    watched = f"{reg['name']}@champion" if promoted else model
    mon = monitor_flow(workspace=ws.root, source=shifted, model=watched)
    out["monitoring"] = {"model": watched, "extract": str(shifted), "status": mon["status"],
                         "flagged_sites": mon["flagged_sites"], "findings": mon["findings"],
                         "retrain": (mon.get("retrain") or {}).get("status"), "report": mon["report"]}
    say(f"monitoring {shifted.name} with {watched}: {mon['status']}"
        + (f" ({mon['findings']})" if mon["findings"] else ""))
    step("audit")
    audited = watched
    audit = write_audit(ws.root, audited, ws.root / "data" / "audit")
    out["audit"] = {"html": str(audit["html"]), "complete": audit["complete"], "gaps": audit["gaps"]}
    out["model_card"] = f"MLflow: models:/{model} artifacts card/model_card.html"
    return out


@holds_workspace_lock("mmfm demo")  # one hold for the whole demo; pipeline and version re-enter it
def run_demo(workspace: Path, patients: int, progress: Callable[[int], None] | None = None,
             say: Callable[[str], None] = lambda _: None, step: Callable[[str], None] = lambda _: None) -> dict:
    """The demo; `say` narrates, `step(name)` is called as each of DEMO_STAGES starts (the CLI's progress bar)."""
    t0 = time.perf_counter()
    # lazy: the flows (hence Prefect) load only when the demo runs, after `mmfm demo` has set Prefect's logging level
    from flows.pipeline import render_dvc_yaml

    ws = init_workspace(workspace, dvc_yaml=render_dvc_yaml())
    os.environ.setdefault("PREFECT_HOME", str(ws.state / "prefect"))
    cfg = synth_config(ws.params(), patients)
    key_created, key_path = ensure_demo_key(ws.state, cfg.seed)
    cohort = ws.extracts / f"cohort-seed{cfg.seed}"
    stages = []
    step("synth")
    if cohort_is_current(cohort, cfg):
        stages.append("synth (reused: same parameters)")
        if progress is not None:
            progress(patients)
    else:
        shutil.rmtree(cohort, ignore_errors=True)
        generate(cohort, cfg, progress=progress)
        stages.append("synth")
    from flows.pipeline import DATA_STAGES, MODEL_STAGES  # lazy: Prefect, as above
    from flows.version import version

    ran = _stages(ws.root, DATA_STAGES, step)
    ingest = ran["stages"].get("ingest") or {"received": 0, "ingested": 0, "quarantined": 0,
                                              "quarantine_reasons": {}}
    say(f"data stages ran: {', '.join(ran['ran']) or 'nothing'}; up to date: {', '.join(ran['skipped']) or 'none'}")
    stages += _labels(ran, DATA_STAGES)
    validated = ran["stages"].get("validate")
    step("version")
    unfinished = ran["ran"] or ran["recorded"] or unpublished(ws.root, DATA_STAGES) or head_unrecorded(ws.root)
    published = version(workspace=ws.root) if unfinished else None
    if published:
        stages.append("version")
        say(f"dataset version {published['dataset_version']} published to the DVC remote")
    trained = _stages(ws.root, MODEL_STAGES, step)
    say(f"model stages ran: {', '.join(trained['ran']) or 'nothing'}; "
        f"up to date: {', '.join(trained['skipped']) or 'none'}")
    stages += _labels(trained, MODEL_STAGES)
    evaluation = evaluation_headline(ws.models / "evaluation" / "evaluation.json")
    governance = _govern(ws, cfg, patients, say, step)
    refused = governance["promotion"]["decision"] == "refused"
    stages += ["register", "promote (refused by the gate)" if refused else "promote",
               *(["monitor"] if "monitoring" in governance else [])]
    return {
        "workspace": str(ws.root),
        "stages": stages,
        "cohort": str(cohort),
        "pseudonym_key": {"created": key_created, "path": str(key_path)},
        "ingest": ingest,
        "validate": {k: validated[k] for k in ("quarantined", "quarantine_reasons", "contract_versions")}
        if validated else None,
        "dataset_version": published["dataset_version"] if published else _current_version(ws.root),
        "bayes": bayes_report(load_truth(cohort)),
        "evaluation": evaluation,
        "governance": governance,
        "where": {
            "extracts (one folder per site: dicom/, fhir/, omics/)": str(cohort),
            "ground truth (never an input)": str(cohort / "truth" / "patients.tsv"),
            "staged tables and image shards": str(ws.staged),
            "quarantine records (parquet, one file per run)": str(ws.quarantine),
            "de-identification reports, validation report, GX Data Docs": str(ws.reports),
            "curated tables (DVC-versioned)": str(ws.curated),
            "backbone, adapters, evaluation (DVC-versioned)": str(ws.models),
            "MLflow UI": f"mlflow ui --backend-store-uri sqlite:///{ws.state / 'mlflow.db'}  (then http://127.0.0.1:5000)",
            "model card": governance["model_card"],
            "drift report": (governance.get("monitoring") or {}).get("report"),
            "audit report": governance["audit"]["html"],
            "lineage": f"mmfm lineage data/curated -w {ws.root}; mmfm audit verify -w {ws.root}",
            "Prefect UI": f"PREFECT_HOME={ws.state / 'prefect'} prefect server start  (then http://127.0.0.1:4200)",
            "stage parameters": str(ws.params_file),
        },
        "seconds": round(time.perf_counter() - t0, 1),
    }
