"""One protocol for every run of a stage that writes the workspace: recover -> run -> finish -> record -> clear.

    with stage_run(workspace, "pretrain") as run:              # workspace lock + MLflow outage policy + tracking URI
        attempt = run.attempt(run_key("pretrain", p, data.curated_md5), reuse=resume)   # recover
        if attempt.reused is None:                              # nothing finished by a killed run to reuse
            with attempt.mlflow_run("pretrain-tiny", tags) as mlrun:   # the run opens; the journal says so
                ...                                             # log, publish the outputs
                attempt.finish(summary, outputs=[backbone])     # finish: last statement inside the run
        event = run.record(inputs=..., outputs=..., params=p, facts=...)   # ledger event, then clear the journals

What is decided here, once, for pretrain, finetune, evaluate, register, promote, rollback, monitor and predict:
- the lock: the workspace's flock (tasks/workspace_lock.py; re-entrant, so `mmfm demo`/`pipeline` holding it can run
  any stage), taken before anything is read, held until the stage returns;
- the run key (`run_key`): what a reused run must match (stage, parameters, data hash);
- recovery (`StageRun.attempt`): one tasks/stage/journal.py journal per MLflow run of the stage (finetune: one per
  task); a run a kill left open is closed KILLED, a finished run whose ledger event is missing is reused;
- the ledger run id (`StageRun.record`): the stage's own id when it names one (register `NAME/VERSION`, promote, so a
  rerun records once), else the Prefect flow run's id, else (called outside a flow run) the stage's fallback
  (finetune: its run key; predict: its output's name) or the MLflow run id of its last attempt;
- the MLflow outage policy (tasks/tracking.py `tracking_errors`): a call that fails for want of a server raises
  `TrackingUnreachable`, one line naming the tracking URI, whichever stage made it.
Journals are cleared only after the ledger event is written: a kill in between leaves a journal the next run ignores
(an event names its run). Stages without an MLflow run of their own open no attempt: promote recovers from the
registry's pending-decision marker instead (tasks/registry/promotion.py: the decision is the registry's state),
register also from a version born incomplete (tasks/registry/staging.py), predict and rollback just record.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from prefect.runtime import flow_run

from tasks import tracking
from tasks.lineage import record
from tasks.stage.journal import RunJournal
from tasks.tracking import tracking_errors
from tasks.workspace import Workspace
from tasks.workspace_lock import workspace_lock

EXPERIMENT = "mmfm"  # the MLflow experiment of the model stages


def run_key(stage: str, params: dict, data: str) -> str:
    """A run belongs to one (stage, parameters, data) triple: a changed input never resumes or reuses a stale run."""
    text = json.dumps({"stage": stage, "params": params, "data": data}, sort_keys=True)
    return f"{stage}-{hashlib.sha256(text.encode()).hexdigest()[:16]}"


class Attempt:
    """One MLflow run of a stage, journaled from the moment it opens until the stage's ledger event."""

    def __init__(self, journal: RunJournal, reused: dict | None):
        self.journal = journal
        self.reused = reused  # the journal of a finished run a kill kept from its ledger event ({run_id, result})
        self.run_id: str | None = reused["run_id"] if reused else None

    @property
    def key(self) -> str:
        return self.journal.key

    @property
    def kept(self) -> Path:
        """The folder `finish(keep=...)` copied aside (finetune's adapter), for a reused run."""
        return self.journal.kept

    @property
    def result(self) -> dict | None:
        return self.reused["result"] if self.reused else None

    @contextmanager
    def mlflow_run(self, run_name: str, tags: dict[str, str], experiment: str = EXPERIMENT) -> Iterator:
        """Open the stage's MLflow run in the workspace's experiment and journal it as started."""
        root = self.journal.ws.root
        with tracking.start_run(root, experiment, run_name, tags) as run:  # dated from when the work began
            self.run_id = run.info.run_id
            self.journal.start(run.info.run_id)
            yield run

    def finish(self, result: dict, *, outputs: Iterable[Path] = (), keep: Path | None = None) -> None:
        """Everything is logged and published: the last statement inside `mlflow_run`."""
        self.journal.finish(result, outputs=outputs, keep=keep)


class StageRun:
    """A stage holding its workspace: open attempts, then `record` its one ledger event."""

    def __init__(self, ws: Workspace, stage: str):
        self.ws, self.stage = ws, stage
        self.attempts: list[Attempt] = []

    def attempt(self, key: str, name: str | None = None, *, reuse: bool = True) -> Attempt:
        """Recover the journal `name` (default: the stage's name): close a run a kill left open; -> an Attempt whose
        `reused` is the finished run to record instead of running again (None: run it)."""
        journal = RunJournal(self.ws, name or self.stage, self.stage, key)
        attempt = Attempt(journal, journal.recover(reuse=reuse))
        self.attempts.append(attempt)
        return attempt

    def ledger_run_id(self, fallback: str | None = None) -> str:
        """The Prefect flow run's id; outside one, `fallback` or the MLflow run id of the last attempt."""
        last = next((a.run_id for a in reversed(self.attempts) if a.run_id), None)
        return str(flow_run.id or fallback or last)

    def record(self, *, inputs: Iterable[Path] = (), outputs: Iterable[Path] = (), params: dict | None = None,
               facts: dict | None = None, run_id: str | None = None, fallback: str | None = None):
        """Append the stage's ledger event (once per run id), then forget its journals; -> the Event.

        `run_id`: the stage's own id for the event (register, promote); else `ledger_run_id(fallback)`."""
        event = record(self.ws, self.stage, run_id or self.ledger_run_id(fallback), inputs=inputs, outputs=outputs,
                       params=params, facts=facts)
        self.clear()
        return event

    def clear(self) -> None:
        """Recorded (or nothing to record): a later run of the stage starts afresh."""
        for attempt in self.attempts:
            attempt.journal.clear()


@contextmanager
def stage_run(workspace: Path | Workspace, stage: str, *, command: str | None = None) -> Iterator[StageRun]:
    """Hold the workspace lock and apply the MLflow outage policy for the block; MLflow points at the workspace."""
    ws = workspace if isinstance(workspace, Workspace) else Workspace(Path(workspace).resolve())
    with workspace_lock(ws.root, command=command or f"mmfm {stage}"), tracking_errors():
        tracking.configure(ws.root)
        yield StageRun(ws, stage)
