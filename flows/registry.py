"""`mmfm register`, `mmfm promote`, `mmfm rollback`: the model registry with a promotion gate (MLflow).

Open-source MLflow has neither approvals nor immutable versions, so mmfm adds both. `register` logs the workspace's
backbone + adapters as one pyfunc (model card, evaluation and plots beside it), registers a version, stores the
facts the gate needs and the sha256 of every artifact as version tags, and gives it the alias `challenger`.
`promote` gathers the candidate's facts (re-hashing and PHI-scanning its artifacts as downloaded from the
registry), judges them with tasks.registry.gate, and records the approval or the refusal (with every reason) in
the version's tags and in the lineage ledger; only an approval moves the alias. `rollback` gives the alias back to
the version that held it before. `load_verified` is the only way mmfm loads a registered model: a tampered
artifact refuses to load.

Nothing half-registered: a registration is several calls to the tracking server (log the run, create the version,
about twenty tags, a ledger event, the alias), and the server may die between any two. The version is therefore
born with `mmfm.registration=incomplete` (set in the same request that creates it) and gets `complete` as the very
last write. `download_verified` (hence the gate, predict and monitor) refuses an incomplete version; a rerun of
`register` on the same files finds it by its content hash and completes it (same version number, the ledger event
recorded once), instead of registering a second copy.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from prefect import flow, get_run_logger

from flows.pretrain import EXPERIMENT, run_key
from tasks.run_journal import RunJournal
from tasks.workspace import Workspace

DEFAULT_NAME = "mmfm-multimodal"
PIP = ["torch==2.13.0", "transformers==5.24.0", "peft==0.21.2", "monai==1.6.1", "mlflow==3.17.2", "pandas==2.3.3",
       "numpy==2.4.6", "polars==2.1.0", "safetensors", "tokenizers"]
T = "mmfm."
REGISTRATION = f"{T}registration"  # "incomplete" from the version's creation, "complete" as its last write


class PromotionRefused(RuntimeError):
    """The gate said no; the message lists every reason."""


class TrackingUnreachable(RuntimeError):
    """The tracking server did not answer, after MLflow's own bounded retries; the message names its URI."""


def transport_failure(exc: BaseException) -> BaseException | None:
    """The refused, dropped or timed-out connection behind `exc`, if that is what it is (rather than an answer from
    the server). The whole cause chain is searched: MLflow re-raises one as something else ("Failed to get logged
    model with ID ...")."""
    import requests

    transport = (requests.ConnectionError, requests.Timeout, requests.exceptions.RetryError,
                 requests.exceptions.ChunkedEncodingError)
    chain, seen = [exc], set()
    while chain:
        e = chain.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, transport) or "Max retries exceeded" in str(e):
            return e
        chain += [e.__cause__, e.__context__]
    return None


def unreachable_message(failure: BaseException) -> str:
    """One line naming the tracking URI (without user or password) and how the connection failed."""
    import os
    from urllib.parse import urlsplit

    import mlflow

    uri = urlsplit(mlflow.get_tracking_uri())
    shown = f"{uri.scheme}://{uri.hostname}{f':{uri.port}' if uri.port else ''}{uri.path}"
    text = str(failure).lower()
    reasons = (("error responses", "server errors"), ("refused", "connection refused"), ("timed out", "timed out"),
               ("timeout", "timed out"), ("reset", "connection reset"), ("without response", "connection dropped"))
    why = next((w for k, w in reasons if k in text), "no answer")
    retries = os.environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "7")
    return (f"MLflow tracking server {shown} unreachable ({why}, after {retries} retries with back-off); rerun once "
            "it answers")


