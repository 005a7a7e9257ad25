"""`mmfm version`: publish the validated curated snapshot as a dataset version, all or nothing.

Publishing means: DVC records the pipeline's outputs (`dvc commit`: hashes into dvc.lock, data into the cache),
pushes them to the remote (a local folder by default, S3/GCS/Azure by configuration), and git commits the DVC
metadata; the commit is the publication. Any failure puts dvc.lock, the .dvc and .gitignore files DVC writes and
the git index back to what they were before the attempt, so nothing half-published remains and a retry starts from
the same place (objects already pushed are unreferenced content-addressed blobs, harmless; DVC's partial `.tmp`
uploads in the remote are never read back). A full disk stops at once, naming the path, instead of being retried.
The workspace lock is held throughout, so no stage rewrites the data while it is being published.
Only a snapshot whose validation passed is published: the validation report must be unblocked and must describe
the staged data that is there now.

A dataset version is `<git rev>` of that commit, the DVC hash of data/curated and the contract versions it passed;
`dvc checkout` at that rev gives back its exact rows.

The commit is the publication, and its ledger event follows it: a kill between the two would lose the event. So the
commit carries what the event needs as trailers (`Mmfm-Curated-Md5`, `Mmfm-Contracts`), and every run first records
the event of a HEAD version commit that has none. A run with nothing new since HEAD's version commit publishes
nothing (no empty commit, no second event for the same data) and returns that version.
The steps are tasks.versioning.publish's; this file orders them.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, task
from prefect.runtime import flow_run

from flows.run_names import run_name
from tasks.faults import kill_point
from tasks.stage.status import built_stages
from tasks.versioning.publish import (
    NoSpaceLeft,
    PublishError,
    commit_data,
    dvc_checked,
    git_commit,
    head_unrecorded,
    record_head,
    record_version,
    restore,
    snapshot,
    stage_for_commit,
    validated,
    worth_retrying,
)
from tasks.workspace import Workspace
from tasks.workspace_lock import holds_workspace_lock

__all__ = ["NoSpaceLeft", "PublishError", "head_unrecorded", "push", "run", "version"]


@task(name="dvc-push", retries=3, retry_delay_seconds=[2, 5, 15], retry_condition_fn=worth_retrying)
def push(root: Path) -> None:
    dvc_checked(root, "push")


@flow(name="version", flow_run_name=run_name("version"))
@holds_workspace_lock("mmfm version")
def version(workspace: Path, message: str = "", push_retries: int = 3) -> dict:
    ws = Workspace(Path(workspace).resolve())
    head = record_head(ws, flow_run.id and str(flow_run.id))
    report = validated(ws)
    contracts = report.get("contract_versions", {})
    before = snapshot(ws)
    step = "dvc commit"
    try:
        curated, governance = commit_data(ws, report, built_stages(ws.root))
        step = "dvc push"
        push.with_options(retries=push_retries)(ws.root)
        step = "git commit"
        changed = stage_for_commit(ws, governance)
        if head is not None and head["contract_versions"] == contracts and not changed:  # HEAD is this version
            return {**head, "already_published": True}
        published = git_commit(ws, curated, contracts, message)
    except Exception as exc:
        restore(ws, before)
        raise PublishError(f"publishing stopped at {step}; nothing was published ({exc})") from None
    kill_point("version.after_commit")
    event = record_version(ws, published, str(flow_run.id or published["git_rev"]))
    return {**published, "lineage_event": event.event_id, "already_published": False}


def run(workspace: Path) -> dict:
    return version(workspace)
