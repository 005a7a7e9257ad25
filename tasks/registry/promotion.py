"""Promotion and rollback: the gate's decision about one version for one alias, and how it is recorded.

Recording is several writes (decision tag on the version, ledger event, alias history, alias). The decision is
first kept in the registered-model tag `mmfm.promoting.<alias>` (PROMOTING) and removed as the last write, so a rerun
after a kill anywhere in between (same version, alias, approver and reason) completes that decision instead of
judging and recording a second one: one decision tag, one ledger event, the version once in the history. The marker
lives in the registry, not in a workspace journal, because the decision is about the registry's state.
"""

from __future__ import annotations

import json
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import mlflow

from tasks import tags
from tasks.registry.gate import Candidate, GatePolicy, evaluate_gate
from tasks.registry.integrity import IntegrityError
from tasks.registry.phi_scan import scan_artifacts
from tasks.workspace import VALIDATION_REPORT, Workspace

PROMOTING = tags.PROMOTING  # + alias


class PromotionRefused(RuntimeError):
    """The gate said no; the message lists every reason, `checks` every rule's value and verdict."""

    def __init__(self, message: str, verdict: dict | None = None, checks: list[dict] | None = None):
        super().__init__(message)
        self.verdict, self.checks = verdict or {}, checks or []


CHECK_FIELDS = ("rule", "passed", "value", "detail", "excepted", "reason")  # what is recorded of each gate check


def recorded_checks(checks: list[dict]) -> list[dict]:
    """Every rule with its value, verdict and exception as the version tag and the ledger keep them (a marker
    written before values were recorded lacks some fields: None)."""
    return [{k: c.get(k) for k in CHECK_FIELDS} for c in checks]


def evaluation_facts(evaluation: dict) -> dict:
    """The gate's evidence facts from an evaluation report: task_metrics (each task's primary metric with its CI)
    and comparisons (fused minus each baseline, paired; evaluation.json `baselines.comparisons`)."""
    metrics = {}
    for task, rep in (evaluation.get("tasks") or {}).items():
        primary = rep.get("primary_metric")
        entry = (rep.get("metrics") or {}).get(primary) or {}
        metrics[task] = {"metric": primary, **{k: entry.get(k) for k in ("value", "ci_low", "ci_high")}}
    return {"task_metrics": metrics, "comparisons": (evaluation.get("baselines") or {}).get("comparisons") or {}}


def authenticated_user(tracking_uri: str) -> str | None:
    """The user an authenticating MLflow server (`mlflow server --app-name basic-auth`) knows this client as: the
    MLFLOW_TRACKING_USERNAME it sends with every request to an http(s) tracking URI (a wrong password fails the
    request, so a decision recorded under this name was made by whoever holds that account); None on a local
    store or without credentials, where nothing authenticates anyone."""
    user = os.environ.get("MLFLOW_TRACKING_USERNAME", "").strip()
    return user if user and tracking_uri.startswith(("http://", "https://")) else None


def approver_of(approver: str | None, tracking_uri: str) -> tuple[str, bool]:
    """Who is recorded as approver -> (name, authenticated). Where MLflow authenticates users it is the
    authenticated user: `--approver` may be omitted, and naming someone else is refused (one person cannot sign for
    another). Without authentication the approver must be named (free text, as typed)."""
    user = authenticated_user(tracking_uri)
    given = (approver or "").strip() or None
    if user is not None:
        if given is not None and given != user:
            raise PromotionRefused(f"--approver {given!r} is not the user the MLflow server authenticated ({user!r}): "
                                   "the approver recorded is the authenticated user; omit --approver or sign in "
                                   "as the approver (MLFLOW_TRACKING_USERNAME)")
        return user, True
    if given is None:
        raise PromotionRefused("name the approver with --approver (the MLflow tracking store does not authenticate "
                               "users, so nobody else can say who approves)")
    return given, False


def history_tag(alias: str) -> str:
    return tags.key(f"alias_history.{alias}")


def candidate_from(client, name: str, version: str, scratch: Path):
    """The gate's facts about one version, read from its artifacts after they passed the hash check (tags are
    editable by anyone with EDIT; the hashed artifacts are not): evaluation report, backbone meta, contract results;
    plus a PHI scan of everything it ships."""
    # lazy: torch and models (~8 s with monai) only to judge a candidate; rollback and the CLI import this module
    from tasks.evaluation.assess import subgroup_primary
    from tasks.registry.staging import download_verified

    try:
        local = download_verified(f"{name}/{version}", scratch / f"v{version}")
    except IntegrityError:
        return Candidate(name=name, version=str(version), artifact_integrity_ok=False)

    def read(relative: str) -> dict:
        found = sorted(local.rglob(relative))
        return json.loads(found[0].read_text()) if found else {}

    evaluation = read("evaluation/evaluation.json")
    diag = (evaluation.get("tasks") or {}).get("diagnosis") or {}
    validation = read(f"governance/{VALIDATION_REPORT}")
    metrics = {k: v["value"] for k, v in (diag.get("metrics") or {}).items() if v.get("value") is not None}
    return Candidate(name=name, version=str(version), metrics=metrics, **evaluation_facts(evaluation),
                     evaluated_split=evaluation.get("split"),
                     evaluated_dataset_version=evaluation.get("dataset_version"),
                     trained_dataset_version=read("bundle/backbone/meta.json").get("dataset_version"),
                     subgroup_metrics=subgroup_primary(diag) if diag else {},
                     contracts_passed=None if not validation else validation.get("blocked") is False,
                     phi_findings=scan_artifacts(local), artifact_integrity_ok=True)


