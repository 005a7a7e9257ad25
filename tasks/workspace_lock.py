"""One writer per workspace: an exclusive `flock` on `<workspace>/.mmfm/workspace.lock`.

Why flock and not a pid file: the kernel drops the lock when the holder's last descriptor closes, so a process that
is killed (even `kill -9`) or whose machine reboots leaves no stale lock behind, and no one has to guess whether a
recorded pid is still alive. The file also records who holds it (pid, host, command, since) so the process that is
refused can say whom it waits for. The file is never deleted (deleting a flocked file lets two processes lock two
different inodes of the same name).

Re-entrant within one process (a count per workspace): `mmfm demo` holds it and calls `pipeline` and `version`,
which take it again. Threads of one process share the hold; the lock orders processes, not threads.
The fd is opened close-on-exec, so `dvc`/`git`/`torchrun` children never inherit (and outlive) the hold.

How long to wait: the `wait` argument, else `MMFM_LOCK_WAIT` (seconds; the CLI's `--wait` sets it), else 0, which
refuses at once: a training run can hold a workspace for hours, and an error naming the holder is more useful than a
command that silently hangs.
"""

from __future__ import annotations

import fcntl
import functools
import inspect
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

LOCK_FILE = Path(".mmfm") / "workspace.lock"
WAIT_ENV = "MMFM_LOCK_WAIT"
POLL_SECONDS = 0.1

_held: dict[Path, list] = {}  # workspace root -> [fd, depth]
_guard = threading.Lock()  # protects _held
_acquiring = threading.Lock()  # one acquisition at a time in this process


class WorkspaceBusy(RuntimeError):
    """Another process holds the workspace; the message names it and says what to do."""


def default_wait() -> float:
    value = os.environ.get(WAIT_ENV, "0") or "0"
    try:
        return max(0.0, float(value))
    except ValueError:
        raise ValueError(f"{WAIT_ENV}={value!r}: expected a number of seconds") from None


def holder(root: Path) -> dict:
    """What the lock file says about its current holder ({} when it was never taken or is being rewritten)."""
    try:
        return json.loads((Path(root) / LOCK_FILE).read_text() or "{}")
    except (OSError, ValueError):
        return {}


def is_locked(root: Path) -> bool:
    """True while some process (this one included) holds the workspace lock.

    A probe for diagnostics and tests: it takes a shared flock for an instant, which a run starting with wait 0 at
    that very instant would find taken. To see who holds it without touching the lock, read `holder()`."""
    path = Path(root) / LOCK_FILE
    if not path.exists():
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops the probe's shared lock
    return False


def _busy_message(root: Path) -> str:
    who = holder(root)
    if not who:
        return f"workspace {root} is in use by another process; wait or stop it"
    return (f"workspace {root} is in use by pid {who.get('pid')} (`{who.get('command')}` on {who.get('host')}, "
            f"since {who.get('since')}); wait or stop it")


def _command_line() -> str:
    """The program and its first arguments, e.g. `mmfm pipeline` (what a person would recognise in `ps`)."""
    return " ".join([Path(sys.argv[0]).name if sys.argv else "python", *sys.argv[1:3]])[:120]


def _acquire(root: Path, command: str | None, wait: float) -> int:
    path = root / LOCK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    deadline, announced = time.monotonic() + wait, False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() >= deadline:
                os.close(fd)
                raise WorkspaceBusy(_busy_message(root)) from None
            if not announced:
                sys.stderr.write(f"{_busy_message(root).removesuffix('; wait or stop it')}; waiting up to "
                                 f"{wait:g} s\n")
                sys.stderr.flush()
                announced = True
            time.sleep(POLL_SECONDS)
    record = {"pid": os.getpid(), "host": socket.gethostname(), "command": command or _command_line(),
              "since": datetime.now(UTC).isoformat(timespec="seconds")}
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(record).encode(), 0)
    return fd


@contextmanager
def workspace_lock(workspace: Path, command: str | None = None, wait: float | None = None) -> Iterator[dict]:
    """Hold the workspace exclusively for the block; re-entrant within this process. Yields the holder record."""
    root = Path(workspace).resolve()
    with _acquiring:  # one thread takes the lock for the process; the others count on its hold
        with _guard:
            entry = _held.get(root)
            if entry is not None:
                entry[1] += 1
        if entry is None:
            fd = _acquire(root, command, default_wait() if wait is None else wait)
            with _guard:
                entry = _held[root] = [fd, 1]
    try:
        yield holder(root)
    finally:
        with _guard:
            entry[1] -= 1
            release = entry[1] == 0
            if release:
                del _held[root]
        if release:
            os.close(entry[0])  # the lock goes with the descriptor; the record stays for the curious


def holds_workspace_lock(command: str) -> Callable:
    """Decorator for a flow whose `workspace` parameter names the workspace it writes: hold the lock throughout."""

    def decorate(fn: Callable) -> Callable:
        signature = inspect.signature(fn)

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            workspace = signature.bind(*args, **kwargs).arguments["workspace"]
            with workspace_lock(Path(workspace), command=command):
                return fn(*args, **kwargs)

        return wrapper

    return decorate
