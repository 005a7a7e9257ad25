"""What one MLflow run of a stage reached, kept from its start until the stage's ledger event, so a kill in between
costs neither a second finished run nor an orphan shown as running forever.

    <workspace>/.mmfm/runs/<name>/journal.json   {stage, key, run_id, state: running | finished, result, outputs}
    <workspace>/.mmfm/runs/<name>/kept/          (optional) a copy of what the run produced, for a stage that
                                                 rebuilds its output folder on every run (finetune's adapters)

A stage writes `start(run_id)` as its run opens and `finish(...)` as the last statement inside it (everything is
logged, the outputs are in place), records its ledger event, then `clear()`s. The next run of the stage calls
`recover()` first:
- `running`: the run was killed before it finished: marked KILLED in MLflow (tag `mmfm.interrupted`), not reused;
- `finished`, same key (stage, parameters, data), outputs unchanged and no ledger event of the stage names the run:
  the run is complete and only its event is missing: it is returned for reuse (and marked FINISHED when the kill
  came before MLflow's end of run). Anything else is stale and forgotten.
The window left: a kill between MLflow creating the run and `start()` (one local write) leaves that run RUNNING.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable
from pathlib import Path

import mlflow

from tasks import tags, tracking
from tasks.atomic import fresh_dir, replace_dir, write_text
from tasks.lineage import Ledger, artifact_entry, artifact_sha256
from tasks.workspace import Workspace

INTERRUPTED_TAG = tags.INTERRUPTED


class RunJournal:
    def __init__(self, ws: Workspace, name: str, stage: str, key: str):
        """`name` is unique per run within a stage (`finetune-risk`), `stage` the ledger's stage name, `key` what
        the run depends on (stage, parameters, data hash: tasks.stage.run.run_key). Stages use it through
        tasks/stage/run.py (StageRun.attempt), which also decides when it is cleared."""
        self.ws, self.stage, self.key = ws, stage, key
        self.dir = ws.state / "runs" / name
        self.file = self.dir / "journal.json"

    @property
    def kept(self) -> Path:
        return self.dir / "kept"

    def _read(self) -> dict | None:
        try:
            return json.loads(self.file.read_text())
        except (FileNotFoundError, json.JSONDecodeError):  # never written, or torn by a kill mid-write (not reusable)
            return None

    def _write(self, body: dict) -> None:
        write_text(self.file, json.dumps(body, default=str))

    def start(self, run_id: str) -> None:
        self.clear()
        self._write({"stage": self.stage, "key": self.key, "run_id": run_id, "state": "running"})

    def finish(self, result: dict, *, outputs: Iterable[Path] = (), keep: Path | None = None) -> None:
        """The run holds everything: `result` is what the stage returns, `outputs` the workspace paths it produced
        (checked unchanged before reuse), `keep` a folder copied aside for reuse."""
        body = self._read() or {}
        if keep is not None:
            incoming = fresh_dir(self.kept)
            shutil.copytree(keep, incoming, dirs_exist_ok=True)
            replace_dir(incoming, self.kept)
        entries = [artifact_entry(p, self.ws.root) for p in outputs]
        self._write({**body, "state": "finished", "result": result, "outputs": entries})

    def clear(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    def recover(self, reuse: bool = True) -> dict | None:
        """Close what a killed run left open; -> the journal of a finished run to reuse (`result`, `run_id`)."""
        body = self._read()
        if body is None:
            self.clear()
            return None
        finished = body.get("state") == "finished"
        _close_run(self.ws.root, body["run_id"], "FINISHED" if finished else "KILLED")
        if finished and reuse and body.get("key") == self.key and self._outputs_unchanged(body) \
                and not self._recorded(body["run_id"]):
            return body
        self.clear()
        return None

    def _outputs_unchanged(self, body: dict) -> bool:
        for entry in body.get("outputs", []):
            path = self.ws.root / entry["uri"]
            if not path.exists() or artifact_sha256(path) != entry["sha256"]:
                return False
        return True

    def _recorded(self, run_id: str) -> bool:
        """Does a ledger event of this stage name the run? (the stage finished; the journal is left over)"""
        for event in Ledger.of_workspace(self.ws.root).events():
            facts = event.facts or {}
            named = {facts.get("mlflow_run_id"), *(facts.get("mlflow_run_ids") or {}).values()}
            if event.stage == self.stage and run_id in named:
                return True
        return False


def _close_run(root: Path, run_id: str, status: str) -> None:
    """End a run a kill left RUNNING: KILLED when it had not finished, FINISHED when only MLflow's end was missing."""
    tracking.configure(root)
    client = mlflow.MlflowClient()
    try:
        run = client.get_run(run_id)
    except mlflow.exceptions.MlflowException:  # deleted, or on another tracking server: nothing to close here
        return
    if run.info.status == "RUNNING":
        if status == "KILLED":
            client.set_tag(run_id, INTERRUPTED_TAG, "true")
        client.set_terminated(run_id, status=status)
