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
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from prefect import flow, task
from prefect.runtime import flow_run

from flows.pipeline import built_stages
from tasks.vcs import dvc_run, git
from tasks.workspace import Workspace, lock_hash
from tasks.workspace_lock import holds_workspace_lock

VALIDATION_REPORT = "data/reports/validation.json"
# files a publishing attempt may write besides the DVC cache and remote (dvc commit, dvc add, core.autostage)
TOUCHED = ("dvc.lock", ".gitignore", "data/.gitignore", "models/.gitignore", "data/quarantine.dvc",
           "data/reports.dvc")
NO_SPACE = re.compile(r"No space left on device: (?:'[^']*' -> )?'([^']*)'")


class PublishError(RuntimeError):
    """Publishing stopped; the message says at which step. Nothing was published."""


class NoSpaceLeft(PublishError):
    """A disk filled up under the DVC cache or remote: retrying cannot help until space is freed."""


def _dvc(root: Path, *args: str) -> None:
    """dvc, with ENOSPC told apart: DVC reports it per file, then only "N files failed to upload" at the end."""
    done = dvc_run(root, *args, check=False)
    if done.returncode == 0:
        return
    full = NO_SPACE.search(done.stderr)
    if full:
        path = full.group(1).split("/files/md5/")[0]  # the cache's or the remote's root, not one object
        where = "the DVC cache" if args[0] in ("commit", "add") else "the DVC remote"
        raise NoSpaceLeft(f"no space left on device at {path} ({where}): free space there (or point the remote "
                          "elsewhere) and run `mmfm version` again")
    raise RuntimeError(f"dvc {' '.join(args)} failed: {done.stderr.strip().splitlines()[-1:]}")


def _worth_retrying(task, task_run, state) -> bool:
    try:
        state.result()
    except NoSpaceLeft:
        return False
    except Exception:  # noqa: BLE001 - anything else may be a passing network fault
        return True
    return False


def _validated(ws: Workspace) -> dict:
    report_path = ws.root / VALIDATION_REPORT
    if not report_path.exists():
        raise PublishError("no validation report: run `mmfm validate` first (only a validated snapshot is published)")
    report = json.loads(report_path.read_text())
    if report.get("blocked"):
        raise PublishError(f"the last validation blocked the data: {'; '.join(report.get('messages', []))}")
    return report


@task(name="dvc-push", retries=3, retry_delay_seconds=[2, 5, 15], retry_condition_fn=_worth_retrying)
def push(root: Path) -> None:
    _dvc(root, "push")


def _snapshot(ws: Workspace) -> tuple[str, dict[str, bytes | None]]:
    """The git index (as a tree) and the files an attempt may touch, so a failure can put them back exactly."""
    files = {name: (ws.root / name).read_bytes() if (ws.root / name).exists() else None for name in TOUCHED}
    return git(ws.root, "write-tree").strip(), files


def _restore(ws: Workspace, before: tuple[str, dict[str, bytes | None]]) -> None:
    """Put the git index and the touched files back as they were before the attempt."""
    tree, files = before
    for name, content in files.items():
        path = ws.root / name
        if content is None:
            path.unlink(missing_ok=True)
        else:
            path.write_bytes(content)
    git(ws.root, "read-tree", tree)


CURATED_TRAILER, CONTRACTS_TRAILER = "Mmfm-Curated-Md5", "Mmfm-Contracts"


def _head_version(ws: Workspace) -> dict | None:
    """HEAD's dataset version, read from its commit's trailers; None when HEAD is not a version commit (or there is
    no commit yet)."""
    try:
        rev, message = git(ws.root, "log", "-1", "--format=%H%n%B").split("\n", 1)
    except RuntimeError:
        return None
    trailers = dict(line.split(": ", 1) for line in message.splitlines() if line.startswith("Mmfm-") and ": " in line)
    if CURATED_TRAILER not in trailers:
        return None
    curated = trailers[CURATED_TRAILER]
    return {"dataset_version": f"{rev[:12]}-{curated[:12]}", "git_rev": rev, "curated_md5": curated,
            "contract_versions": json.loads(trailers.get(CONTRACTS_TRAILER, "{}"))}


