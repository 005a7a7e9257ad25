"""The ledger itself: the SQLite `events` table, its append-only schema, the Event row, and `record` for stages.

    <workspace>/.mmfm/lineage.db   SQLite, table `events`, one row per finished stage run

Why here and nowhere else: this is the only module that writes the ledger. `Ledger.append` holds SQLite's write lock
while it reads the head and inserts, so every appender extends one chain; `record` is what a stage calls (paths in,
entries hashed, once per stage and run id); `describes` lets a rerun tell that its event is already written.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Iterable, Mapping
from contextlib import closing
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tasks.faults import kill_point
from tasks.lineage.hashing import _entries, _plain, artifact_entry, artifact_sha256, canonical_json, event_hash
from tasks.lineage.provenance import _now, code_version, default_actor
from tasks.workspace import Workspace

LEDGER_FILE = "lineage.db"
GENESIS = "0" * 64  # what the first event's prev_hash holds
BUSY_TIMEOUT_S = 60.0

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,   -- AUTOINCREMENT: sqlite_sequence then remembers deleted tail rows
    event_id TEXT NOT NULL UNIQUE,
    prev_hash TEXT NOT NULL UNIQUE,          -- one chain: two events can never claim the same predecessor
    hash TEXT NOT NULL UNIQUE,
    time TEXT NOT NULL, actor TEXT NOT NULL, stage TEXT NOT NULL, run_id TEXT NOT NULL,
    inputs TEXT NOT NULL, outputs TEXT NOT NULL, params TEXT NOT NULL, code_version TEXT NOT NULL,
    facts TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_stage_run ON events (stage, run_id);
CREATE TRIGGER IF NOT EXISTS events_no_update BEFORE UPDATE ON events
BEGIN SELECT RAISE(ABORT, 'lineage ledger is append-only: UPDATE refused'); END;
CREATE TRIGGER IF NOT EXISTS events_no_delete BEFORE DELETE ON events
BEGIN SELECT RAISE(ABORT, 'lineage ledger is append-only: DELETE refused'); END;
"""


@dataclass(frozen=True)
class Event:
    """One finished stage run. `seq` is the row's position and is not hashed: the chain itself fixes the order."""

    seq: int
    event_id: str
    prev_hash: str
    hash: str
    time: str
    actor: str
    stage: str
    run_id: str
    inputs: list[dict] = field(default_factory=list)
    outputs: list[dict] = field(default_factory=list)
    params: dict = field(default_factory=dict)
    code_version: str = ""
    facts: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def _running_code() -> str:
    return code_version()  # `append` has a parameter of the same name


def _event(row: sqlite3.Row | Mapping) -> Event:
    """Raises ValueError when a JSON column no longer parses (a hand-edited file)."""
    loaded = {k: json.loads(row[k]) for k in ("inputs", "outputs", "params", "facts")}
    plain = {k: row[k] for k in ("seq", "event_id", "prev_hash", "hash", "time", "actor", "stage", "run_id",
                                 "code_version")}
    return Event(**plain, **loaded)


