"""`mmfm version`: publish the validated curated snapshot as a dataset version, all or nothing.

Publishing means: DVC records the pipeline's outputs (`dvc commit`: hashes into dvc.lock, data into the cache),
pushes them to the remote (a local folder by default, S3/GCS/Azure by configuration), and git commits the DVC
metadata; the commit is the publication. Any failure restores dvc.lock and the git index to what they were, so
nothing half-published remains (objects already pushed are unreferenced content-addressed blobs, harmless).
Only a snapshot whose validation passed is published: the validation report must be unblocked and must describe
the staged data that is there now.

A dataset version is `<git rev>` of that commit, the DVC hash of data/curated and the contract versions it passed;
`dvc checkout` at that rev gives back its exact rows.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from prefect import flow, task
from prefect.runtime import flow_run

from flows.pipeline import built_stages, dvc
from tasks.workspace import Workspace, git, lock_hash

VALIDATION_REPORT = "data/reports/validation.json"


class PublishError(RuntimeError):
    """Publishing stopped; the message says at which step. Nothing was published."""


def _validated(ws: Workspace) -> dict:
    report_path = ws.root / VALIDATION_REPORT
    if not report_path.exists():
        raise PublishError("no validation report: run `mmfm validate` first (only a validated snapshot is published)")
    report = json.loads(report_path.read_text())
    if report.get("blocked"):
        raise PublishError(f"the last validation blocked the data: {'; '.join(report.get('messages', []))}")
    return report


@task(name="dvc-push", retries=3, retry_delay_seconds=[2, 5, 15])
def push(root: Path) -> None:
    dvc(root, "push")


def _restore(ws: Workspace, had_lock: bool) -> None:
    """Put dvc.lock and the git index back as they were at HEAD."""
    subprocess.run(["git", "reset", "-q"], cwd=ws.root, check=False)
    if had_lock:
        subprocess.run(["git", "checkout", "-q", "HEAD", "--", "dvc.lock"], cwd=ws.root, check=False)
    else:
        (ws.root / "dvc.lock").unlink(missing_ok=True)


@flow(name="version")
def version(workspace: Path, message: str = "", push_retries: int = 3) -> dict:
    from tasks.lineage import artifact_entry, record

    ws = Workspace(Path(workspace).resolve())
    report = _validated(ws)
    had_lock = bool(git(ws.root, "ls-files", "dvc.lock").strip())
    step = "dvc commit"
    try:
        dvc(ws.root, "commit", "--force", *built_stages(ws.root))
        governance = [d for d in (ws.quarantine, ws.reports) if d.exists() and any(d.iterdir())]
        if governance:  # quarantine records and reports travel with the dataset version they explain
            dvc(ws.root, "add", *(str(d.relative_to(ws.root)) for d in governance))
        curated = lock_hash(ws.root, "validate", "data/curated")
        if curated is None or report.get("staged_sha256") != artifact_entry(ws.staged, ws.root)["sha256"]:
            raise PublishError("the validation report does not describe the staged data now in the workspace: "
                               "run `mmfm validate` again")
        step = "dvc push"
        push.with_options(retries=push_retries)(ws.root)
        step = "git commit"
        git(ws.root, "add", "dvc.lock", "dvc.yaml", "params.yaml", ".gitignore",
            *(str(d.relative_to(ws.root)) + ".dvc" for d in governance))
        for ignore in ("data/.gitignore", "models/.gitignore"):  # DVC lists its outputs there
            if (ws.root / ignore).exists():
                git(ws.root, "add", ignore)
        contracts = report.get("contract_versions", {})
        text = message or f"dataset version: curated {curated[:12]}, contracts {json.dumps(contracts, sort_keys=True)}"
        git(ws.root, "commit", "-q", "--allow-empty", "-m", text)
    except Exception as exc:
        _restore(ws, had_lock)
        raise PublishError(f"publishing stopped at {step}; nothing was published ({exc})") from None
    rev = git(ws.root, "rev-parse", "HEAD").strip()
    dataset_version = f"{rev[:12]}-{curated[:12]}"
    event = record(ws, "version", str(flow_run.id or rev), inputs=[ws.curated],
                   params={"remote": "default"}, facts={"dataset_version": dataset_version, "git_rev": rev,
                                                        "curated_md5": curated, "contract_versions": contracts})
    return {"dataset_version": dataset_version, "git_rev": rev, "curated_md5": curated,
            "contract_versions": contracts, "lineage_event": event.event_id}


def run(workspace: Path) -> dict:
    return version(workspace)
