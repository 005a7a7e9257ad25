"""The validate stage's work around the contracts: staged tables with each patient's split, the curated snapshot
swapped in whole, the validation report, and DVC's record of what was published.

data/curated/ is written as a fresh hidden folder and swapped in (tasks.atomic.replace_dir), so a reader (or a kill)
sees the old snapshot or the new one, never half of each.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from urllib.parse import unquote, urlsplit

import polars as pl

from tasks.atomic import fresh_dir, replace_dir, write_json
from tasks.ingest.staged import read_table
from tasks.validation.splits import assign_splits
from tasks.vcs import dvc_run
from tasks.workspace import Workspace

TABLES = ("patients", "encounters", "labs", "conditions", "notes", "imaging", "omics", "omics_features", "events",
          "objects")


class ValidationBlocked(RuntimeError):
    """A `fail` rule was broken; the message names table, rule and count."""


def quarantine_name(staged_sha: str) -> str:
    """The quarantine file's name: the staged data it was found in, not the run, so a rerun over the same staged
    data (after a kill before the run's ledger event) finds its file instead of adding a second copy."""
    return f"validate-{staged_sha[:16]}"


def staged_tables(ws: Workspace, fractions: dict[str, float]) -> dict[str, pl.DataFrame]:
    """The staged tables, each patient's rows carrying the patient's one split (assigned by patient, never by row)."""
    tables = {name: read_table(ws.staged, name) for name in TABLES}
    cohort = pl.read_parquet(ws.staged / "cohort.parquet") if (ws.staged / "cohort.parquet").exists() else None
    if cohort is not None:
        tables["cohort"] = assign_splits(cohort, fractions)
        split = tables["cohort"].select("patient_id", "split")
        for name, frame in tables.items():
            if name != "cohort" and "patient_id" in frame.columns and "split" not in frame.columns:
                tables[name] = frame.join(split, on="patient_id", how="left")
    return {k: v for k, v in tables.items() if v.height or v.width}


def publish_curated(ws: Workspace, clean: dict[str, pl.DataFrame]) -> dict[str, int]:
    """Write the curated tables with the image shards their imaging rows use, swapped in whole; -> rows per table."""
    tmp = fresh_dir(ws.curated)
    for name, frame in clean.items():
        frame.write_parquet(tmp / f"{name}.parquet")
    if "imaging" in clean and clean["imaging"].height:
        (tmp / "images").mkdir()
        for shard in sorted(set(clean["imaging"]["shard"].drop_nulls())):
            src, dst = ws.root / shard, tmp / "images" / Path(shard).name
            try:
                os.link(src, dst)
            except OSError:
                shutil.copyfile(src, dst)
    replace_dir(tmp, ws.curated)
    return {name: frame.height for name, frame in clean.items()}


def write_report(ws: Workspace, summary: dict) -> Path:
    """The validation report (what `mmfm version`, the registry and the audit read), written atomically. Paths to
    files of the workspace are written relative to its root, so a moved or copied workspace's report names its own
    files (and a registered model's copy of the report names no folder of the machine)."""
    portable = {**summary, "artifacts": {k: workspace_relative(ws, v)
                                         for k, v in (summary.get("artifacts") or {}).items()}}
    return write_json(ws.validation_report, portable)


def workspace_relative(ws: Workspace, location: str) -> str:
    """`location` (a path or file:// URI) relative to the workspace root when it lies inside it, else unchanged."""
    text = str(location)
    path = Path(unquote(urlsplit(text).path)) if text.startswith("file://") else Path(text)
    try:
        return path.resolve().relative_to(ws.root.resolve()).as_posix()
    except ValueError:
        return text


def record_in_dvc(ws: Workspace) -> None:
    """Have DVC record the published snapshot's hashes (dvc.lock) and files (cache): what the model stages check."""
    if (ws.root / "dvc.yaml").exists() and (ws.root / ".dvc").is_dir():
        dvc_run(ws.root, "commit", "--force", "validate")
