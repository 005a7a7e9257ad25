"""The lineage ledger: one append-only, hash-chained table of what every stage read and wrote (DESIGN.md §3).

    <workspace>/.mmfm/lineage.db   SQLite, table `events`, one row per finished stage run

Each row carries `prev_hash` (the previous row's `hash`) and `hash = sha256(canonical JSON of the row)`, the first
row chaining to GENESIS. Editing, deleting, inserting or reordering a row therefore breaks the chain and `verify`
says where. SQLite triggers refuse UPDATE and DELETE, so history can only be changed by editing the file by hand,
which `verify` then detects. Artifacts are named by workspace-relative URI + sha256 and `verify` re-hashes them,
catching an in-place byte flip that keeps size and mtime (which `dvc status`, trusting mtime, does not notice).

No PHI, ever. URIs are workspace-relative paths (landing names files by content address, not by original name) and
hashes are one-way. `params` and `facts` hold settings and aggregate counts; callers must never put data values in
them (identifiers, names, patient dates, free text): the ledger is append-only, so PHI written there could not be
removed without breaking the chain. OpenLineage export (for Marquez) is in `tasks.openlineage`.
"""

from __future__ import annotations

import functools
import getpass
import hashlib
import importlib.metadata
import json
import os
import re
import sqlite3
import subprocess
import uuid
from collections import deque
from collections.abc import Iterable, Mapping
from contextlib import closing
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from tasks.faults import kill_point
from tasks.ingest.landing import sha256_file
from tasks.workspace import Workspace

LEDGER_FILE = "lineage.db"
GENESIS = "0" * 64  # what the first event's prev_hash holds
TREE_HASH_HEADER = b"mmfm-tree-v1\n"  # keeps a folder's hash from ever equalling a file's
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
BUSY_TIMEOUT_S = 60.0
HASHED = ("event_id", "prev_hash", "time", "actor", "stage", "run_id", "inputs", "outputs", "params", "code_version",
          "facts")
SHA_RE = re.compile(r"[0-9a-f]{64}")
SCHEME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:")  # models:/x/3, s3://b/k ; one letter would be a drive (C:)

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


def canonical_json(obj: object) -> str:
    """The one serialisation that is hashed: sorted keys, no spaces, UTF-8, no NaN (not JSON, and not stable)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def event_hash(body: Mapping) -> str:
    return hashlib.sha256(canonical_json({k: body[k] for k in HASHED}).encode()).hexdigest()


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


# --- artifacts ------------------------------------------------------------------------------------------------------

def tree_sha256(directory: Path) -> str:
    """A folder's content hash, deterministic across machines and independent of mtimes and listing order.

    sha256 of `mmfm-tree-v1\\n` followed, for every file under the folder sorted by its POSIX path relative to the
    folder, by the line `<relative path>\\0<sha256 of the file>\\n`. Names and bytes count; mtimes, modes and empty
    folders do not. Hidden entries (any path part starting with '.') are skipped so the temporary files of an atomic
    write (`.incoming-*`) and OS litter never change a table's or shard folder's hash.
    """
    directory = Path(directory)
    files = []
    for dirpath, dirnames, filenames in os.walk(directory):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if not name.startswith("."):
                path = Path(dirpath) / name
                files.append((path.relative_to(directory).as_posix(), path))
    h = hashlib.sha256(TREE_HASH_HEADER)
    for rel, path in sorted(files, key=lambda t: t[0]):
        h.update(f"{rel}\0{sha256_file(path)}\n".encode())
    return h.hexdigest()


def artifact_sha256(path: Path) -> str:
    """sha256 of a file's bytes, or `tree_sha256` of a folder (a table of parquet parts, a shard folder)."""
    return tree_sha256(path) if Path(path).is_dir() else sha256_file(path)


def artifact_entry(path: Path, root: Path) -> dict:
    """{uri, sha256} naming `path` inside workspace `root`; the URI is relative so no host path reaches the ledger."""
    abs_path, abs_root = Path(os.path.abspath(path)), Path(os.path.abspath(root))
    if not abs_path.is_relative_to(abs_root):
        raise ValueError(f"{path} is outside the workspace {root}: the ledger only names workspace-relative paths")
    return {"uri": abs_path.relative_to(abs_root).as_posix(), "sha256": artifact_sha256(abs_path)}


