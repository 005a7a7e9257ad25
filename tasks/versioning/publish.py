"""Publishing a dataset version, step by step: dvc commit, dvc push, git commit, and the ledger event after.

Any failure before the commit puts dvc.lock, the .dvc and .gitignore files DVC writes and the git index back to
what they were (snapshot/restore), so nothing half-published remains and a retry starts from the same place. A full
disk is told apart (NoSpaceLeft) so it stops at once instead of being retried.
The commit is the publication, and its ledger event follows it: a kill between the two would lose the event. So the
commit carries what the event needs as trailers (`Mmfm-Curated-Md5`, `Mmfm-Contracts`), and record_head() records
the event of a HEAD version commit that has none.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import polars as pl
import yaml

from tasks.lineage import artifact_entry, record
from tasks.vcs import dvc_run, git
from tasks.versioning.dataset import find
from tasks.workspace import Workspace, lock_hash

# files a publishing attempt may write besides the DVC cache and remote (dvc commit, dvc add, core.autostage)
TOUCHED = ("dvc.lock", ".gitignore", "data/.gitignore", "models/.gitignore", "data/quarantine.dvc",
           "data/reports.dvc")
NO_SPACE = re.compile(r"No space left on device: (?:'[^']*' -> )?'([^']*)'")
CURATED_TRAILER, CONTRACTS_TRAILER = "Mmfm-Curated-Md5", "Mmfm-Contracts"
Snapshot = tuple[str, dict[str, bytes | None]]


REQUIRED_TABLES = ("patients", "cohort")  # a version without patients trains nothing and splits nobody


class PublishError(RuntimeError):
    """Publishing stopped; the message says at which step. Nothing was published."""


class NoSpaceLeft(PublishError):
    """A disk filled up under the DVC cache or remote: retrying cannot help until space is freed."""


def dvc_checked(root: Path, *args: str) -> None:
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


def worth_retrying(task, task_run, state) -> bool:
    """Prefect `retry_condition_fn` of the push: anything but a full disk may be a passing network fault."""
    try:
        state.result()
    except NoSpaceLeft:
        return False
    except Exception:  # noqa: BLE001 - anything else may be a passing network fault
        return True
    return False


def validated(ws: Workspace) -> dict:
    """The validation report, refusing a missing or blocked one (only a validated snapshot is published)."""
    if not ws.validation_report.exists():
        raise PublishError("no validation report: run `mmfm validate` first (only a validated snapshot is published)")
    report = json.loads(ws.validation_report.read_text())
    if report.get("blocked"):
        raise PublishError(f"the last validation blocked the data: {'; '.join(report.get('messages', []))}")
    for table in REQUIRED_TABLES:
        if curated_rows(ws, table) == 0:
            raise PublishError(f"data/curated/{table}.parquet has no rows: a dataset version without {table} is "
                               "refused (did validation quarantine every row? see data/reports/validation.json)")
    return report


def curated_rows(ws: Workspace, table: str) -> int:
    """Rows of one curated table (0 when it is missing), read from the parquet footer, not the data."""
    path = ws.curated / f"{table}.parquet"
    return pl.scan_parquet(path).select(pl.len()).collect().item() if path.exists() else 0


def snapshot(ws: Workspace) -> Snapshot:
    """The git index (as a tree) and the files an attempt may touch, so a failure can put them back exactly."""
    files = {name: (ws.root / name).read_bytes() if (ws.root / name).exists() else None for name in TOUCHED}
    return git(ws.root, "write-tree").strip(), files


def restore(ws: Workspace, before: Snapshot) -> None:
    """Put the git index and the touched files back as they were before the attempt."""
    tree, files = before
    for name, content in files.items():
        path = ws.root / name
        if content is None:
            path.unlink(missing_ok=True)
        else:
            path.write_bytes(content)
    git(ws.root, "read-tree", tree)


def commit_data(ws: Workspace, report: dict, stages: list[str]) -> tuple[str, list[Path]]:
    """`dvc commit` the built stages and `dvc add` the governance folders (quarantine records and reports travel
    with the dataset version they explain); -> (data/curated's md5, the governance folders added)."""
    dvc_checked(ws.root, "commit", "--force", *stages)
    governance = [d for d in (ws.quarantine, ws.reports) if d.exists() and any(d.iterdir())]
    if governance:
        dvc_checked(ws.root, "add", *(str(d.relative_to(ws.root)) for d in governance))
    curated = lock_hash(ws.root, "validate", "data/curated")
    if curated is None or report.get("staged_sha256") != artifact_entry(ws.staged, ws.root)["sha256"]:
        raise PublishError("the validation report does not describe the staged data now in the workspace: run "
                           "`mmfm validate` again")
    return curated, governance


def stage_for_commit(ws: Workspace, governance: list[Path]) -> bool:
    """`git add` the DVC metadata; -> whether the index now differs from HEAD (anything to publish)."""
    git(ws.root, "add", "dvc.lock", "dvc.yaml", "params.yaml", ".gitignore",
        *(str(d.relative_to(ws.root)) + ".dvc" for d in governance))
    for ignore in ("data/.gitignore", "models/.gitignore"):  # DVC lists its outputs there
        if (ws.root / ignore).exists():
            git(ws.root, "add", ignore)
    return bool(git(ws.root, "diff", "--cached", "--name-only").strip())


def git_commit(ws: Workspace, curated: str, contracts: dict, message: str = "") -> dict:
    """The publication: a commit whose trailers name the version; -> the published version's facts."""
    text = message or f"dataset version: curated {curated[:12]}, contracts {json.dumps(contracts, sort_keys=True)}"
    trailers = f"{CURATED_TRAILER}: {curated}\n{CONTRACTS_TRAILER}: {json.dumps(contracts, sort_keys=True)}"
    git(ws.root, "commit", "-q", "--allow-empty", "-m", text, "-m", trailers)
    rev = git(ws.root, "rev-parse", "HEAD").strip()
    return {"dataset_version": f"{rev[:12]}-{curated[:12]}", "git_rev": rev, "curated_md5": curated,
            "contract_versions": contracts}


def head_version(ws: Workspace) -> dict | None:
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


def _event_of(ws: Workspace, rev: str) -> str | None:
    """The id of the `version` ledger event of the commit `rev`, None when it has none."""
    version = find(ws.root, rev)
    return version.event_id if version is not None and version.git_rev == rev else None


def record_version(ws: Workspace, published: dict, run_id: str, **extra):
    """The version's ledger event; data/curated is named as its input only while it still holds that version's data
    (the input's hash is what links the event to the validate run that wrote it)."""
    facts = {k: published[k] for k in ("dataset_version", "git_rev", "curated_md5", "contract_versions")}
    current = lock_hash(ws.root, "validate", "data/curated") == published["curated_md5"]
    return record(ws, "version", run_id, inputs=[ws.curated] if current else [], params={"remote": "default"},
                  facts={**facts, **extra})


def head_unrecorded(root: Path) -> bool:
    """Is HEAD a dataset version commit without its ledger event? (a caller that decides whether to run `version`,
    like the demo, runs it then: the run records the event)"""
    ws = Workspace(Path(root).resolve())
    head = head_version(ws)
    return head is not None and _event_of(ws, head["git_rev"]) is None


def record_head(ws: Workspace, run_id: str | None) -> dict | None:
    """HEAD's dataset version, its ledger event recorded now if the run that committed it was killed before."""
    head = head_version(ws)
    if head is None:
        return None
    event_id = _event_of(ws, head["git_rev"])
    if event_id is None:
        event_id = record_version(ws, head, run_id or head["git_rev"], recorded_after_interruption=True).event_id
    return {**head, "lineage_event": event_id}


def unpublished(root: Path, stages: tuple[str, ...]) -> bool:
    """Do the data stages' entries in dvc.lock differ from the last commit's? (a run killed inside `version`
    leaves them recorded but not published, and the rerun finds nothing to run: it must still publish)"""
    def entries(text: str | None) -> dict:
        stages_now = (yaml.safe_load(text) or {}).get("stages", {}) if text else {}
        return {s: stages_now.get(s) for s in stages}

    lock = root / "dvc.lock"
    try:
        committed = git(root, "show", "HEAD:dvc.lock")
    except RuntimeError:  # never published
        committed = None
    return entries(lock.read_text() if lock.exists() else None) != entries(committed)