def _version_event(ws: Workspace, rev: str):
    from tasks.lineage import Ledger

    return next((e for e in Ledger.of_workspace(ws.root).events()
                 if e.stage == "version" and (e.facts or {}).get("git_rev") == rev), None)


def _record(ws: Workspace, published: dict, run_id: str, **extra):
    """The version's ledger event; data/curated is named as its input only while it still holds that version's data
    (the input's hash is what links the event to the validate run that wrote it)."""
    from tasks.lineage import record

    facts = {k: published[k] for k in ("dataset_version", "git_rev", "curated_md5", "contract_versions")}
    current = lock_hash(ws.root, "validate", "data/curated") == published["curated_md5"]
    return record(ws, "version", run_id, inputs=[ws.curated] if current else [], params={"remote": "default"},
                  facts={**facts, **extra})


def head_unrecorded(root: Path) -> bool:
    """Is HEAD a dataset version commit without its ledger event? (a caller that decides whether to run `version`,
    like the demo, runs it then: the run records the event)"""
    ws = Workspace(Path(root).resolve())
    head = _head_version(ws)
    return head is not None and _version_event(ws, head["git_rev"]) is None


def _record_head(ws: Workspace) -> dict | None:
    """HEAD's dataset version, its ledger event recorded now if the run that committed it was killed before."""
    head = _head_version(ws)
    if head is None:
        return None
    event = _version_event(ws, head["git_rev"])
    if event is None:
        event = _record(ws, head, str(flow_run.id or head["git_rev"]), recorded_after_interruption=True)
    return {**head, "lineage_event": event.event_id}


@flow(name="version")
@holds_workspace_lock("mmfm version")
def version(workspace: Path, message: str = "", push_retries: int = 3) -> dict:
    from tasks.faults import kill_point
    from tasks.lineage import artifact_entry

    ws = Workspace(Path(workspace).resolve())
    head = _record_head(ws)
    report = _validated(ws)
    before = _snapshot(ws)
    step = "dvc commit"
    try:
        _dvc(ws.root, "commit", "--force", *built_stages(ws.root))
        governance = [d for d in (ws.quarantine, ws.reports) if d.exists() and any(d.iterdir())]
        if governance:  # quarantine records and reports travel with the dataset version they explain
            _dvc(ws.root, "add", *(str(d.relative_to(ws.root)) for d in governance))
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
        if head is not None and head["contract_versions"] == contracts and not _staged_changes(ws):  # HEAD is it
            return {**head, "already_published": True}
        text = message or f"dataset version: curated {curated[:12]}, contracts {json.dumps(contracts, sort_keys=True)}"
        trailers = f"{CURATED_TRAILER}: {curated}\n{CONTRACTS_TRAILER}: {json.dumps(contracts, sort_keys=True)}"
        git(ws.root, "commit", "-q", "--allow-empty", "-m", text, "-m", trailers)
    except Exception as exc:
        _restore(ws, before)
        raise PublishError(f"publishing stopped at {step}; nothing was published ({exc})") from None
    kill_point("version.after_commit")
    rev = git(ws.root, "rev-parse", "HEAD").strip()
    published = {"dataset_version": f"{rev[:12]}-{curated[:12]}", "git_rev": rev, "curated_md5": curated,
                 "contract_versions": contracts}
    event = _record(ws, published, str(flow_run.id or rev))
    return {**published, "lineage_event": event.event_id, "already_published": False}


def _staged_changes(ws: Workspace) -> bool:
    """Does the git index differ from HEAD? (after `git add`: is there anything to publish?)"""
    return bool(git(ws.root, "diff", "--cached", "--name-only").strip())


def run(workspace: Path) -> dict:
    return version(workspace)