def is_external(uri: str) -> bool:
    """A URI with a scheme (`models:/backbone/3`, `s3://...`) names something outside the workspace tree."""
    return bool(SCHEME_RE.match(uri))


def _check_entry(entry: Mapping) -> dict:
    """Exactly {uri, sha256}: no extra keys, so nothing but a path and a hash can reach the ledger through here."""
    if set(entry) != {"uri", "sha256"}:
        raise ValueError(f"an artifact entry is exactly {{uri, sha256}}, got keys {sorted(entry)}")
    uri, sha = entry["uri"], entry["sha256"]
    if not isinstance(uri, str) or not uri or (not is_external(uri) and (
            uri.startswith("/") or "\\" in uri or ".." in uri.split("/") or re.match(r"^[A-Za-z]:", uri))):
        raise ValueError(f"artifact uri must be workspace-relative (or carry a scheme), got {uri!r}")
    if not isinstance(sha, str) or not SHA_RE.fullmatch(sha):
        raise ValueError(f"sha256 of {uri} must be 64 lowercase hex digits, got {sha!r}")
    return {"uri": uri, "sha256": sha}


def _entries(entries: Iterable[Mapping]) -> list[dict]:
    """Validated, deduplicated and sorted: inputs and outputs are sets, and their hash must not depend on order."""
    unique = {(e["uri"], e["sha256"]): e for e in map(_check_entry, entries)}
    return [unique[k] for k in sorted(unique)]


def _plain(obj: Mapping | None, what: str) -> dict:
    """Round-trip through canonical JSON so what is hashed now is exactly what `verify` re-reads later."""
    if obj is None:
        return {}
    if not isinstance(obj, Mapping):
        raise TypeError(f"{what} must be a mapping, got {type(obj).__name__}")
    try:
        return json.loads(canonical_json(dict(obj)))
    except (TypeError, ValueError) as err:
        raise TypeError(f"{what} must be plain JSON (str, numbers, bools, lists, dicts; no NaN): {err}") from err


# --- provenance of the code and the person --------------------------------------------------------------------------

def _git(cwd: Path, *args: str) -> str:
    # GIT_OPTIONAL_LOCKS=0: `git status` must not take index.lock while someone else is committing in this repo
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10,
                          env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"})
    if done.returncode != 0:
        raise RuntimeError(done.stderr.strip())
    return done.stdout.strip()


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """The git revision of the running code (`<sha>`, or `<sha>-dirty` with uncommitted edits to tracked files);
    `mmfm==<version>` where the code is not a git checkout (an installed wheel); `unknown` if neither is known."""
    here = Path(__file__).resolve().parent
    try:
        _git(here, "ls-files", "--error-unmatch", "__init__.py")  # a wheel inside someone's repo is not "the code"
        sha = _git(here, "rev-parse", "HEAD")
        return f"{sha}-dirty" if _git(here, "status", "--porcelain", "--untracked-files=no") else sha
    except (OSError, subprocess.SubprocessError, RuntimeError):
        pass
    try:
        return f"mmfm=={importlib.metadata.version('mmfm')}"
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _running_code() -> str:
    return code_version()  # `append` has a parameter of the same name


def default_actor() -> str:
    """Who ran the stage: MMFM_ACTOR (a service account, the approver's name) or the OS user."""
    try:
        return os.environ.get("MMFM_ACTOR") or getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


# --- the ledger -----------------------------------------------------------------------------------------------------

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


# --- verify ---------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Problem:
    event_id: str | None  # None where no single event is to blame (a cut tail, a damaged file)
    kind: str  # edited | deleted | reordered | artifact_modified | artifact_missing
    uri: str | None
    message: str


@dataclass
class VerifyReport:
    events_checked: int
    artifacts_checked: int
    head: str
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    missing_ok: bool = False  # a checkout without `dvc pull` lacks artifacts without anything being wrong

    @property
    def ok(self) -> bool:
        return all(self.missing_ok and p.kind == "artifact_missing" for p in self.problems)

    def to_dict(self) -> dict:
        counts: dict[str, int] = {}
        for p in self.problems:
            counts[p.kind] = counts.get(p.kind, 0) + 1
        return {"ok": self.ok, "events_checked": self.events_checked, "artifacts_checked": self.artifacts_checked,
                "head": self.head, "problem_counts": counts, "problems": [asdict(p) for p in self.problems],
                "notes": list(self.notes)}

    def text(self) -> str:
        chain = "broken" if any(p.kind in ("edited", "deleted", "reordered") for p in self.problems) else "intact"
        lines = [f"lineage ledger {'OK' if self.ok else 'FAILED'}: {self.events_checked} events, chain {chain}, "
                 f"{self.artifacts_checked} artifacts re-hashed, head {self.head[:12]}"]
        lines += [f"  {p.kind:<17} {p.message}" for p in self.problems]
        return "\n".join(lines + [f"  note: {n}" for n in self.notes])


