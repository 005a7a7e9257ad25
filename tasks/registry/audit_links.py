"""Where the artifacts an auditor opens next live: model card, GX Data Docs, validation report, drift reports, plots.

Why: an audit that only names hashes sends the reader hunting through the workspace. The report links each artifact
where it already lives (never a copy that could drift from the hashed original), so links are relative to the
report's folder and resolve on any machine the workspace is copied to. Only files that exist are linked; the model
card is found through the registry (the register run's artifacts, then the logged model's), and when the tracking
store is remote the card is downloaded beside the report (`fetch_remote_card`), or named without a link.

No PHI: the paths linked are the workspace's own layout (content-addressed or stage-named), never an extract's.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import unquote, urlsplit

CARD_PATHS = ("card/model_card.html", "artifacts/card/model_card.html")
DATA_DOCS = "data/reports"
MONITORING = "data/monitoring"
EVALUATION = "models/evaluation"


def _local_dir(uri: str | None, root: Path) -> Path | None:
    """A local folder for an artifact URI (file:, plain path, or a path relative to the workspace); None if remote."""
    if not uri:
        return None
    parts = urlsplit(uri)
    if parts.scheme == "file":
        return Path(unquote(parts.path))
    if parts.scheme and len(parts.scheme) > 1:  # s3:, http:, mlflow-artifacts: ... (a one-letter scheme is a drive)
        return None
    path = Path(uri)
    if path.is_absolute():
        return path
    return next((p for p in (root / path, root / ".mmfm" / path) if p.exists()), root / path)


def _card(client, run_id: str | None, model_id: str | None, root: Path) -> Path | None:
    bases = []
    try:
        if run_id:
            bases.append(_local_dir(client.get_run(run_id).info.artifact_uri, root))
        if model_id:
            bases.append(_local_dir(client.get_logged_model(model_id).artifact_location, root))
    except Exception:  # noqa: BLE001 - a store that cannot answer leaves the card unlinked, the audit goes on
        pass
    return next((b / c for b in bases if b is not None for c in CARD_PATHS if (b / c).is_file()), None)


def _rel(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root).as_posix()
    except ValueError:
        return str(path.resolve())


def find_artifacts(root: Path, client, name: str, version: str) -> list[dict]:
    """[{kind, label, path}]: path relative to the workspace (absolute when outside it), None when not on disk."""
    root = Path(root).resolve()
    out: list[dict] = []
    try:
        mv = client.get_model_version(name, version)
        card = _card(client, mv.run_id, getattr(mv, "model_id", None), root)
    except Exception:  # noqa: BLE001
        mv, card = None, None
    out.append({"kind": "model card", "label": f"Model card of {name} version {version}",
                "path": _rel(card, root) if card else None,
                "run_id": mv.run_id if mv is not None else None})
    for index in sorted((root / DATA_DOCS).glob("**/data_docs/local_site/index.html")):
        out.append({"kind": "data docs", "label": "Great Expectations Data Docs (validation of the curated data)",
                     "path": _rel(index, root)})
    validation = root / DATA_DOCS / "validation.json"
    if validation.is_file():
        out.append({"kind": "validation", "label": "Validation report (mmfm)", "path": _rel(validation, root)})
    for area in sorted(p for p in (root / MONITORING).glob("*") if p.is_dir()):
        for page in sorted(area.glob("**/*.html")) + sorted(area.glob("**/drift.json")):
            out.append({"kind": "drift report", "label": f"Monitoring {area.name}: {page.relative_to(area)}",
                        "path": _rel(page, root)})
    evaluation = root / EVALUATION
    for page in [evaluation / "evaluation.md", *sorted((evaluation / "plots").glob("*.png"))]:
        if page.is_file():
            out.append({"kind": "evaluation", "label": f"Evaluation: {page.relative_to(evaluation)}",
                        "path": _rel(page, root)})
    return out


def fetch_remote_card(artifacts: list[dict], out_dir: Path, version: str) -> None:
    """When the card is not on this file system (remote store), download it beside the report; best effort."""
    import mlflow

    for a in artifacts:
        if a["kind"] != "model card" or a["path"] or not a.get("run_id"):
            continue
        dst = Path(out_dir) / f"card-v{version}"
        try:
            got = Path(mlflow.artifacts.download_artifacts(run_id=a["run_id"], artifact_path="card",
                                                           dst_path=str(dst)))
        except Exception:  # noqa: BLE001 - no card in the store: the report says so
            continue
        page = got / "model_card.html" if got.is_dir() else got
        if page.is_file():
            a["path"] = str(page.resolve())


def href(path: str | None, root: Path, out_dir: Path) -> str | None:
    """A link from the report's folder to an artifact, or None when it does not exist there."""
    if not path:
        return None
    target = Path(path) if Path(path).is_absolute() else Path(root) / path
    if not target.is_file():
        return None
    return Path(os.path.relpath(target.resolve(), Path(out_dir).resolve())).as_posix()
