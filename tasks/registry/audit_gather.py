"""Gather the audit of one registered model version: from raw extract sha256 to today's alias, every gap listed.

Why: the evidence that a model may be used is spread over the registry (version tags, aliases, approvals), MLflow
runs (params, code and dataset versions) and the lineage ledger (what every stage read and wrote). An auditor needs
it joined, in the order the data travelled, and checked: `build_audit` collects it into one plain dict and lists
every gap (a broken chain, an input nobody wrote, a tag that disagrees with the ledger). Rendering that dict is
tasks.registry.audit_render's job, so the checks can be tested (and reused) without any template.

No PHI: the audit holds counts, hashes, ids, rule names and pseudonyms only. Landing manifests are re-hashed but
their relative paths (which may carry PHI in real exports) are never read into it; de-identification and
validation reports contribute counts; evaluation contributes aggregate metrics.
"""

from __future__ import annotations

import json
import re
import tempfile
from collections import Counter
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import mlflow

from tasks import tags, tracking
from tasks.lineage import Event, Ledger, artifact_sha256, lineage, verify
from tasks.lineage.hashing import sha256_file
from tasks.registry.audit_evaluation import evaluation_summary as _evaluation_summary
from tasks.registry.audit_links import find_artifacts
from tasks.registry.audit_monitoring import NO_MONITORING, monitoring
from tasks.registry.integrity import IntegrityError, manifest_from_tags

__all__ = ["NO_MONITORING", "build_audit"]

CHAIN_STAGES = ("ingest", "validate", "version", "pretrain", "finetune", "evaluate", "register")
LANDING = "data/landing/"
EVALUATION_ARTIFACT = "artifacts/evaluation/evaluation.json"
DECISION_TAG = re.compile(rf"^{re.escape(tags.NS)}(approved|refused|rolled_back)\.(.+)\.(\d{{8}}T\d{{6}}Z)$")
DECISION_FIELDS = ("decision", "alias", "approver", "reason", "at", "reasons", "champion_before", "from_version",
                   "to_version", "checks")  # checks: every gate rule's value, verdict and exception
VERSION_TAGS = ("dataset_version", "trained_dataset_version", "evaluated_dataset_version", "evaluated_split",
                "contract_versions", "curated_md5", "code_version", "evaluation_run_id", "lineage_event",
                "contracts_passed", "phi_findings", "metrics", "primary")
JSON_TAGS = frozenset({"contract_versions", "contracts_passed", "phi_findings", "metrics", "primary"})


# --- small helpers --------------------------------------------------------------------------------------------------

def _iso(ms: int | None) -> str | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds")


def _json(text: str | None) -> Any:
    try:
        return json.loads(text) if text else None
    except ValueError:
        return text


def _event_row(ev: Event, role: str) -> dict:
    return {"seq": ev.seq, "event_id": ev.event_id, "stage": ev.stage, "run_id": ev.run_id, "time": ev.time,
            "actor": ev.actor, "code_version": ev.code_version, "role": role,
            "inputs": list(ev.inputs), "outputs": list(ev.outputs)}


def _read_recorded(root: Path, entry: Mapping, what: str, gaps: list[str]) -> dict | None:
    """A JSON artifact the ledger names, read only if it still has the bytes the ledger recorded."""
    path = root / entry["uri"]
    if not path.exists():
        gaps.append(f"The {what} {entry['uri']} named in the ledger is missing from the workspace.")
        return None
    if artifact_sha256(path) != entry["sha256"]:
        gaps.append(f"The {what} {entry['uri']} changed after the ledger recorded it (sha256 {entry['sha256']}).")
        return None
    return json.loads(path.read_text())


# --- registry -------------------------------------------------------------------------------------------------------

def _parse_ref(client, ref: str) -> tuple[str, str]:
    ref = ref.removeprefix("models:/")
    if "@" in ref:
        name, alias = ref.split("@", 1)
        return name, str(client.get_model_version_by_alias(name, alias).version)
    if "/" in ref:
        name, version = ref.rsplit("/", 1)
        return name, version
    raise ValueError(f"{ref!r}: name a model version as NAME/VERSION or NAME@alias")


def _decisions(version_tags: Mapping[str, str]) -> list[dict]:
    out = []
    for key, value in version_tags.items():
        m = DECISION_TAG.match(key)
        if m:
            body = _json(value) if isinstance(_json(value), dict) else {}
            out.append({"decision": m[1], "alias": m[2], "stamp": m[3],
                        **{k: body[k] for k in DECISION_FIELDS if k in body}})
    return sorted(out, key=lambda d: (d.get("at") or "", d["stamp"]))