def verify(ledger: Ledger, root: Path, *, anchor: str | None = None, missing_ok: bool = False) -> VerifyReport:
    """Re-hash the chain and every artifact the ledger says was written, and list what no longer matches.

    Chain: a row whose content no longer gives its hash is `edited`; a row that does not chain to the row stored
    before it is `reordered` when its predecessor is elsewhere in the table (rows moved, or a forged row inserted)
    and `deleted` when its predecessor is gone; sqlite_sequence and `anchor` (a head recorded earlier, see
    `Ledger.head`) catch a cut tail. Artifacts: each URI's bytes are re-hashed against the last event that wrote it
    (earlier versions were superseded on purpose), so a byte flip that keeps size and mtime is `artifact_modified`;
    an absent one is `artifact_missing`, which fails the check unless `missing_ok`.
    """
    try:
        rows = ledger.rows()
        high_water, triggers = ledger.guards()
    except sqlite3.DatabaseError as err:
        return VerifyReport(0, 0, GENESIS, [Problem(None, "edited", None, f"the ledger file is damaged: {err}")])
    problems, events = _check_chain(rows)
    problems += _check_sequence(rows, high_water, any(p.kind == "deleted" for p in problems))
    if anchor and anchor != GENESIS and anchor not in {r["hash"] for r in rows}:
        problems.append(Problem(None, "deleted", None, f"the anchored head {anchor[:12]} is no longer in the chain: "
                                                       "the tail was cut or rewritten"))
    checked, artifact_problems = _check_artifacts(events, Path(root))
    notes = [] if triggers else ["the append-only triggers are missing (dropped by hand?); the next append restores"]
    head = rows[-1]["hash"] if rows else GENESIS
    return VerifyReport(len(rows), checked, head, problems + artifact_problems, notes, missing_ok)


def _check_chain(rows: list[dict]) -> tuple[list[Problem], list[Event]]:
    known, expected = {r["hash"] for r in rows}, GENESIS
    problems, events = [], []
    for r in rows:
        eid, prev = str(r["event_id"]), str(r["prev_hash"])
        try:
            ev = _event(r)
            events.append(ev)
            intact = event_hash(asdict(ev)) == r["hash"]
        except (ValueError, TypeError):
            intact = False
        if not intact:
            problems.append(Problem(eid, "edited", None, f"event {eid[:12]} ({r['stage']}, run {r['run_id']}) was "
                                                         "edited: its content no longer matches its hash"))
        if prev != expected and (prev == GENESIS or prev in known):
            problems.append(Problem(eid, "reordered", None, f"event {eid[:12]} chains to {prev[:12]}, not to the event "
                                                            "stored before it: rows were reordered or one inserted"))
        elif prev != expected:
            problems.append(Problem(eid, "deleted", None, f"the event before {eid[:12]} is gone: deleted, or rewritten "
                                                          f"and re-hashed (no event has hash {prev[:12]})"))
        expected = r["hash"]
    return problems, events


def _check_sequence(rows: list[dict], high_water: int, chain_saw_deletion: bool) -> list[Problem]:
    """AUTOINCREMENT seqs start at 1, never repeat and never leave gaps (a failed append rolls back its seq too)."""
    last = rows[-1]["seq"] if rows else 0
    problems = []
    if high_water > last:
        problems.append(Problem(None, "deleted", None, f"{high_water - last} event(s) at the end of the ledger were "
                                                       f"deleted (seq reached {high_water}, the last row is {last})"))
    if len(rows) < last and not chain_saw_deletion:
        problems.append(Problem(None, "deleted", None, f"{last - len(rows)} event(s) were deleted and the chain "
                                                       "re-hashed around them (gaps in seq)"))
    return problems


