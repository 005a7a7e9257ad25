"""Two processes appending at once extend one chain and lose nothing."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

from tasks.lineage import Ledger, verify

PER_WORKER = 40


def _append_many(db: str, worker: str, start) -> None:
    ledger = Ledger(Path(db))
    start.wait(timeout=30)  # both are imported and ready: the appends overlap
    for i in range(PER_WORKER):
        ledger.append("ingest", f"{worker}-{i}", facts={"i": i}, code_version="test")


def test_two_processes_append_one_chain(tmp_path: Path):
    db = tmp_path / ".mmfm" / "lineage.db"  # not created yet: both workers race to create the schema too
    ctx = mp.get_context("spawn")
    start = ctx.Barrier(2)
    workers = [ctx.Process(target=_append_many, args=(str(db), name, start)) for name in ("a", "b")]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=60)
    assert [w.exitcode for w in workers] == [0, 0]
    events = Ledger(db).events()
    assert len(events) == 2 * PER_WORKER
    assert sorted(e.run_id for e in events) == sorted(f"{w}-{i}" for w in "ab" for i in range(PER_WORKER))
    for worker in "ab":  # each worker's own appends keep their order
        mine = [e.facts["i"] for e in events if e.run_id.startswith(f"{worker}-")]
        assert mine == list(range(PER_WORKER))
    interleaved = sum(1 for x, y in zip(events, events[1:], strict=False) if x.run_id[0] != y.run_id[0])
    report = verify(Ledger(db), tmp_path)
    assert report.ok, report.text()
    assert report.events_checked == 2 * PER_WORKER
    assert interleaved >= 1  # they really did run at the same time
