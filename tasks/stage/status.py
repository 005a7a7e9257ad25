"""Where a workspace's stages stand, as DVC records them: current, finished but not yet recorded, or built.

The stages and their deps and outs are read from the workspace's dvc.yaml (rendered from flows/pipeline.py STAGES by
`mmfm init`: the DAG's contract), so no stage list is written here; flows/pipeline.py alone orders them.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from tasks.lineage import Event, Ledger, canonical_json, describes
from tasks.vcs import dvc_run
from tasks.workspace import Workspace


def dvc_stages(root: Path) -> dict[str, dict[str, tuple[str, ...]]]:
    """{stage: {"deps": (...), "outs": (...)}} of the workspace's dvc.yaml, in its order."""
    path = Path(root) / "dvc.yaml"
    stages = (yaml.safe_load(path.read_text()) or {}).get("stages", {}) if path.exists() else {}

    def paths(entries: list) -> tuple[str, ...]:
        return tuple(e if isinstance(e, str) else next(iter(e)) for e in entries or ())

    return {name: {"deps": paths(s.get("deps")), "outs": paths(s.get("outs"))} for name, s in stages.items()}


def built_stages(root: Path) -> list[str]:
    """Stages whose outputs all exist in the workspace (only those can be recorded in dvc.lock)."""
    return [name for name, s in dvc_stages(root).items() if all((Path(root) / o).exists() for o in s["outs"])]


def stage_is_current(root: Path, name: str) -> bool:
    """DVC's answer: are the stage's recorded deps, params and outs unchanged? (never run -> False)"""
    status = json.loads(dvc_run(root, "status", name, "--json").stdout or "{}")
    return not status


def finished_unrecorded(root: Path, name: str) -> Event | None:
    """The stage's last ledger event when it describes the workspace as it is now (every dep and out with the hash
    it has now, run with the parameters params.yaml gives the stage now): the stage finished and a kill came before
    `dvc commit`, so DVC finds it out of date although running it again would only log a second run. None when any
    part differs, or the stage records its inputs otherwise (ingest names each extract's landing manifest; its
    rerun is a no-op of its own)."""
    events = [e for e in Ledger.of_workspace(root).events() if e.stage == name]
    stage = dvc_stages(root).get(name)
    if not events or stage is None:
        return None
    last = events[-1]
    same_params = canonical_json(last.params) == canonical_json(Workspace(root).section(name))
    return last if same_params and describes(last, root, inputs=stage["deps"], outputs=stage["outs"]) else None


def commit_if_finished(root: Path, name: str) -> Event | None:
    """`dvc commit` a stage DVC finds out of date whose last run finished (finished_unrecorded); -> that event."""
    event = finished_unrecorded(root, name)
    if event is not None:
        dvc_run(root, "commit", "--force", name)
    return event


def pending_ingest(root: Path) -> list[str]:
    """What ingest holds back for now, one line per site and reason ("N omics samples pending: patient not yet
    ingested (site X)"): samples that broke no rule and wait for the FHIR ingest of their patients."""
    from tasks.ingest.pending import pending_lines  # lazy: status is read by stages that never ingest
    from tasks.ingest.state import IngestState

    ws = Workspace(Path(root))
    return pending_lines(IngestState(ws.state)) if (ws.state / "ingest.db").exists() else []
