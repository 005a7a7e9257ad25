"""Tampering with the ledger file or with an artifact is detected, and named with the right kind."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from tasks.lineage import verify

from .conftest import Chain


def tamper(db: Path, *statements: str) -> None:
    """What a determined user can do: open the file with sqlite3, drop the guards, change history."""
    con = sqlite3.connect(db, isolation_level=None)
    con.execute("DROP TRIGGER IF EXISTS events_no_update")
    con.execute("DROP TRIGGER IF EXISTS events_no_delete")
    for statement in statements:
        con.execute(statement)
    con.close()


def kinds(chain: Chain, **kwargs) -> list[tuple[str, str | None]]:
    return [(p.kind, p.event_id) for p in verify(chain.ledger, chain.root, **kwargs).problems]


def test_edited_row_is_detected(chain: Chain):
    tamper(chain.ledger.path, "UPDATE events SET params = '{\"rows_per_part\":3}' WHERE seq = 2")
    report = verify(chain.ledger, chain.root)
    assert not report.ok
    assert kinds(chain) == [("edited", chain.staged.event_id)]
    assert "missing" in report.notes[0]  # the dropped triggers are reported too


def test_edited_bytes_in_the_file_are_detected(chain: Chain):
    db = chain.ledger.path
    raw = db.read_bytes()
    assert raw.count(b"alice-operator") == 1
    db.write_bytes(raw.replace(b"alice-operator", b"mallory-opera!"))  # same length: the page stays well-formed
    assert chain.ledger.events()[0].actor == "mallory-opera!"
    assert kinds(chain) == [("edited", chain.landing.event_id)]


def test_deleted_row_is_detected(chain: Chain):
    tamper(chain.ledger.path, "DELETE FROM events WHERE seq = 2")
    assert kinds(chain) == [("deleted", chain.curated.event_id)]


def test_deleted_tail_is_detected(chain: Chain):
    anchor = chain.ledger.head()
    tamper(chain.ledger.path, "DELETE FROM events WHERE seq = 3")
    assert kinds(chain) == [("deleted", None)]
    # even when the sequence counter is reset too, a head recorded elsewhere still tells
    tamper(chain.ledger.path, "UPDATE sqlite_sequence SET seq = 2 WHERE name = 'events'")
    assert kinds(chain) == []
    assert kinds(chain, anchor=anchor) == [("deleted", None)]


def test_reordered_rows_are_detected(chain: Chain):
    tamper(chain.ledger.path, "UPDATE events SET seq = 100 WHERE seq = 2", "UPDATE events SET seq = 2 WHERE seq = 3",
           "UPDATE events SET seq = 3 WHERE seq = 100")
    found = kinds(chain)
    assert found and {k for k, _ in found} == {"reordered"}
    assert ("reordered", chain.curated.event_id) in found


def test_flipped_artifact_byte_keeping_size_and_mtime_is_detected(chain: Chain):
    target = chain.root / "data/curated/labs.parquet"
    before = target.stat()
    data = bytearray(target.read_bytes())
    data[5] ^= 0x01
    target.write_bytes(bytes(data))
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = target.stat()
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)  # what dvc status trusts
    report = verify(chain.ledger, chain.root)
    assert [(p.kind, p.event_id, p.uri) for p in report.problems] == [
        ("artifact_modified", chain.curated.event_id, "data/curated/labs.parquet")]
    assert "data/curated/labs.parquet" in report.text()


def test_flipped_byte_inside_a_folder_artifact_is_detected(chain: Chain):
    part = chain.root / "data/staged/labs/part-1.parquet"
    mtime = part.stat().st_mtime_ns
    part.write_bytes(part.read_bytes().replace(b"one", b"onf"))
    os.utime(part, ns=(mtime, mtime))
    assert [(p.kind, p.uri) for p in verify(chain.ledger, chain.root).problems] == [
        ("artifact_modified", "data/staged/labs")]


def test_missing_artifact_is_reported_apart_from_modified(chain: Chain):
    (chain.root / "data/curated/labs.parquet").unlink()
    report = verify(chain.ledger, chain.root)
    assert [(p.kind, p.uri) for p in report.problems] == [("artifact_missing", "data/curated/labs.parquet")]
    assert not report.ok and report.artifacts_checked == 2
    assert verify(chain.ledger, chain.root, missing_ok=True).ok  # e.g. a checkout before `dvc pull`


def test_a_later_version_supersedes_an_earlier_one(chain: Chain):
    from tasks.lineage import artifact_entry

    target = chain.root / "data/curated/labs.parquet"
    target.write_bytes(b"curated labs table, second version")
    chain.ledger.append("curated", "run-curate-2", outputs=[artifact_entry(target, chain.root)])
    assert verify(chain.ledger, chain.root).ok


def test_damaged_file_is_reported_not_raised(chain: Chain):
    db = chain.ledger.path
    raw = bytearray(db.read_bytes())
    raw[100:4096] = b"\xff" * (4096 - 100)  # smash the schema page
    db.write_bytes(bytes(raw))
    report = verify(chain.ledger, chain.root)
    assert not report.ok and report.problems[0].kind == "edited"
