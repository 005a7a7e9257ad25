"""`verify`: re-hash the ledger's chain and every artifact it says was written, and report what no longer matches.

Why apart from the ledger: verifying only reads, and it must keep working on a damaged file (a hand-edited row, a
dropped trigger, a cut tail), so it reads raw rows and judges them here. Named `verification` so that the function
`tasks.lineage.verify`, which the package re-exports, is not shadowed by a submodule of the same name.
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tasks.lineage.hashing import artifact_sha256, event_hash, is_external
from tasks.lineage.ledger import GENESIS, Event, Ledger, _event


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