def history(client, name: str, alias: str) -> list[str]:
    tag = client.get_registered_model(name).tags.get(history_tag(alias))
    return json.loads(tag) if tag else []


def pending_promotion(client, name: str, version: str, alias: str, approver: str, reason: str) -> dict | None:
    """The decision of an earlier promote of the same version to the same alias, by the same approver for the same
    reason, that was stopped before its records were all written."""
    tag = client.get_registered_model(name).tags.get(f"{PROMOTING}{alias}")
    pending = json.loads(tag) if tag else None
    if not pending or pending["version"] != str(version):
        return None
    return pending if (pending["verdict"]["approver"], pending["verdict"]["reason"]) == (approver, reason) else None


def settle_promotion(client, name: str, alias: str) -> bool:
    """Remove the pending-decision marker a kill left after its approved promotion was fully written (the alias on
    the marker's version, which ends the alias history; the ledger event comes before both); -> whether it did."""
    tag = client.get_registered_model(name).tags.get(f"{PROMOTING}{alias}")
    if not tag:
        return False
    pending = json.loads(tag)
    try:
        current = str(client.get_model_version_by_alias(name, alias).version)
    except mlflow.exceptions.MlflowException:
        return False
    if pending["verdict"]["decision"] != "approved" or current != pending["version"] \
            or history(client, name, alias)[-1:] != [current]:
        return False
    client.delete_registered_model_tag(name, f"{PROMOTING}{alias}")
    return True


def decide(ws: Workspace, client, name: str, version: str, alias: str, approver: str, reason: str,
           authenticated: bool = False) -> dict:
    """Judge the candidate against the current holder of `alias` with the gate; -> the decision to record."""
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
               "approver_authenticated": authenticated, "reason": reason, "at": now.isoformat(timespec="seconds"),
               "reasons": decision.reasons,
               "champion_before": None if current is None else str(current)}
    return {"version": str(version), "stamp": now.strftime("%Y%m%dT%H%M%SZ"),  # tag keys take no '+'
            "verdict": verdict, "checks": decision.checks}


def pending_or_decide(ws: Workspace, client, name: str, version: str, alias: str, approver: str,
                      reason: str, authenticated: bool = False) -> dict:
    """Recover: the decision an interrupted promote left (same version, alias, approver, reason), else a new one,
    kept in the pending marker before anything else is written."""
    pending = pending_promotion(client, name, version, alias, approver, reason)
    if pending is None:
        pending = decide(ws, client, name, version, alias, approver, reason, authenticated)
        client.set_registered_model_tag(name, f"{PROMOTING}{alias}", json.dumps(pending))
    return pending


def write_verdict(client, name: str, version: str, alias: str, pending: dict) -> None:
    """The decision tag on the version (same key on a rerun: the marker keeps the stamp)."""
    verdict = pending["verdict"]
    client.set_model_version_tag(name, version, tags.key(f"{verdict['decision']}.{alias}.{pending['stamp']}"),
                                 json.dumps({**verdict, "checks": recorded_checks(pending["checks"])}))


def move_alias(client, name: str, version: str, alias: str) -> None:
    """Approved: the version ends the alias history (once), takes the alias, and the marker goes last."""
    past = history(client, name, alias)
    if past[-1:] != [str(version)]:
        client.set_registered_model_tag(name, history_tag(alias), json.dumps([*past, str(version)]))
    client.set_registered_model_alias(name, alias, version)
    client.delete_registered_model_tag(name, f"{PROMOTING}{alias}")


def refuse(client, name: str, version: str, alias: str, verdict: dict,
           checks: list[dict] | None = None) -> PromotionRefused:
    """Refused: the marker goes (the refusal is recorded); -> the exception to raise."""
    client.delete_registered_model_tag(name, f"{PROMOTING}{alias}")
    return PromotionRefused(f"{name}/{version} not promoted to {alias}: " + " | ".join(verdict["reasons"]),
                            verdict, checks)


def roll_back(client, name: str, alias: str, approver: str, reason: str, authenticated: bool = False) -> dict:
    """Give `alias` back to the version that held it before the current one; -> the verdict recorded on it."""
    past = history(client, name, alias)
    if len(past) < 2:
        raise PromotionRefused(f"{name}@{alias} has no earlier version to roll back to (history: {past})")
    current, previous = past[-1], past[-2]
    client.set_registered_model_alias(name, alias, previous)
    client.set_registered_model_tag(name, history_tag(alias), json.dumps(past[:-1]))
    now = datetime.now(UTC)
    at, stamp = now.isoformat(timespec="seconds"), now.strftime("%Y%m%dT%H%M%SZ")
    verdict = {"decision": "rolled_back", "alias": alias, "approver": approver,
               "approver_authenticated": authenticated, "reason": reason, "at": at,
               "from_version": current, "to_version": previous}
    client.set_model_version_tag(name, previous, tags.key(f"rolled_back.{alias}.{stamp}"), json.dumps(verdict))
    return verdict
