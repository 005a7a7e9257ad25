"""RetrainTrigger: cooldown, audit trail, failed callbacks, and two processes racing for one firing."""

from __future__ import annotations

import json
import multiprocessing as mp
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tasks.monitoring.trigger import RetrainTrigger

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def test_fires_once_suppresses_within_cooldown_then_fires_again(tmp_path: Path):
    calls = []
    trigger = RetrainTrigger(tmp_path / "trigger.json", timedelta(days=7), on_fire=calls.append)
    first = trigger.fire({"site": "a"}, now=T0)
    second = trigger.fire({"site": "b"}, now=T0 + timedelta(days=2))
    third = trigger.fire({"site": "c"}, now=T0 + timedelta(days=7))
    assert [first["fired"], second["fired"], third["fired"]] == [True, False, True]
    assert second["status"] == "suppressed" and second["next_allowed"] == (T0 + timedelta(days=7)).isoformat()
    assert calls == [{"site": "a"}, {"site": "c"}]
    history = RetrainTrigger(tmp_path / "trigger.json", timedelta(days=7)).history()  # a fresh instance agrees
    assert [(e["status"], e["reason"]["site"]) for e in history] == [("fired", "a"), ("suppressed", "b"),
                                                                     ("fired", "c")]
    assert json.loads((tmp_path / "trigger.json").read_text())["last_fired"] == third["at"]


def test_naive_now_is_utc_and_no_callback_is_fine(tmp_path: Path):
    trigger = RetrainTrigger(tmp_path / "t.json", timedelta(hours=1))
    assert trigger.fire({}, now=datetime(2026, 1, 1, 12, 0))["fired"]
    assert not trigger.fire({}, now=T0 + timedelta(minutes=59))["fired"]
    assert trigger.last_fired() == T0


def test_failed_callback_is_recorded_and_does_not_consume_the_cooldown(tmp_path: Path):
    def boom(reason: dict) -> None:
        raise RuntimeError("deployment not found")

    trigger = RetrainTrigger(tmp_path / "t.json", timedelta(days=1))
    with pytest.raises(RuntimeError):
        trigger.fire({"n": 1}, now=T0, on_fire=boom)
    assert trigger.history()[0]["status"] == "failed" and "deployment not found" in trigger.history()[0]["error"]
    assert trigger.last_fired() is None
    assert trigger.fire({"n": 2}, now=T0 + timedelta(minutes=5))["fired"]


def _race(state: str, barrier, out) -> None:
    trigger = RetrainTrigger(Path(state), timedelta(days=1))
    barrier.wait()
    result = trigger.fire({"pid": mp.current_process().name}, now=T0,
                          on_fire=lambda reason: Path(state + ".fired." + reason["pid"]).touch())
    out.put(result["fired"])


def test_two_processes_racing_fire_exactly_once(tmp_path: Path):
    ctx = mp.get_context("fork")
    barrier, out = ctx.Barrier(4), ctx.Queue()
    state = str(tmp_path / "t.json")
    procs = [ctx.Process(target=_race, args=(state, barrier, out), name=f"p{i}") for i in range(4)]
    for p in procs:
        p.start()
    results = [out.get(timeout=20) for _ in procs]
    for p in procs:
        p.join(timeout=20)
    assert sorted(results) == [False, False, False, True]
    assert len(list(tmp_path.glob("t.json.fired.*"))) == 1
    assert [e["status"] for e in RetrainTrigger(Path(state), timedelta(days=1)).history()].count("fired") == 1