def _check_artifacts(events: list[Event], root: Path) -> tuple[int, list[Problem]]:
    latest: dict[str, tuple[str, str]] = {}  # uri -> (sha256, event_id) of the last event that wrote it
    for ev in events:
        for out in ev.outputs:
            if isinstance(out, dict) and isinstance(out.get("uri"), str):
                latest[out["uri"]] = (str(out.get("sha256")), ev.event_id)
    root = Path(os.path.abspath(root))
    checked, problems = 0, []
    for uri, (sha, eid) in sorted(latest.items()):
        path = Path(os.path.abspath(root / uri))
        if is_external(uri) or not path.is_relative_to(root):
            continue
        if not path.exists():
            problems.append(Problem(eid, "artifact_missing", uri, f"{uri} (written by event {eid[:12]}) is missing"))
            continue
        checked += 1
        now = artifact_sha256(path)
        if now != sha:
            problems.append(Problem(eid, "artifact_modified", uri, f"{uri} changed after event {eid[:12]} wrote it: "
                                                                   f"sha256 {now[:12]}, recorded {sha[:12]}"))
    return checked, problems


# --- lineage walk ---------------------------------------------------------------------------------------------------

EVENT_FIELDS = ("event_id", "stage", "run_id", "time", "actor", "code_version")


class _Graph:
    """Events and artifact versions (uri@sha256) as one DAG: artifact -input-> event -output-> artifact.

    An input links to the events that produced exactly that uri@sha256 (a shared node). Failing that, to earlier
    outputs with the same bytes under another name (`same_content`: a copy or rename; the empty file's hash is too
    common to mean anything and is not linked); failing that, to the last earlier writer of the same path
    (`same_uri`: the bytes changed in between) or of a folder containing it or contained in it (`contains`).
    """

    def __init__(self, events: list[Event]):
        self.nodes: dict[str, dict] = {}
        self.edges: dict[tuple[str, str], str] = {}
        self.succ: dict[str, list[str]] = {}
        self.pred: dict[str, list[str]] = {}
        self._by_sha: dict[str, list[str]] = {}
        self._by_uri: dict[str, str] = {}
        for ev in events:
            enode = self._node(f"event:{ev.event_id}", {"type": "event", **{k: getattr(ev, k) for k in EVENT_FIELDS}})
            for entry in ev.inputs:
                anode = self._artifact(entry)
                for source, kind in self._producers(entry, anode):
                    self._edge(source, anode, kind)
                self._edge(anode, enode, "input")
            for entry in ev.outputs:
                anode = self._artifact(entry)
                self._edge(enode, anode, "output")
                self._by_sha.setdefault(entry["sha256"], []).append(anode)
                self._by_uri[entry["uri"]] = anode

    def _node(self, node_id: str, attrs: dict) -> str:
        self.nodes.setdefault(node_id, {"id": node_id, **attrs})
        return node_id

    def _artifact(self, entry: dict) -> str:
        uri, sha = entry["uri"], entry["sha256"]
        return self._node(f"artifact:{uri}@{sha}", {"type": "artifact", "uri": uri, "sha256": sha})

    def _edge(self, source: str, target: str, kind: str) -> None:
        if source != target and (source, target) not in self.edges:
            self.edges[(source, target)] = kind
            self.succ.setdefault(source, []).append(target)
            self.pred.setdefault(target, []).append(source)

    def _producers(self, entry: dict, anode: str) -> list[tuple[str, str]]:
        if anode in self.pred:  # produced exactly: the shared node already links producer and consumer
            return []
        if entry["sha256"] != EMPTY_SHA256 and entry["sha256"] in self._by_sha:
            return [(n, "same_content") for n in self._by_sha[entry["sha256"]]]
        uri = entry["uri"]
        return [(n, "same_uri" if u == uri else "contains") for u, n in self._by_uri.items()
                if u == uri or u.startswith(uri + "/") or uri.startswith(u + "/")]

    def walk(self, starts: list[str], forward: bool) -> list[str]:
        step, seen, order, todo = (self.succ if forward else self.pred), set(starts), [], deque(starts)
        while todo:
            for n in step.get(todo.popleft(), []):
                if n not in seen:
                    seen.add(n)
                    order.append(n)
                    todo.append(n)
        return order

    def label(self, node_id: str) -> str:
        n = self.nodes[node_id]
        if n["type"] == "artifact":
            return f"{n['uri']} @ {n['sha256'][:12]}"
        return f"[{n['stage']}] run {n['run_id']} · event {n['event_id'][:12]} · {n['time']} · {n['actor']}"

    def tree(self, root: str, forward: bool) -> list[str]:
        """Indented tree; a node met twice is printed once more as '(see above)' and not expanded again."""
        step, arrow = (self.succ, "->") if forward else (self.pred, "<-")
        lines, seen, todo = [], {root}, [(n, 2, root) for n in reversed(step.get(root, []))]
        while todo:
            node, depth, parent = todo.pop()
            kind = self.edges[(parent, node) if forward else (node, parent)]
            note = "" if kind in ("input", "output") else f" ({kind.replace('_', ' ')})"
            again = node in seen
            lines.append(f"{'  ' * depth}{arrow} {self.label(node)}{note}{' (see above)' if again else ''}")
            if not again:
                seen.add(node)
                todo += [(child, depth + 1, node) for child in reversed(step.get(node, []))]
        return lines