def _tracking_errors(fn):
    """A flow body whose MLflow calls fail for want of a server raises TrackingUnreachable, decided here where the
    exception's cause chain is still whole."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            failure = transport_failure(exc)
            if failure is None:
                raise
            raise TrackingUnreachable(unreachable_message(failure)) from exc

    return wrapper


def _card(ws: Workspace, evaluation: dict, meta: dict, name: str) -> dict:
    diag = evaluation["tasks"].get("diagnosis", {})
    base = evaluation.get("baselines") or {}
    return {
        "name": name, "version": "(assigned at registration)",
        "intended_use": "Research decision support for adults presenting with chest symptoms: differential "
                        "diagnosis (none / pneumonia / heart failure / pulmonary embolism), one-year mortality risk "
                        "and survival ranking from whatever of CT, radiograph, labs, notes and omics a patient has.",
        "out_of_scope": "Autonomous diagnosis; patients under 18; sites, scanners or populations unlike the "
                        "training data without monitoring (mmfm monitor).",
        "dataset_version": evaluation["dataset_version"], "contract_versions": evaluation.get("contract_versions"),
        "code_version": meta.get("code_version"),
        "training_data": {k: v for k, v in (meta.get("training_data") or {}).items() if isinstance(v, dict)},
        "metrics": diag.get("metrics"),
        "missing_modality": diag.get("without_modality"),
        "subgroups": diag.get("subgroups"),
        "baselines": {"late_fusion": (base.get("late_fusion") or {}).get("metrics"),
                      "single_modality": {m: r.get("single") for m, r in (base.get("single_modality") or {}).items()},
                      "bayes": (base.get("bayes") or {}).get("metrics")},
        "limitations": ["Trained and evaluated on the dataset version above only; subgroup estimates on small "
                        "groups have wide intervals.",
                        "Attention shares describe what the fusion read, not causal importance.",
                        "Synthetic cohorts (mmfm synth) carry no clinical validity."],
        "lineage": {"evaluation_run_id": evaluation.get("mlflow_run_id"),
                    "pretrain_run_id": meta.get("mlflow_run_id")},
        "plots": diag.get("files", []),
    }


def _stage_artifacts(ws: Workspace, staging: Path, name: str) -> dict:
    """bundle/ (backbone + adapters), evaluation/ and card/ in one folder: what the registry will hold."""
    from tasks.registry.model_card import render_model_card
    from tasks.training.bundle import read_meta

    evaluation = json.loads((ws.models / "evaluation" / "evaluation.json").read_text())
    shutil.copytree(ws.models / "backbone", staging / "bundle" / "backbone")
    shutil.copytree(ws.models / "finetuned", staging / "bundle" / "finetuned")
    shutil.copytree(ws.models / "evaluation", staging / "evaluation")
    if (ws.reports / "validation.json").exists():  # the contract results of the data it was trained on, hashed too
        (staging / "governance").mkdir()
        shutil.copy2(ws.reports / "validation.json", staging / "governance" / "validation.json")
    markdown, html = render_model_card(_card(ws, evaluation, read_meta(ws.models / "backbone"), name))
    (staging / "card").mkdir()
    (staging / "card" / "model_card.md").write_text(markdown)
    (staging / "card" / "model_card.html").write_text(html)
    return evaluation


def input_example(shapes_from) -> pd.DataFrame:  # noqa: F821 - pandas is imported lazily
    """Two records with the real inputs' shapes and no patient's values: a registered model ships no patient data
    (a de-identified note still carries free text and shifted dates). Blank images, one lab, a neutral sentence."""
    import pandas as pd
    import torch

    from tasks.registry.records import COLUMNS, records_from_split
    from tasks.training.data import SplitData

    first = shapes_from.take([0])
    blank = {k: torch.zeros_like(v) for k, v in first.tensors.items() if k in ("image_3d", "image_2d")}
    mask = torch.zeros_like(first.tensors["mask"])
    for i, name in enumerate(("image_3d", "image_2d")):
        mask[:, i] = name in blank
    images = records_from_split(SplitData({**blank, "mask": mask}, {"patient_id": ["example-2"]}))
    rows = [{"patient_id": "example-1", "image_3d": None, "image_2d": None, "labs": "[[0, 12.5, 0.0]]",
             "notes": "Cough and fever for three days.", "omics": None},
            {"patient_id": "example-2", "image_3d": images["image_3d"][0], "image_2d": images["image_2d"][0],
             "labs": None, "notes": None, "omics": None}]
    return pd.DataFrame(rows, columns=list(COLUMNS))


def _contracts_passed(ws: Workspace) -> bool:
    report = ws.reports / "validation.json"
    if not report.exists():
        return False
    data = json.loads(report.read_text())
    return data.get("blocked") is False  # a blocked validation publishes nothing; no report = unknown


def download_verified(uri: str, dst: Path) -> Path:
    """Download a registered version's artifacts and check every file against its sha256 tags."""
    import mlflow

    from tasks.registry.integrity import IntegrityError, manifest_from_tags, verify_tree

    client = mlflow.MlflowClient()
    name, version = _parse(uri, client)
    tags = client.get_model_version(name, version).tags
    if tags.get(REGISTRATION) == "incomplete":
        raise IntegrityError(f"{name}/{version}: registration incomplete (its register run failed part-way); "
                             "rerun `mmfm register` to complete it")
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{version}", dst_path=str(dst)))
    verify_tree(local, manifest_from_tags(tags))
    return local