class Ledger:
    """The append-only event table in one SQLite file. Every call opens its own connection, so a Ledger can be
    handed to threads, forked workers and Prefect tasks; nothing touches the disk until the first `append`."""

    def __init__(self, path: Path):
        self.path = Path(path)

    @classmethod
    def of_workspace(cls, root: Path) -> Ledger:
        return cls(Workspace(Path(root)).state / LEDGER_FILE)

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: transactions are ours (BEGIN IMMEDIATE), not the sqlite3 module's implicit ones.
        # The default rollback journal, not WAL: WAL needs shared memory, which a workspace on a network file system
        # (a GPU pool's shared volume) lacks, and switching a fresh file to WAL ignores the busy timeout.
        con = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        con.row_factory = sqlite3.Row
        return con

    def _readable(self) -> sqlite3.Connection | None:
        if not self.path.exists():
            return None
        con = self._connect()
        if con.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='events'").fetchone() is None:
            con.close()
            return None
        return con

    def append(self, stage: str, run_id: str, *, inputs: Iterable[Mapping] = (), outputs: Iterable[Mapping] = (),
               params: Mapping | None = None, facts: Mapping | None = None, actor: str | None = None,
               code_version: str | None = None, once: bool = False) -> Event:
        """Add one event at the head of the chain and return it.

        BEGIN IMMEDIATE takes SQLite's write lock before the head is read, so concurrent appenders (other processes,
        other machines on one file system with working locks) queue up and extend one chain. With `once=True` an
        event already recorded for (stage, run_id) is returned instead, checked under the same lock, so a retried
        or rerun task does not record itself twice. `params`/`facts`: settings and counts only, never data values.

        A process killed mid-append (`kill -9`, power loss) leaves no torn or half-chained row: the row becomes
        visible only at COMMIT, and SQLite rolls an interrupted transaction back (its hot journal) the next time
        the file is opened. tests/reliability/test_kill_resume.py kills an appender between INSERT and COMMIT.
        """
        if not stage or not run_id:
            raise ValueError("an event needs a stage and a run_id")
        body = {"stage": stage, "run_id": str(run_id), "inputs": _entries(inputs), "outputs": _entries(outputs),
                "params": _plain(params, "params"), "facts": _plain(facts, "facts"),
                "actor": actor or default_actor(), "code_version": code_version or _running_code()}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with closing(self._connect()) as con:
            con.executescript(SCHEMA)
            con.execute("BEGIN IMMEDIATE")
            try:
                event = (once and self._find(con, stage, str(run_id))) or self._insert(con, body)
                kill_point("lineage.mid_append")
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
        return event

    @staticmethod
    def _insert(con: sqlite3.Connection, body: dict) -> Event:
        head = con.execute("SELECT hash FROM events ORDER BY seq DESC LIMIT 1").fetchone()
        body = {**body, "event_id": uuid.uuid4().hex, "prev_hash": head[0] if head else GENESIS, "time": _now()}
        row = {k: canonical_json(v) if k in ("inputs", "outputs", "params", "facts") else v for k, v in body.items()}
        row["hash"] = event_hash(body)
        cols = ", ".join(row)
        cur = con.execute(f"INSERT INTO events ({cols}) VALUES ({', '.join('?' * len(row))})", tuple(row.values()))
        return Event(seq=cur.lastrowid, hash=row["hash"], **body)

    @staticmethod
    def _find(con: sqlite3.Connection, stage: str, run_id: str) -> Event | None:
        row = con.execute("SELECT * FROM events WHERE stage = ? AND run_id = ? ORDER BY seq DESC LIMIT 1",
                          (stage, run_id)).fetchone()
        return _event(row) if row else None

    def find(self, stage: str, run_id: str) -> Event | None:
        """The latest event of `stage` for `run_id`, so a rerun can tell it was already recorded."""
        con = self._readable()
        if con is None:
            return None
        with closing(con):
            return self._find(con, stage, str(run_id))

    def rows(self) -> list[dict]:
        """Raw rows in storage order (JSON columns unparsed): what `verify` checks."""
        con = self._readable()
        if con is None:
            return []
        with closing(con):
            return [dict(r) for r in con.execute("SELECT * FROM events ORDER BY seq")]

    def events(self) -> list[Event]:
        return [_event(r) for r in self.rows()]

    def head(self) -> str:
        """The hash of the last event (GENESIS when empty). Record it elsewhere (a git tag, an MLflow run tag) and
        pass it to `verify(anchor=...)`: that is what catches a rewritten or truncated tail."""
        rows = self.rows()
        return rows[-1]["hash"] if rows else GENESIS

    def guards(self) -> tuple[int, bool]:
        """(largest seq ever handed out, append-only triggers present). sqlite_sequence keeps the largest seq after
        the last rows are deleted, which is how `verify` notices a cut tail without an anchor."""
        con = self._readable()
        if con is None:
            return 0, True
        with closing(con):
            row = con.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchone()
            names = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")}
        return (int(row[0]) if row else 0), {"events_no_update", "events_no_delete"} <= names


def record(ws, stage: str, run_id: str, *, inputs: Iterable[Path | Mapping] = (),
           outputs: Iterable[Path | Mapping] = (), params: Mapping | None = None,
           facts: Mapping | None = None) -> Event:
    """Append one stage's event to the workspace ledger, naming files by workspace-relative URI and content hash.

    `ws` is a tasks.workspace.Workspace. Once per (stage, run id): a retried flow run does not add a second event.
    An input or output is a path (hashed here; skipped when absent) or a ready {uri, sha256} entry naming something
    outside the tree (`models:/NAME/VERSION` with its artifact manifest's sha256: promote, rollback, predict).
    Callers pass counts and settings in params/facts, never values from the data.
    """
    def entries(items: Iterable[Path | Mapping]) -> list[dict]:
        return [dict(p) if isinstance(p, Mapping) else artifact_entry(Path(p), ws.root)
                for p in items if isinstance(p, Mapping) or Path(p).exists()]

    return Ledger.of_workspace(ws.root).append(stage, run_id, inputs=entries(inputs), outputs=entries(outputs),
                                               params=dict(params or {}), facts=dict(facts or {}), once=True)


def describes(event: Event, root: Path, *, inputs: Iterable[str], outputs: Iterable[str]) -> bool:
    """Does `event` name each of these workspace-relative inputs and outputs with the content it has now?"""
    named = {"inputs": {e["uri"]: e["sha256"] for e in event.inputs},
             "outputs": {e["uri"]: e["sha256"] for e in event.outputs}}
    for side, uris in (("inputs", inputs), ("outputs", outputs)):
        for uri in uris:
            path = Path(root) / uri
            if uri not in named[side] or not path.exists() or artifact_sha256(path) != named[side][uri]:
                return False
    return True