def _registry(client, name: str, version: str, gaps: list[str]) -> dict:
    mv, rm = client.get_model_version(name, version), client.get_registered_model(name)
    mv_tags = dict(mv.tags)
    try:
        manifest = manifest_from_tags(mv_tags)
    except IntegrityError as err:
        manifest = {}
        gaps.append(f"The artifact manifest in the version's tags is unusable: {err}.")
    picked = {k: _json(mv_tags.get(tags.key(k))) if k in JSON_TAGS else mv_tags.get(tags.key(k)) for k in VERSION_TAGS}
    history_prefix = tags.key("alias_history.")
    history = {k.removeprefix(history_prefix): _json(v) for k, v in rm.tags.items() if k.startswith(history_prefix)}
    return {"name": name, "version": str(version), "created": _iso(mv.creation_timestamp), "run_id": mv.run_id,
            "status": str(mv.status), "tags": picked,
            "manifest": {"sha256": mv_tags.get(tags.key("sha256.manifest")), "files": len(manifest),
                         "hashes": manifest},
            "decisions": _decisions(mv_tags), "aliases_now": {a: str(v) for a, v in dict(rm.aliases).items()},
            "alias_history": history}


def _runs(client, run_ids: list[tuple[str, str]], dataset_version: str | None, gaps: list[str]) -> list[dict]:
    """MLflow runs named by the chain (stage, run id): params, metrics and the mmfm tags that name data and code."""
    out = []
    for stage, run_id in run_ids:
        try:
            run = client.get_run(run_id)
        except Exception:  # noqa: BLE001 - a deleted or unreachable run is a gap, not a crash
            gaps.append(f"The MLflow run {run_id} of the {stage} stage cannot be found in the tracking store.")
            continue
        run_tags = tags.strip(run.data.tags)
        if not run_tags.get("code_version"):
            gaps.append(f"The MLflow run {run_id} ({stage}) carries no code version tag.")
        if dataset_version and run_tags.get("dataset_version") != dataset_version:
            gaps.append(f"The MLflow run {run_id} ({stage}) names dataset version {run_tags.get('dataset_version')}, "
                        f"not {dataset_version}.")
        out.append({"stage": stage, "run_id": run_id, "name": run.info.run_name, "status": run.info.status,
                    "start": _iso(run.info.start_time), "params": dict(sorted(run.data.params.items())),
                    "metrics": {k: round(v, 4) for k, v in sorted(run.data.metrics.items())}, "tags": run_tags})
    return out


# --- ledger ---------------------------------------------------------------------------------------------------------

def _root_event(events: list[Event], reg: dict, gaps: list[str]) -> Event | None:
    """The version's register event: by its lineage event tag, else by (register, NAME/VERSION) with a gap."""
    tag, ref = reg["tags"]["lineage_event"], f"{reg['name']}/{reg['version']}"
    by_id = {e.event_id: e for e in events}
    if tag and tag in by_id:
        ev = by_id[tag]
        if ev.stage != "register" or ev.run_id != ref:
            gaps.append(f"The lineage event {tag} named by the version is a {ev.stage} event for {ev.run_id}, "
                        f"not the registration of {ref}.")
        return ev
    gaps.append(f"The version's lineage event id {tag} does not exist in the ledger." if tag else
                "The version carries no lineage event id (tag mmfm.lineage_event).")
    found = [e for e in events if e.stage == "register" and e.run_id == ref]
    return found[-1] if found else None


def _chain(ledger: Ledger, events: list[Event], root_event: Event | None, gaps: list[str]) -> tuple[list, dict]:
    """(upstream events incl. the root, lineage graph) from the register event, or from models/evaluation."""
    try:
        graph = lineage(ledger, root_event.event_id if root_event else "models/evaluation")
    except LookupError:
        gaps.append("Nothing in the ledger leads to this model: its lineage cannot be walked.")
        return [], {"nodes": [], "edges": [], "roots": [], "upstream": []}
    by_id = {e.event_id: e for e in events}
    ids = [n.removeprefix("event:") for n in graph["roots"] + graph["upstream"] if n.startswith("event:")]
    return sorted({by_id[i].seq: by_id[i] for i in ids}.values(), key=lambda e: e.seq), graph