def _resolve(graph: _Graph, events: list[Event], query: str) -> tuple[str, list[str]]:
    q = query.strip()
    exact = [e for e in events if e.event_id == q]
    by_id = exact or ([e for e in events if e.event_id.startswith(q)] if len(q) >= 8 else [])
    if len(by_id) == 1:
        return "event", [f"event:{by_id[0].event_id}"]
    runs = [f"event:{e.event_id}" for e in events if e.run_id == q]
    if runs:
        return "run", runs
    uri = q.removeprefix("./").rstrip("/")
    artifacts = [n for n, d in graph.nodes.items() if d["type"] == "artifact" and uri
                 and (d["uri"] == uri or d["uri"].startswith(uri + "/"))]
    if artifacts:
        return "uri", artifacts
    shas = [n for n, d in graph.nodes.items() if d["type"] == "artifact" and d["sha256"] == q.lower()]
    if shas:
        return "sha256", shas
    raise LookupError(f"nothing in the lineage ledger matches {query!r} (tried event id, run id, uri, sha256)")


def lineage(ledger: Ledger, uri_or_id: str, root: Path | None = None) -> dict:
    """Upstream and downstream of an artifact URI (or a folder prefix of URIs), a run id, an event id (or an
    unambiguous prefix of 8+ characters) or a sha256. With `root`, an absolute path inside it is accepted too.

    Returns {query, matched, roots, nodes, edges, upstream, downstream, text}: node ids are `event:<id>` and
    `artifact:<uri>@<sha256>`; edge kinds are input, output, same_content, same_uri, contains (see `_Graph`);
    `text` is an indented tree for the CLI. Raises LookupError when nothing matches.
    """
    events = ledger.events()
    graph = _Graph(events)
    query = uri_or_id
    if root is not None and Path(uri_or_id).is_absolute() and Path(uri_or_id).is_relative_to(Path(root).absolute()):
        query = Path(uri_or_id).relative_to(Path(root).absolute()).as_posix()
    matched, roots = _resolve(graph, events, query)
    up, down = graph.walk(roots, forward=False), graph.walk(roots, forward=True)
    keep = set(roots) | set(up) | set(down)
    text = [f"lineage of {query} ({matched}: {len(roots)} match{'es' if len(roots) > 1 else ''})"]
    for r in roots:
        text.append(graph.label(r))
        for title, forward in (("upstream", False), ("downstream", True)):
            body = graph.tree(r, forward)
            text += [f"  {title}:{'' if body else ' none'}", *body]
    return {"query": query, "matched": matched, "roots": roots,
            "nodes": [n for i, n in graph.nodes.items() if i in keep],
            "edges": [{"source": s, "target": t, "kind": k} for (s, t), k in graph.edges.items()
                      if s in keep and t in keep],
            "upstream": up, "downstream": down, "text": "\n".join(text)}


def record(ws, stage: str, run_id: str, *, inputs: Iterable[Path] = (), outputs: Iterable[Path] = (),
           params: Mapping | None = None, facts: Mapping | None = None) -> Event:
    """Append one stage's event to the workspace ledger, naming files by workspace-relative URI and content hash.

    `ws` is a tasks.workspace.Workspace. Once per (stage, run id): a retried flow run does not add a second event.
    Callers pass counts and settings in params/facts, never values from the data.
    """
    def entries(paths: Iterable[Path]) -> list[dict]:
        return [artifact_entry(Path(p), ws.root) for p in paths if Path(p).exists()]

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
