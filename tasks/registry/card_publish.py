"""The reviewer's model card of one registered version: published after registration, refreshed after each decision.

Why after, and outside the model: the card inside the registered model is hashed with it (tasks/registry/
integrity.py checks those hashes at every load), so it cannot name the version it becomes nor the approvals that come
later. That card stays version-less; this module renders the published one from its data (card/model_card.json, the
plots, the evaluation, read from the version's artifacts after their hashes were checked) plus what the registry and
the ledger know now: the version number, its run ids, every promote / refusal / rollback with approver, reason, time
and ledger event, and the gate's latest decision with every rule's value. It is logged as `card/` artifacts of the
version's MLflow run (model_card.html self-contained, .md, .json with "verdict"), and the registered model and the
version get descriptions that summarise it and say where it is.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from mlflow.store.artifact.models_artifact_repo import ModelsArtifactRepository

from tasks import tags
from tasks.lineage import Ledger
from tasks.registry.integrity import IntegrityError, hash_file, manifest_from_tags
from tasks.registry.model_card import NOT_JUDGED, render_model_card

DECISIONS = ("approved", "refused", "rolled_back")
CARD_DIR = "card"
MODEL_DESCRIPTION = ("Multimodal medical foundation model (CT, radiograph, labs, notes, omics) fine-tuned for "
                     "diagnosis, one-year mortality risk and survival ranking; research decision support only. Each "
                     "version's description summarises its model card and names the run artifact that holds it "
                     "(card/model_card.html, self-contained). Versions move between aliases only through "
                     "`mmfm promote` (the promotion gate) and `mmfm rollback`.")


def _verified_download(name: str, version: str, manifest: dict[str, str], dst: Path) -> Path:
    """artifacts/card and artifacts/evaluation of the version, each file checked against the version's manifest."""
    repo = ModelsArtifactRepository(f"models:/{name}/{version}")
    dst.mkdir(parents=True, exist_ok=True)
    for part in ("artifacts/card", "artifacts/evaluation"):
        repo.download_artifacts(part, str(dst))
    for path in sorted(p for p in dst.rglob("*") if p.is_file() and p.name != "registered_model_meta"):
        relative = path.relative_to(dst).as_posix()
        if manifest.get(relative) != hash_file(path):
            raise IntegrityError(f"{name}/{version}: {relative} differs from the registered hash; the card is not "
                                 "published from altered files")
    return dst / "artifacts"


def decisions(client, root: Path, name: str, version: str) -> list[dict]:
    """Every promote, refusal and rollback concerning `version` (rollbacks to it and from it), oldest first, each
    with its ledger event when the ledger holds one."""
    found: dict[tuple, dict] = {}  # a rollback may be tagged on both versions it concerns: once each
    for mv in client.search_model_versions(f"name='{name}'"):
        for key, value in mv.tags.items():
            if not key.startswith(tuple(tags.key(f"{d}.") for d in DECISIONS)):
                continue
            try:
                verdict = json.loads(value)
            except ValueError:
                continue
            ours = str(mv.version) == str(version)
            if ours or str(verdict.get("from_version")) == str(version):
                found.setdefault((verdict.get("decision"), verdict.get("alias"), verdict.get("at")), verdict)
    events = {(e.stage, e.run_id): e.event_id for e in Ledger.of_workspace(root).events()
              if e.stage in ("promote", "rollback")}
    for d in found.values():
        run_id = (f"{name}/{version}/{d.get('alias')}/{d.get('at')}" if d.get("decision") != "rolled_back"
                  else f"{name}/{d.get('alias')}/{d.get('at')}")
        d["ledger_event"] = events.get(("promote" if d.get("decision") != "rolled_back" else "rollback", run_id))
        if d.get("decision") == "rolled_back":
            d["decision"] = (f"rolled back: {d.get('alias')} moved from version {d.get('from_version')} to "
                             f"version {d.get('to_version')}")
    return sorted(found.values(), key=lambda d: str(d.get("at")))


def _latest_gate(found: list[dict]) -> dict | None:
    judged = [d for d in found if d.get("decision") in ("approved", "refused")]
    return judged[-1] if judged else None