def _check_chain(graph: dict, chain: list[Event], gaps: list[str]) -> None:
    """Every input traces to an event that wrote exactly those bytes, or is a raw extract in landing."""
    producers: dict[str, list[str]] = {}
    for e in graph["edges"]:
        if e["kind"] != "input":
            producers.setdefault(e["target"], []).append(e["kind"])
    for ev in chain:
        if ev.outputs and not ev.inputs:
            gaps.append(f"The {ev.stage} event {ev.event_id} wrote outputs but recorded no inputs.")
        if not ev.code_version or ev.code_version == "unknown":
            gaps.append(f"The {ev.stage} event {ev.event_id} carries no code version.")
        for entry in ev.inputs:
            if entry["uri"].startswith(LANDING):
                continue
            kinds = producers.get(f"artifact:{entry['uri']}@{entry['sha256']}", [])
            if not kinds:
                gaps.append(f"{entry['uri']} (sha256 {entry['sha256']}) read by the {ev.stage} event {ev.event_id} "
                            "was written by no recorded event and is not a raw extract.")
            elif set(kinds) == {"same_uri"}:
                gaps.append(f"{entry['uri']} (sha256 {entry['sha256']}) read by the {ev.stage} event "
                            f"{ev.event_id} differs from what its last recorded writer wrote.")


def _related(events: list[Event], reg: dict, dataset_version: str | None) -> list[Event]:
    ref = f"{reg['name']}/{reg['version']}"
    return [e for e in events if (e.stage == "version" and e.facts.get("dataset_version") == dataset_version)
            or (e.stage in ("promote", "rollback") and e.facts.get("model_version") == ref)
            or (e.stage == "rollback" and str(e.facts.get("from_version")) == reg["version"])]


def _rolled_away(related: list[Event], version: str) -> list[dict]:
    """Rollbacks that took an alias away from this version: their tag sits on the version that got it back."""
    return [{"decision": "rolled back away from this version", "stamp": "",
             **{k: e.facts.get(k) for k in DECISION_FIELDS if k != "decision"}} for e in related
            if e.stage == "rollback" and str(e.facts.get("from_version")) == version]


# --- evidence -------------------------------------------------------------------------------------------------------

def _extracts(root: Path, chain: list[Event], gaps: list[str]) -> list[dict]:
    out = []
    for ev in (e for e in chain if e.stage == "ingest"):
        for entry in (i for i in ev.inputs if i["uri"].startswith(LANDING)):
            path = root / entry["uri"]
            now = artifact_sha256(path) if path.exists() else None
            manifest = json.loads(path.read_text()) if now == entry["sha256"] else {}
            if now != entry["sha256"]:
                gaps.append(f"The raw extract manifest {entry['uri']} is missing or no longer hashes to the recorded "
                            f"sha256 {entry['sha256']}.")
            files = manifest.get("files", [])
            out.append({"uri": entry["uri"], "sha256": entry["sha256"], "sha256_now": now,
                        "extract_id": manifest.get("extract_id"), "source": ev.params.get("source"),
                        "site": ev.params.get("site"), "files": len(files),
                        "bytes": sum(int(f.get("size", 0)) for f in files), "ingest_event": ev.event_id,
                        "received": ev.facts.get("received"), "ingested": ev.facts.get("ingested"),
                        "quarantined": ev.facts.get("quarantined")})
    return out


def _deid(root: Path, chain: list[Event], gaps: list[str]) -> dict:
    reports, totals = [], Counter()
    actions: dict[str, Counter] = {}
    for ev in (e for e in chain if e.stage == "ingest"):
        entries = [o for o in ev.outputs if re.fullmatch(r"data/reports/deid-[^/]+\.json", o["uri"])]
        if not entries:
            gaps.append(f"The ingest event {ev.event_id} recorded no de-identification report.")
        for entry in entries:
            raw = _read_recorded(root, entry, "de-identification report", gaps)
            if raw is None:
                continue
            counts = {k: int(raw.get(k, 0)) for k in ("dicom_files", "fhir_resources", "text_fields")}
            acts = {m: dict(sorted(c.items())) for m, c in (raw.get("actions") or {}).items() if c}
            reports.append({"uri": entry["uri"], "sha256": entry["sha256"], "profile": raw.get("profile"), **counts,
                            "actions": acts, "text_replacements": dict(raw.get("text_replacements") or {}),
                            "burned_in_flagged": len(raw.get("burned_in") or [])})
            totals.update({**counts, "burned_in_flagged": len(raw.get("burned_in") or [])})
            for modality, c in acts.items():
                actions.setdefault(modality, Counter()).update(c)
    return {"reports": reports, "profiles": sorted({r["profile"] for r in reports if r["profile"]}),
            "totals": dict(totals), "actions": {m: dict(sorted(c.items())) for m, c in sorted(actions.items())}}


