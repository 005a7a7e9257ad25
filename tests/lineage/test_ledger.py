"""Appending, the append-only guards, idempotence and artifact hashing."""

from __future__ import annotations

import datetime as dt
import json
import os
import sqlite3
from pathlib import Path

import pytest

from tasks.lineage import GENESIS, Ledger, artifact_entry, code_version, event_hash, tree_sha256, verify
from tasks.workspace import Workspace

from .conftest import Chain, write


def test_append_chains_and_verifies(chain: Chain):
    events = chain.ledger.events()
    assert [e.stage for e in events] == ["landing", "staged", "curated"]
    assert events[0].prev_hash == GENESIS
    assert [e.prev_hash for e in events[1:]] == [e.hash for e in events[:-1]]
    assert all(event_hash(e.to_dict()) == e.hash for e in events)
    assert events[0] == chain.landing  # what append returned is what is stored
    assert chain.ledger.path == Workspace(chain.root).state / "lineage.db"
    assert events[1].params == {"rows_per_part": 2} and events[2].facts == {"rows": 4, "quarantined": 0}
    assert events[0].time.endswith("Z") and dt.datetime.fromisoformat(events[0].time).tzinfo is not None
    assert events[0].code_version == code_version() != ""
    report = verify(chain.ledger, chain.root)
    assert report.ok, report.text()
    assert (report.events_checked, report.artifacts_checked, report.problems) == (3, 3, [])
    assert report.head == chain.ledger.head() == events[-1].hash
    json.dumps(report.to_dict())
    json.dumps([e.to_dict() for e in events])
    assert "OK" in report.text()


def test_empty_or_absent_ledger_verifies(tmp_path: Path):
    ledger = Ledger(tmp_path / "none" / "lineage.db")
    report = verify(ledger, tmp_path)
    assert report.ok and report.events_checked == 0 and ledger.find("x", "y") is None
    assert not ledger.path.exists()  # reading never creates the file


@pytest.mark.parametrize("entry, error", [
    ({"uri": "/home/jdoe/scan.dcm", "sha256": "a" * 64}, ValueError),
    ({"uri": "../outside", "sha256": "a" * 64}, ValueError),
    ({"uri": "data/x", "sha256": "a" * 64, "patient": "Jane Doe"}, ValueError),
    ({"uri": "data/x", "sha256": "not-a-hash"}, ValueError),
])
def test_append_refuses_entries_that_are_not_path_and_hash(tmp_path: Path, entry: dict, error: type):
    with pytest.raises(error):
        Ledger(tmp_path / "l.db").append("landing", "r", outputs=[entry])


def test_append_refuses_params_that_are_not_plain_json(tmp_path: Path):
    ledger = Ledger(tmp_path / "l.db")
    with pytest.raises(TypeError, match="plain JSON"):
        ledger.append("train", "r", params={"when": dt.date(2024, 1, 1)})
    with pytest.raises(TypeError, match="plain JSON"):
        ledger.append("train", "r", facts={"auc": float("nan")})
    assert ledger.events() == []


def test_scheme_uris_are_allowed_and_not_rehashed(tmp_path: Path):
    ledger = Ledger(tmp_path / "l.db")
    ledger.append("register", "r", outputs=[{"uri": "models:/mmfm-backbone/3", "sha256": "b" * 64}])
    report = verify(ledger, tmp_path)
    assert report.ok and report.artifacts_checked == 0


def test_triggers_block_update_and_delete(chain: Chain):
    con = sqlite3.connect(chain.ledger.path)
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        con.execute("UPDATE events SET actor = 'mallory' WHERE seq = 1")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        con.execute("DELETE FROM events WHERE seq = 3")
    with pytest.raises(sqlite3.IntegrityError):  # a fork: a second event claiming the first one as predecessor
        con.execute("INSERT INTO events (event_id, prev_hash, hash, time, actor, stage, run_id, inputs, outputs, "
                    "params, code_version, facts) SELECT 'forged', prev_hash, 'h', time, actor, stage, run_id, "
                    "inputs, outputs, params, code_version, facts FROM events WHERE seq = 2")
    con.close()
    assert len(chain.ledger.events()) == 3 and verify(chain.ledger, chain.root).ok


def test_find_and_once_keep_reruns_from_duplicating(chain: Chain):
    assert chain.ledger.find("staged", "run-stage") == chain.staged
    assert chain.ledger.find("staged", "no-such-run") is None
    again = chain.ledger.append("staged", "run-stage", params={"rows_per_part": 2}, once=True)
    assert again == chain.staged and len(chain.ledger.events()) == 3
    chain.ledger.append("staged", "run-stage")  # without once, a rerun is a new event
    assert len(chain.ledger.events()) == 4


def test_tree_hash_depends_on_names_and_bytes_only(tmp_path: Path):
    a, b = tmp_path / "a", tmp_path / "b"
    write(a / "x/2.parquet", b"two")
    write(a / "1.parquet", b"one")
    write(b / "1.parquet", b"one")  # created in the other order
    write(b / "x/2.parquet", b"two")
    write(b / ".incoming-123", b"half-written temp file")
    os.utime(b / "1.parquet", (0, 0))
    assert tree_sha256(a) == tree_sha256(b)
    (b / "1.parquet").rename(b / "renamed.parquet")
    assert tree_sha256(a) != tree_sha256(b)


def test_artifact_entry_names_workspace_relative_paths(tmp_path: Path):
    f = write(tmp_path / "data/curated/t.parquet", b"table")
    entry = artifact_entry(f, tmp_path)
    assert entry["uri"] == "data/curated/t.parquet" and len(entry["sha256"]) == 64
    assert artifact_entry(f.parent, tmp_path)["sha256"] == tree_sha256(f.parent)
    with pytest.raises(ValueError, match="outside the workspace"):
        artifact_entry(f, tmp_path / "data" / "landing")