def load_verified(uri: str, scratch: Path):
    """The pyfunc of `models:/NAME@alias` or NAME/VERSION, after its artifacts passed the hash check."""
    import mlflow

    return mlflow.pyfunc.load_model(str(download_verified(uri, scratch)))


def _parse(ref: str, client) -> tuple[str, str]:
    """NAME/VERSION, NAME@alias or models:/... -> (name, version)."""
    ref = ref.removeprefix("models:/")
    if "@" in ref:
        name, alias = ref.split("@", 1)
        return name, client.get_model_version_by_alias(name, alias).version
    if "/" in ref:
        name, version = ref.rsplit("/", 1)
        return name, version
    raise ValueError(f"{ref!r}: name a model version as NAME/VERSION or NAME@alias")


def _registered_with(client, name: str, content: str):
    """(complete, incomplete): the version numbers already registered from exactly these backbone, adapter and
    evaluation files, and the newest one whose registration never finished (see the module docstring)."""
    from mlflow.exceptions import MlflowException

    try:
        versions = client.search_model_versions(f"name='{name}'")
    except MlflowException as exc:  # an unreachable server is an error, not "nothing registered yet"
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None, None
        raise
    same = [v for v in versions if v.tags.get(f"{T}content_sha256") == content]
    done = [v.version for v in same if v.tags.get(REGISTRATION) != "incomplete"]  # no tag: registered before it
    pending = [v for v in same if v.tags.get(REGISTRATION) == "incomplete"]
    return (str(min(done, key=int)) if done else None,
            max(pending, key=lambda v: int(v.version)) if pending else None)