def _validation(root: Path, chain: list[Event], gaps: list[str]) -> dict | None:
    events = [e for e in chain if e.stage == "validate"]
    entry = next((o for e in events[-1:] for o in e.outputs if o["uri"].endswith("/validation.json")), None)
    if entry is None:
        gaps.append("No validate event in the chain recorded a validation report.")
        return None
    raw = _read_recorded(root, entry, "validation report", gaps)
    if raw is None:
        return None
    tables = {name: {k: t.get(k) for k in ("contract_version", "rows_checked", "rows_passed", "rows_quarantined",
                                           "rows_failed")} for name, t in sorted((raw.get("tables") or {}).items())}
    return {"uri": entry["uri"], "sha256": entry["sha256"], "event_id": events[-1].event_id,
            "run_id": raw.get("run_id"), "blocked": raw.get("blocked"),
            "contract_versions": dict(sorted((raw.get("contract_versions") or {}).items())),
            "quarantined": raw.get("quarantined"), "quarantined_by_rule": dict(raw.get("quarantine_reasons") or {}),
            "staged_sha256": raw.get("staged_sha256"), "tables": tables}


def _dataset(related: list[Event], chain: list[Event], version_tag: str | None, gaps: list[str]) -> dict:
    published = [e for e in related if e.stage == "version"]
    if not published:
        gaps.append(f"Dataset version {version_tag} has no version event in the ledger: the model trained on "
                    "unpublished data.")
        return {"dataset_version": version_tag}
    ev = published[-1]
    curated = {i["sha256"] for i in ev.inputs if i["uri"] == "data/curated"}
    for stage_ev in (e for e in chain if e.stage in ("pretrain", "finetune", "evaluate")):
        read = {i["sha256"] for i in stage_ev.inputs if i["uri"] == "data/curated"}
        if read and not read <= curated:
            gaps.append(f"The {stage_ev.stage} event {stage_ev.event_id} read curated data that dataset version "
                        f"{version_tag} does not cover.")
    return {"dataset_version": version_tag, "event_id": ev.event_id, "git_rev": ev.facts.get("git_rev"),
            "curated_md5": ev.facts.get("curated_md5"), "curated_sha256": sorted(curated),
            "contract_versions": ev.facts.get("contract_versions") or {}, "published": ev.time, "actor": ev.actor}


def _evaluation(root: Path, reg: dict, gaps: list[str]) -> dict | None:
    """The evaluation the registry holds (checked against the manifest), read from the workspace when identical."""
    expected = reg["manifest"]["hashes"].get(EVALUATION_ARTIFACT)
    local = root / "models" / "evaluation" / "evaluation.json"
    if expected and local.exists() and sha256_file(local) == expected:
        raw = json.loads(local.read_text())
    else:
        with tempfile.TemporaryDirectory() as tmp:
            try:
                path = Path(mlflow.artifacts.download_artifacts(
                    artifact_uri=f"models:/{reg['name']}/{reg['version']}/{EVALUATION_ARTIFACT}", dst_path=tmp))
            except Exception:  # noqa: BLE001 - unreachable artifacts are a gap
                gaps.append("The registered evaluation report cannot be downloaded from the registry.")
                return None
            if expected is None or sha256_file(path) != expected:
                gaps.append("The registered evaluation report does not match the version's sha256 manifest.")
            raw = json.loads(path.read_text())
    return _evaluation_summary(raw)


# --- checks across sources -----------------------------------------------------------------------------------------

