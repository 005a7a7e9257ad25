"""A retraining trigger with a cooldown that separate processes (monitor runs, schedulers) agree on.

Why this shape:
- State is one small JSON file, replaced atomically (temp file + fsync + os.replace): a reader never sees half a
  file, and a crash leaves the previous state.
- An exclusive fcntl lock on a sidecar ".lock" file spans read -> decide -> write -> callback, so two processes
  that see the same breach cannot both fire.
- Every breach is recorded (fired, suppressed, or failed) with its reason and time: the audit trail of why a model
  was or was not retrained.
- The trigger starts nothing itself. The caller's `on_fire` (e.g. a Prefect `run_deployment`) runs only when it
  fires. The firing is written before the callback runs (at most once: a crash in between loses that firing
  rather than starting two runs); if the callback raises, the breach is re-recorded as "failed", the cooldown is
  not consumed, and the exception propagates.
"""

from __future__ import annotations

import fcntl
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tasks.atomic import write_with


class RetrainTrigger:
    """Fire at most once per `cooldown`; state in `state_path` (JSON) guarded by `state_path + ".lock"`."""

    def __init__(self, state_path: Path, cooldown: timedelta, on_fire: Callable[[dict], Any] | None = None):
        self.on_fire = on_fire
        self.state_path = Path(state_path)
        self.lock_path = self.state_path.with_name(self.state_path.name + ".lock")
        self.cooldown = cooldown

    def fire(self, reason: dict, now: datetime | None = None,
             on_fire: Callable[[dict], Any] | None = None) -> dict:
        """Record a breach; fire (call `on_fire(reason)`) unless the last firing is within the cooldown.

        `on_fire` here overrides the one given to the constructor.

        Returns {"fired", "status" (fired | suppressed), "reason", "at", "next_allowed" (ISO, UTC)}.
        """
        at = _utc(now or datetime.now(UTC))
        on_fire = on_fire or self.on_fire
        with self._locked():
            state = self._read()
            last = datetime.fromisoformat(state["last_fired"]) if state["last_fired"] else None
            fired = last is None or at >= last + self.cooldown
            event = {"at": at.isoformat(), "status": "fired" if fired else "suppressed", "reason": reason}
            state["events"].append(event)
            if fired:
                state["last_fired"] = at.isoformat()
            self._write(state)
            if fired and on_fire is not None:
                try:
                    on_fire(reason)
                except Exception as exc:
                    event.update(status="failed", error=f"{type(exc).__name__}: {exc}")
                    state["last_fired"] = last.isoformat() if last else None
                    self._write(state)
                    raise
            next_allowed = (at if fired else last) + self.cooldown
        return {"fired": fired, "status": event["status"], "reason": reason, "at": event["at"],
                "next_allowed": next_allowed.isoformat()}

    def history(self) -> list[dict]:
        """Every recorded breach, oldest first."""
        with self._locked():
            return self._read()["events"]

    def last_fired(self) -> datetime | None:
        with self._locked():
            value = self._read()["last_fired"]
        return datetime.fromisoformat(value) if value else None

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _read(self) -> dict:
        if not self.state_path.exists():
            return {"version": 1, "last_fired": None, "events": []}
        return json.loads(self.state_path.read_text())

    def _write(self, state: dict) -> None:
        state["cooldown_s"] = self.cooldown.total_seconds()
        write_with(self.state_path, lambda tmp: tmp.write_text(json.dumps(state, indent=1, default=str)), fsync=True)


def _utc(moment: datetime) -> datetime:
    """Naive datetimes are taken as UTC, so processes in different local zones compare the same instants."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