@flow(name="register")
@_tracking_errors
def register_flow(workspace: Path, name: str = DEFAULT_NAME, alias: str = "challenger") -> dict:
    import mlflow
    from mlflow.models import infer_signature

    from tasks import tracking
    from tasks.lineage import record, tree_sha256
    from tasks.registry.integrity import hash_tree, manifest_tags
    from tasks.registry.phi_scan import scan_artifacts
    from tasks.registry.pyfunc import MultimodalPyfunc, load_bundle, score
    from tasks.training.bundle import load_backbone
    from tasks.training.data import load_split

    ws = Workspace(Path(workspace).resolve())
    facts = tracking.dataset_facts(ws.root)
    if not (ws.models / "evaluation" / "evaluation.json").exists():
        raise FileNotFoundError("no evaluation report: run `mmfm evaluate` before registering")
    tracking.configure(ws.root)
    client = mlflow.MlflowClient()
    with tempfile.TemporaryDirectory(dir=ws.state) as tmp:
        staging = Path(tmp) / "model"
        evaluation = _stage_artifacts(ws, staging, name)
        content = tree_sha256(staging)
        existing, pending = _registered_with(client, name, content)
        journal = RunJournal(ws, "register", "register", run_key("register", {"name": name}, content))
        if existing is not None:  # a rerun registers nothing twice
            journal.recover(reuse=False)
            return {"name": name, "version": existing, "alias": alias, "model_uri": f"models:/{name}/{existing}",
                    "dataset_version": facts["dataset_version"], "already_registered": True,
                    "artifacts": None, "phi_findings": None, "mlflow_run_id": None, "lineage_event": None}
        findings = scan_artifacts(staging)
        _, tokenizer, bmeta = load_backbone(ws.models / "backbone")
        tags = {**tracking.run_tags(ws.root, "register", facts),
                f"{T}evaluation_run_id": str(evaluation.get("mlflow_run_id"))}
        if pending is not None:  # an earlier run died after creating the version: complete that one
            journal.recover(reuse=False)
            mv, run_id = pending, pending.run_id
        else:
            if done := journal.recover():  # the model was logged by a run killed before registering it
                model_uri, run_id = done["result"]["model_uri"], done["run_id"]
            else:
                example = input_example(load_split(ws.curated, "test", tokenizer))
                output = score(load_bundle(staging / "bundle"), example)
                with mlflow.start_run(experiment_id=tracking.experiment_id(ws.root, EXPERIMENT),
                                      run_name="register", tags=tags) as run:
                    journal.start(run.info.run_id)
                    info = mlflow.pyfunc.log_model(
                        name="model", python_model=MultimodalPyfunc(),
                        artifacts={name: str(staging / name) for name in ("bundle", "evaluation", "card",
                                                                          "governance") if (staging / name).exists()},
                        signature=infer_signature(example, output), input_example=example, pip_requirements=PIP)
                    mlflow.log_artifact(str(staging / "card" / "model_card.html"), artifact_path="card")
                    journal.finish({"model_uri": info.model_uri})
                model_uri, run_id = info.model_uri, run.info.run_id
            mv = mlflow.register_model(model_uri, name, tags={
                **tags, REGISTRATION: "incomplete", f"{T}content_sha256": content})
        hashes = hash_tree(Path(mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{name}/{mv.version}", dst_path=str(Path(tmp) / "registered"))))
    diag = evaluation["tasks"]["diagnosis"]
    from tasks.evaluation.assess import subgroup_primary

    version_tags = {
        f"{T}evaluated_split": evaluation["split"], f"{T}evaluated_dataset_version": evaluation["dataset_version"],
        f"{T}trained_dataset_version": str(bmeta.get("dataset_version")),
        f"{T}contracts_passed": str(_contracts_passed(ws)).lower(),
        f"{T}metrics": json.dumps({k: v["value"] for k, v in diag["metrics"].items()}),
        f"{T}primary": json.dumps({t: r["metrics"][r["primary_metric"]]["value"]
                                   for t, r in evaluation["tasks"].items()}),
        f"{T}subgroups": json.dumps(subgroup_primary(diag)), f"{T}phi_findings": str(len(findings)),
        f"{T}content_sha256": content,
        **manifest_tags(hashes)}
    for key, value in version_tags.items():
        client.set_model_version_tag(name, mv.version, key, value)
    event = record(ws, "register", f"{name}/{mv.version}", inputs=[ws.models / "backbone", ws.models / "finetuned",
                                                                   ws.models / "evaluation"],
                   params={"name": name, "alias": alias},
                   facts={"model_version": f"{name}/{mv.version}", "mlflow_run_id": run_id,
                          "dataset_version": facts["dataset_version"], "artifacts": len(hashes),
                          "artifact_manifest_sha256": version_tags[f"{T}sha256.manifest"]})
    client.set_model_version_tag(name, mv.version, f"{T}lineage_event", event.event_id)
    client.set_registered_model_alias(name, alias, mv.version)
    client.set_model_version_tag(name, mv.version, REGISTRATION, "complete")  # last: the version is whole
    journal.clear()
    get_run_logger().info("registered %s version %s as %s", name, mv.version, alias)
    return {"name": name, "version": str(mv.version), "alias": alias, "model_uri": f"models:/{name}/{mv.version}",
            "already_registered": False, "completed_earlier_attempt": pending is not None,
            "dataset_version": facts["dataset_version"], "artifacts": len(hashes), "phi_findings": len(findings),
            "mlflow_run_id": run_id, "lineage_event": event.event_id}


def candidate_from(client, name: str, version: str, scratch: Path):
    """The gate's facts about one version, read from its artifacts after they passed the hash check (tags are
    editable by anyone with EDIT; the hashed artifacts are not): evaluation report, backbone meta, contract results;
    plus a PHI scan of everything it ships."""
    from tasks.evaluation.assess import subgroup_primary
    from tasks.registry.gate import Candidate
    from tasks.registry.integrity import IntegrityError
    from tasks.registry.phi_scan import scan_artifacts

    try:
        local = download_verified(f"{name}/{version}", scratch / f"v{version}")
    except IntegrityError:
        return Candidate(name=name, version=str(version), artifact_integrity_ok=False)

    def read(relative: str) -> dict:
        found = sorted(local.rglob(relative))
        return json.loads(found[0].read_text()) if found else {}

    evaluation = read("evaluation/evaluation.json")
    diag = (evaluation.get("tasks") or {}).get("diagnosis") or {}
    validation = read("governance/validation.json")
    metrics = {k: v["value"] for k, v in (diag.get("metrics") or {}).items() if v.get("value") is not None}
    return Candidate(name=name, version=str(version), metrics=metrics,
                     evaluated_split=evaluation.get("split"),
                     evaluated_dataset_version=evaluation.get("dataset_version"),
                     trained_dataset_version=read("bundle/backbone/meta.json").get("dataset_version"),
                     subgroup_metrics=subgroup_primary(diag) if diag else {},
                     contracts_passed=None if not validation else validation.get("blocked") is False,
                     phi_findings=scan_artifacts(local), artifact_integrity_ok=True)


def _history(client, name: str, alias: str) -> list[str]:
    tag = client.get_registered_model(name).tags.get(f"{T}alias_history.{alias}")
    return json.loads(tag) if tag else []


PROMOTING = f"{T}promoting."  # + alias: a registered-model tag holding a decision whose records are not all written


def _pending_promotion(client, name: str, version: str, alias: str, approver: str, reason: str) -> dict | None:
    """The decision of an earlier promote of the same version to the same alias, by the same approver for the same
    reason, that was stopped before its records were all written (see promote_flow)."""
    tag = client.get_registered_model(name).tags.get(f"{PROMOTING}{alias}")
    pending = json.loads(tag) if tag else None
    if not pending or pending["version"] != str(version):
        return None
    return pending if (pending["verdict"]["approver"], pending["verdict"]["reason"]) == (approver, reason) else None


def settle_promotion(client, name: str, alias: str) -> bool:
    """Remove the pending-decision marker a kill left after its approved promotion was fully written (the alias on
    the marker's version, which ends the alias history; the ledger event comes before both); -> whether it did."""
    import mlflow

    tag = client.get_registered_model(name).tags.get(f"{PROMOTING}{alias}")
    if not tag:
        return False
    pending = json.loads(tag)
    try:
        current = str(client.get_model_version_by_alias(name, alias).version)
    except mlflow.exceptions.MlflowException:
        return False
    if pending["verdict"]["decision"] != "approved" or current != pending["version"] \
            or _history(client, name, alias)[-1:] != [current]:
        return False
    client.delete_registered_model_tag(name, f"{PROMOTING}{alias}")
    return True


def _decide(ws: Workspace, client, name: str, version: str, alias: str, approver: str, reason: str) -> dict:
    """Judge the candidate against the current holder of `alias` with the gate; -> the decision to record."""
    import mlflow

    from tasks.registry.gate import GatePolicy, evaluate_gate

    with tempfile.TemporaryDirectory(dir=ws.state) as tmp:
        candidate = candidate_from(client, name, version, Path(tmp))
        champion = None
        try:
            current = client.get_model_version_by_alias(name, alias).version
        except mlflow.exceptions.MlflowException:
            current = None
        if current is not None and str(current) != str(version):
            champion = candidate_from(client, name, current, Path(tmp))
    decision = evaluate_gate(candidate, champion, GatePolicy.from_params(ws.params()))
    now = datetime.now(UTC)
    verdict = {"decision": "approved" if decision.approved else "refused", "alias": alias, "approver": approver,
               "reason": reason, "at": now.isoformat(timespec="seconds"), "reasons": decision.reasons,
               "champion_before": None if current is None else str(current)}
    return {"version": str(version), "stamp": now.strftime("%Y%m%dT%H%M%SZ"),  # tag keys take no '+'
            "verdict": verdict, "checks": decision.checks}


@flow(name="promote")
@_tracking_errors
def promote_flow(workspace: Path, model: str, alias: str, approver: str, reason: str) -> dict:
    """Gate, then record: decision tag on the version, ledger event, alias history, alias. The decision is first
    kept in a registered-model tag (`mmfm.promoting.<alias>`) removed as the last write, so a rerun after a kill
    anywhere in between (same version, alias, approver and reason) completes that decision instead of judging and
    recording a second one: one decision tag, one ledger event, the version once in the history."""
    import mlflow

    from tasks import tracking
    from tasks.faults import kill_point
    from tasks.lineage import record

    ws = Workspace(Path(workspace).resolve())
    tracking.configure(ws.root)
    client = mlflow.MlflowClient()
    name, version = _parse(model, client)
    pending = _pending_promotion(client, name, version, alias, approver, reason)
    if pending is None:
        pending = _decide(ws, client, name, version, alias, approver, reason)
        client.set_registered_model_tag(name, f"{PROMOTING}{alias}", json.dumps(pending))
    verdict, checks = pending["verdict"], pending["checks"]
    client.set_model_version_tag(name, version, f"{T}{verdict['decision']}.{alias}.{pending['stamp']}",
                                 json.dumps(verdict))
    kill_point("promote.after_verdict")
    event = record(ws, "promote", f"{name}/{version}/{alias}/{verdict['at']}",  # once per run id: a rerun adds none
                   params={"alias": alias, "approver": approver},
                   facts={"model_version": f"{name}/{version}", **verdict,
                          "checks": [{k: c[k] for k in ("rule", "passed")} for c in checks]})
    if verdict["decision"] != "approved":
        client.delete_registered_model_tag(name, f"{PROMOTING}{alias}")
        raise PromotionRefused(f"{name}/{version} not promoted to {alias}: " + " | ".join(verdict["reasons"]))
    history = _history(client, name, alias)
    if history[-1:] != [str(version)]:
        client.set_registered_model_tag(name, f"{T}alias_history.{alias}", json.dumps([*history, str(version)]))
    client.set_registered_model_alias(name, alias, version)
    client.delete_registered_model_tag(name, f"{PROMOTING}{alias}")
    get_run_logger().info("%s/%s is now %s (approved by %s)", name, version, alias, approver)
    return {"name": name, "version": str(version), "alias": alias, **verdict, "checks": checks,
            "lineage_event": event.event_id}


@flow(name="rollback")
@_tracking_errors
def rollback_flow(workspace: Path, name: str, alias: str, approver: str, reason: str) -> dict:
    """Give `alias` back to the version that held it before the current one (one command, recorded)."""
    import mlflow

    from tasks import tracking
    from tasks.lineage import record

    ws = Workspace(Path(workspace).resolve())
    tracking.configure(ws.root)
    client = mlflow.MlflowClient()
    history = _history(client, name, alias)
    if len(history) < 2:
        raise PromotionRefused(f"{name}@{alias} has no earlier version to roll back to (history: {history})")
    current, previous = history[-1], history[-2]
    client.set_registered_model_alias(name, alias, previous)
    client.set_registered_model_tag(name, f"{T}alias_history.{alias}", json.dumps(history[:-1]))
    now = datetime.now(UTC)
    at, stamp = now.isoformat(timespec="seconds"), now.strftime("%Y%m%dT%H%M%SZ")
    verdict = {"decision": "rolled_back", "alias": alias, "approver": approver, "reason": reason, "at": at,
               "from_version": current, "to_version": previous}
    client.set_model_version_tag(name, previous, f"{T}rolled_back.{alias}.{stamp}", json.dumps(verdict))
    event = record(ws, "rollback", f"{name}/{alias}/{at}", params={"alias": alias, "approver": approver},
                   facts={"model_version": f"{name}/{previous}", **verdict})
    return {"name": name, **verdict, "lineage_event": event.event_id}
