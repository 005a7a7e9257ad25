"""Disk full while publishing: the DVC remote sits on a 1 MiB tmpfs, too small for the dataset version.

`mmfm version` must stop at the push with one line naming the full path, publish nothing (no commit, the working tree
and index as they were, no `version` event in the ledger) and leave nothing that stops a retry; once the tmpfs is
made larger (DVC's partial uploads still in it) the retry publishes, and the remote holds every file.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from flows.version import version
from tasks.lineage import Ledger
from tasks.vcs import dvc_run

KEY = "test-key-" + "1" * 40  # tests/conftest.py trained_workspace's key


def _git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout


def _state(root: Path) -> dict:
    """What a failed publication must leave untouched: HEAD, the index, the working tree's status, dvc.lock."""
    return {"head": _git(root, "rev-parse", "HEAD"), "index": _git(root, "ls-files", "--stage"),
            "status": _git(root, "status", "--porcelain", "--untracked-files=all"),
            "dvc.lock": (root / "dvc.lock").read_text()}


def _mount_tmpfs(where: Path, size: str) -> None:
    where.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN): {done.stderr.strip()}")


def _versions(root: Path) -> list:
    return [e for e in Ledger.of_workspace(root).events() if e.stage == "version"]


@pytest.mark.slow
def test_version_on_a_full_remote_fails_cleanly_and_a_retry_publishes(trained_workspace, tmp_path, prefect_api):
    from prefect.settings import PREFECT_API_URL

    ws, _, _ = trained_workspace
    root = tmp_path / "ws"
    shutil.copytree(ws.root, root, symlinks=True)  # the shared workspace stays as it is
    remote = tmp_path / "small-remote"
    _mount_tmpfs(remote, "1m")
    try:
        dvc_run(root, "remote", "modify", "local", "url", str(remote))
        before, events_before = _state(root), len(_versions(root))
        env = {**os.environ, "MMFM_PSEUDONYM_KEY": KEY, "PREFECT_API_URL": PREFECT_API_URL.value(),
               "OMP_NUM_THREADS": "1"}
        failed = subprocess.run([sys.executable, "-m", "flows.cli", "version", "-w", str(root), "--json"], env=env,
                                capture_output=True, text=True, timeout=300)
        assert failed.returncode == 1, failed.stderr[-2000:]
        errors = [line for line in failed.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1, failed.stderr[-2000:]
        assert "dvc push" in errors[0] and f"no space left on device at {remote} (the DVC remote)" in errors[0]
        assert "nothing was published" in errors[0]
        assert not failed.stdout.strip()  # no JSON summary: nothing happened
        assert _state(root) == before  # no commit; index, dvc.lock, .dvc and .gitignore files as they were
        assert len(_versions(root)) == events_before  # no dataset version for `mmfm lineage` to show

        # more room, with whatever DVC's failed uploads left in it: the retry publishes everything
        subprocess.run(["mount", "-o", "remount,size=256m", str(remote)], check=True)
        published = version(workspace=root)
        assert _git(root, "rev-parse", "HEAD").strip() == published["git_rev"] != before["head"].strip()
        assert not _git(root, "status", "--porcelain", "dvc.lock")  # dvc.lock committed
        assert len(_versions(root)) == events_before + 1
        assert (_versions(root)[-1].facts or {}).get("dataset_version") == published["dataset_version"]
        cloud = dvc_run(root, "status", "--cloud", "--json")
        assert json.loads(cloud.stdout or "{}") == {}, cloud.stdout[:2000]  # every file of the version is there
    finally:
        subprocess.run(["umount", str(remote)], check=False)
