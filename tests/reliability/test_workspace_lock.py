"""Two `mmfm pipeline` runs on one workspace: the second refuses at once naming the first (default), or with `--wait`
waits and then finds everything up to date; the first completes untouched; no stage runs twice. A holder killed
with SIGKILL frees the workspace at once (the kernel drops a flock with its last descriptor).

The first run is paused with SIGSTOP once it holds the lock, so the second surely starts while the lock is held,
whatever the machine's speed; a paused process keeps its flock, as a busy one would.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flows.pipeline import STAGE_NAMES
from tasks.lineage import Ledger
from tasks.validation.curated_check import changed_files
from tasks.vcs import dvc_run
from tasks.workspace_lock import WorkspaceBusy, holder, is_locked, workspace_lock

KEY = "test-key-" + "1" * 40  # tests/conftest.py trained_workspace's key
ROOT = Path(__file__).resolve().parents[2]


def _until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def _held_by(root: Path, pid: int) -> bool:
    """Read the holder record only: probing the flock itself could make a starting run find the lock taken."""
    return holder(root).get("pid") == pid


def _mmfm(root: Path, out: Path, *args: str) -> subprocess.Popen:
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "MMFM_PSEUDONYM_KEY": KEY, "PREFECT_API_URL": PREFECT_API_URL.value(), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "flows.cli", "pipeline", "-w", str(root), "--json", *args],
                            stdout=open(out.with_suffix(".out"), "w"), stderr=open(out.with_suffix(".err"), "w"),
                            env=env, cwd=ROOT, start_new_session=True)


def _summary(out: Path) -> dict:
    return json.loads(out.with_suffix(".out").read_text().strip().splitlines()[-1])


def _events(root: Path) -> list[str]:
    return [e.stage for e in Ledger.of_workspace(root).events()]


@pytest.fixture()
def workspace(trained_workspace, tmp_path) -> Path:
    """A copy of the trained workspace whose validate stage is out of date (data/curated gone): the first run has
    real work to do, which a second run without the lock would do again."""
    ws, _, _ = trained_workspace
    root = tmp_path / "ws"
    shutil.copytree(ws.root, root, symlinks=True)
    shutil.rmtree(root / "data" / "curated")
    return root


@pytest.mark.slow
def test_a_second_pipeline_refuses_or_waits_and_the_first_completes(workspace, tmp_path, prefect_api):
    root, logs = workspace, tmp_path
    events_before, lock_before = _events(root), (root / "dvc.lock").read_text()
    first = _mmfm(root, logs / "first")
    refused = waiting = None
    try:
        _until(lambda: _held_by(root, first.pid) or first.poll() is not None, 180, "the first run to take the lock")
        assert first.poll() is None, (logs / "first.err").read_text()[-2000:]
        os.kill(first.pid, signal.SIGSTOP)  # paused while holding the workspace
        assert is_locked(root)

        refused = _mmfm(root, logs / "refused")  # default --wait 0
        assert refused.wait(timeout=180) == 1
        assert first.poll() is None  # it did not wait for the first run
        errors = [line for line in (logs / "refused.err").read_text().splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and f"is in use by pid {first.pid} (`mmfm pipeline`" in errors[0], errors
        assert errors[0].endswith("; wait or stop it")
        assert not (logs / "refused.out").read_text().strip()

        waiting = _mmfm(root, logs / "waiting", "--wait", "300")
        _until(lambda: "waiting up to 300 s" in (logs / "waiting.err").read_text() or waiting.poll() is not None,
               180, "the second run to start waiting")
        assert waiting.poll() is None, (logs / "waiting.err").read_text()[-2000:]
        os.kill(first.pid, signal.SIGCONT)

        assert first.wait(timeout=300) == 0, (logs / "first.err").read_text()[-2000:]
        assert waiting.wait(timeout=300) == 0, (logs / "waiting.err").read_text()[-2000:]
    finally:
        for proc in (first, refused, waiting):
            if proc is not None and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
    ran = _summary(logs / "first")
    assert ran["ran"] == ["validate"] and ran["skipped"] == [s for s in STAGE_NAMES if s != "validate"]
    after_wait = _summary(logs / "waiting")
    assert after_wait["ran"] == [] and after_wait["skipped"] == list(STAGE_NAMES)  # the first run's work, not redone
    assert _events(root) == [*events_before, "validate"]  # one new event: no stage ran twice
    assert (root / "dvc.lock").read_text() == lock_before and changed_files(root) == []  # outputs intact
    assert json.loads(dvc_run(root, "status", "--json", *STAGE_NAMES).stdout or "{}") == {}
    assert not is_locked(root)


def test_a_killed_holder_frees_the_workspace_at_once(tmp_path, capsys):
    hold = ("import sys, time\nfrom tasks.workspace_lock import workspace_lock\n"
            "with workspace_lock(sys.argv[1], command='mmfm pipeline'):\n    print('held', flush=True)\n"
            "    time.sleep(600)\n")
    holder_proc = subprocess.Popen([sys.executable, "-c", hold, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                                   cwd=ROOT)
    try:
        assert holder_proc.stdout.readline().strip() == "held"
        assert is_locked(tmp_path) and holder(tmp_path)["pid"] == holder_proc.pid
        t0 = time.monotonic()
        with pytest.raises(WorkspaceBusy, match=rf"in use by pid {holder_proc.pid} \(`mmfm pipeline`"):
            with workspace_lock(tmp_path, wait=1):
                pass
        assert 1 <= time.monotonic() - t0 < 5  # waited as asked, then gave up
        assert "waiting up to 1 s" in capsys.readouterr().err
        os.kill(holder_proc.pid, signal.SIGKILL)
        holder_proc.wait(timeout=30)
        t0 = time.monotonic()
        with workspace_lock(tmp_path, wait=0) as me:  # no stale lock to clean up, no timeout to sit out
            assert time.monotonic() - t0 < 1 and me["pid"] == os.getpid()
            with workspace_lock(tmp_path, wait=0):  # re-entrant: `mmfm demo` holds it around pipeline and version
                pass
            assert is_locked(tmp_path)  # the inner exit did not release the outer hold
        assert not is_locked(tmp_path)
    finally:
        if holder_proc.poll() is None:
            holder_proc.kill()