def registry_card(card: dict, client, root: Path, name: str, version: str) -> dict:
    """The staged card with what the registry and the ledger know about `version` now."""
    mv = client.get_model_version(name, version)
    found = decisions(client, root, name, version)
    latest = _latest_gate(found)
    gate = dict(card.get("gate") or {})
    if latest is not None:
        gate = {"note": f"Decision of {latest['at']} for alias {latest['alias']} by {latest['approver']}: "
                        f"{latest['decision']}. " + (" | ".join(latest.get("reasons") or []) or "No rule failed."),
                "checks": latest.get("checks") or []}
    lineage = {"dataset_version": mv.tags.get(tags.key("dataset_version")) or card.get("dataset_version"),
               "model_uri": f"models:/{name}/{version}",
               "register_run_id": mv.run_id, "register_ledger_event": mv.tags.get(tags.key("lineage_event")),
               **{k: v for k, v in (card.get("lineage") or {}).items() if k != "dataset_version"}}
    created = datetime.fromtimestamp(mv.creation_timestamp / 1000, UTC).isoformat(timespec="seconds")
    return {**card, "name": name, "version": str(version), "gate": gate, "approvals": found, "lineage": lineage,
            "verdict": latest["decision"] if latest else NOT_JUDGED,
            "verdict_detail": None if latest else "no promotion decision yet; the evidence rules below were judged "
                                                  "at registration",
            "approvals_note": "No promotion, refusal or rollback of this version yet.",
            "model_details": {**(card.get("model_details") or {}), "registered": created,
                              "aliases": ", ".join(sorted(mv.aliases)) or "none"}}


def description(card: dict, artifact: str) -> str:
    """The version's registry description: verdict, each task's headline with its verdict, where the card is."""
    lines = [f"**Model card**: `{artifact}` (self-contained HTML; Markdown and JSON beside it)", "",
             f"**Gate decision**: {card['verdict']}", ""]
    for t in card.get("tasks") or []:
        head = t["rows"][0]["cells"][0] if t.get("rows") and t["rows"][0]["cells"] else "not measured"
        lines.append(f"- {t['task']} ({t.get('primary_metric')}): {head}; {t.get('verdict')}")
    lines += ["", f"Dataset version: {card.get('dataset_version')}; register run: "
                  f"{(card.get('lineage') or {}).get('register_run_id')}"]
    return "\n".join(lines)


def publish_model_card(root: Path, client, name: str, version: str) -> dict:
    """Render the card of `name`/`version` as the registry and ledger stand now, log it as card/ of the version's
    run, set the version's and the model's descriptions; -> {verdict, artifact, run_id, files}."""
    version = str(version)
    mv = client.get_model_version(name, version)
    with tempfile.TemporaryDirectory() as tmp:
        staged = _verified_download(name, version, manifest_from_tags(mv.tags), Path(tmp) / "registered")
        card = registry_card(json.loads((staged / "card" / "model_card.json").read_text()), client, Path(root),
                             name, version)
        out = Path(tmp) / CARD_DIR
        out.mkdir()
        markdown, page = render_model_card(card, image_root=staged)
        for plot in card.get("plots") or []:  # the Markdown links its images beside it
            if plot.get("path") and (staged / plot["path"]).is_file():
                (out / plot["path"]).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(staged / plot["path"], out / plot["path"])
        (out / "model_card.md").write_text(markdown)
        (out / "model_card.html").write_text(page)
        (out / "model_card.json").write_text(json.dumps(card, indent=1, default=str) + "\n")
        client.log_artifacts(mv.run_id, str(out), artifact_path=CARD_DIR)
        files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    artifact = f"runs:/{mv.run_id}/{CARD_DIR}/model_card.html"
    client.update_model_version(name, version, description=description(card, artifact))
    client.update_registered_model(name, description=MODEL_DESCRIPTION)
    return {"name": name, "version": version, "verdict": card["verdict"], "artifact": artifact,
            "run_id": mv.run_id, "files": files}


def refresh_model_card(root: Path, client, name: str, version: str, logger=None) -> dict | None:
    """publish_model_card after a promote, refusal or rollback: the decision is already recorded, so a card that
    cannot be refreshed is a warning (rerun `mmfm register` to publish it), never a changed outcome."""
    try:
        return publish_model_card(root, client, name, version)
    except Exception as exc:  # noqa: BLE001 - the recorded decision stands whatever the card's fate
        if logger is not None:
            logger.warning("model card of %s/%s not refreshed: %s", name, version, exc)
        return None