def _check_registration(reg: dict, root_event: Event | None, chain: list[Event], related: list[Event],
                        gaps: list[str]) -> None:
    named = reg["tags"]
    versions = {named["dataset_version"], named["trained_dataset_version"], named["evaluated_dataset_version"]}
    if len(versions) != 1 or None in versions:
        gaps.append(f"The version's dataset, trained and evaluated dataset versions disagree or are missing: "
                    f"{sorted(map(str, versions))}.")
    if root_event is not None and root_event.facts.get("artifact_manifest_sha256") != reg["manifest"]["sha256"]:
        gaps.append("The artifact manifest sha256 in the version's tags differs from the one the register event "
                    "recorded.")
    evaluated = [e.facts.get("mlflow_run_id") for e in chain if e.stage == "evaluate"]
    if named["evaluation_run_id"] not in evaluated:
        gaps.append(f"The evaluation run {named['evaluation_run_id']} named by the version is not the run of the "
                    "evaluate event in its lineage.")
    for stage in (s for s in CHAIN_STAGES if s != "version"):
        if not any(e.stage == stage for e in chain):
            gaps.append(f"The lineage chain has no {stage} event.")
    recorded = {(e.facts.get("alias"), e.facts.get("at"), e.facts.get("decision")) for e in related}
    for d in reg["decisions"]:
        if (d.get("alias"), d.get("at"), d["decision"]) not in recorded:
            gaps.append(f"The {d['decision']} decision for alias {d['alias']} at {d.get('at')} is in the registry "
                        "but not in the ledger.")
    registered_as = root_event.params.get("alias") if root_event else None
    approved = {d["alias"] for d in reg["decisions"] if d["decision"] in ("approved", "rolled_back")}
    for alias, version in reg["aliases_now"].items():
        if version == reg["version"] and alias != registered_as and alias not in approved:
            gaps.append(f"Alias {alias} points at version {version} without a recorded approval.")


def _verify(ledger: Ledger, root: Path, gaps: list[str]) -> dict:
    report = verify(ledger, root)
    gaps += [f"Ledger verification: {p.message}." for p in report.problems]
    return {"ok": report.ok, "events_checked": report.events_checked,
            "artifacts_checked": report.artifacts_checked, "head": report.head, "notes": report.notes}


def build_audit(root: Path, model_ref: str) -> dict:
    """Everything an auditor needs about one registered version (NAME@alias or NAME/VERSION), checked.

    Returns a plain dict (JSON-serialisable) with the sections `render_audit` prints, plus `complete` (no gap found)
    and `gaps` (one sentence each). Opens the workspace's tracking store via tasks.tracking.configure(root).
    """
    root = Path(root).resolve()
    tracking.configure(root)
    client, gaps, notes = mlflow.MlflowClient(), [], []
    name, version = _parse_ref(client, model_ref)
    reg = _registry(client, name, version, gaps)
    ledger = Ledger.of_workspace(root)
    events = ledger.events()
    root_event = _root_event(events, reg, gaps)
    chain, graph = _chain(ledger, events, root_event, gaps)
    _check_chain(graph, chain, gaps)
    dataset_version = reg["tags"]["dataset_version"]
    related = _related(events, reg, dataset_version)
    _check_registration(reg, root_event, chain, [e for e in related if e.stage != "version"], gaps)
    reg["decisions"] = sorted(reg["decisions"] + _rolled_away(related, version), key=lambda d: d.get("at") or "")
    run_ids = [("pretrain", e.facts.get("mlflow_run_id")) for e in chain if e.stage == "pretrain"]
    run_ids += [("finetune", r) for e in chain if e.stage == "finetune"
                for r in (e.facts.get("mlflow_run_ids") or {}).values()]
    run_ids += [("evaluate", reg["tags"]["evaluation_run_id"]), ("register", reg["run_id"])]
    dirty = sorted({e.code_version for e in chain + related if e.code_version.endswith("-dirty")})
    notes += [f"Code version {c} had uncommitted changes: the exact code cannot be checked out again." for c in dirty]
    audit = {
        "model": {"ref": model_ref, "name": name, "version": version, "uri": f"models:/{name}/{version}"},
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "extracts": _extracts(root, chain, gaps), "deid": _deid(root, chain, gaps),
        "validation": _validation(root, chain, gaps), "dataset": _dataset(related, chain, dataset_version, gaps),
        "runs": _runs(client, [(s, r) for s, r in run_ids if r], dataset_version, gaps),
        "evaluation": _evaluation(root, reg, gaps),
        "registration": {k: v for k, v in reg.items() if k != "manifest"} | {
            "manifest": {k: reg["manifest"][k] for k in ("sha256", "files")},
            "lineage_event": root_event.event_id if root_event else None},
        "monitoring": monitoring(root, events, _event_row),
        "artifacts": find_artifacts(root, client, name, version),
        "ledger": {"events": [_event_row(e, "register" if e is root_event else "upstream") for e in chain]
                   + [_event_row(e, "related") for e in related], "verify": _verify(ledger, root, gaps)},
    }
    audit["ledger"]["events"].sort(key=lambda r: r["seq"])
    return {**audit, "complete": not gaps, "gaps": gaps, "notes": notes}
