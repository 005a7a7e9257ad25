"""A workspace can be moved or copied (`cp -a`, `mv`, `shutil.copytree`) and keeps working, writing only into itself.

Why this module: MLflow's SQLite store records absolute artifact locations (each experiment's, each run's, each
logged model's and model version's), resolved once when they are created. A copied workspace would go on reading and
writing the artifacts of the folder it was copied from. MLflow has no relative location for a local store (its
`mlflow-artifacts:` scheme needs a tracking server, and a relative path is resolved against the process's working
directory), so the embedded store is rebased when a workspace opens it (tasks.tracking.configure): every location
recorded under another folder's `.mmfm/mlartifacts` is rewritten to this workspace's, in one transaction. The
original is never opened, so it stays untouched. A tracking server (MLFLOW_TRACKING_URI) is never rewritten.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

ARTIFACTS_TAIL = "/.mmfm/mlartifacts"  # settings.artifact_location ends so: the workspace's own artifact root
# every column of MLflow 3's schema that holds an artifact location (file:// URI) under the experiment's root
LOCATION_COLUMNS = (("experiments", "artifact_location"), ("runs", "artifact_uri"),
                    ("logged_models", "artifact_location"), ("model_versions", "storage_location"))


def _tables(con: sqlite3.Connection) -> set[str]:
    return {name for (name,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def recorded_roots(con: sqlite3.Connection) -> set[str]:
    """The artifact roots (`file:///.../.mmfm/mlartifacts`) the store's experiments were created under."""
    roots = set()
    for (location,) in con.execute("SELECT artifact_location FROM experiments"):
        if location and ARTIFACTS_TAIL in location:
            roots.add(location[:location.index(ARTIFACTS_TAIL) + len(ARTIFACTS_TAIL)])
    return roots


def rebase(db: Path, artifact_root: str) -> int:
    """Point every location the store `db` recorded under another workspace's artifact root at `artifact_root`
    (this workspace's `file://.../.mmfm/mlartifacts`); MLflow's Default experiment, created under the process's
    working directory, gets a folder inside it. -> rows rewritten (0: the store already belonged here)."""
    if not Path(db).exists():
        return 0
    con = sqlite3.connect(db, timeout=60)
    try:
        if "experiments" not in _tables(con):
            return 0
        changed = 0
        with con:  # one transaction: a kill leaves the store all old or all new
            present = _tables(con)
            for old in recorded_roots(con) - {artifact_root}:
                for table, column in LOCATION_COLUMNS:
                    if table in present:
                        changed += con.execute(
                            f"UPDATE {table} SET {column} = ? || substr({column}, ?) "  # noqa: S608 - fixed names
                            f"WHERE substr({column}, 1, ?) = ?",
                            (artifact_root, len(old) + 1, len(old), old)).rowcount
            changed += con.execute(
                "UPDATE experiments SET artifact_location = ? WHERE experiment_id = 0 "
                "AND substr(artifact_location, 1, ?) != ?",
                (f"{artifact_root}/0", len(artifact_root), artifact_root)).rowcount
        return changed
    finally:
        con.close()
