"""prefect.yaml as operators use it: `prefect deploy --all` against a `prefect server` on 127.0.0.1, then one
deployment (nightly-data) run by a process worker from the `cpu` pool, end to end."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def server(tmp_path):
    port = _free_port()
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-home"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("PREFECT_API_URL", None)
    proc = subprocess.Popen([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}/api"
    try:
        for _ in range(90):
            try:
                urllib.request.urlopen(f"{url}/health", timeout=2)
                break
            except OSError:
                time.sleep(1)
        else:
            pytest.fail("prefect server did not start in 90 s")
        yield {**env, "PREFECT_API_URL": url}
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=30)


def _prefect(env: dict, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    done = subprocess.run([str(BIN / "prefect"), *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done


@pytest.mark.slow
def test_deploy_all_then_a_process_worker_runs_the_nightly_data_deployment(server, trained_workspace, tmp_path):
    ws = tmp_path / "ws"
    shutil.copytree(trained_workspace[0].root, ws, symlinks=True)
    env = {**server, "MMFM_REPO": str(ROOT), "MMFM_WORKSPACE": str(ws), "MMFM_MONITOR_SOURCE": str(ws / "incoming"),
           "MMFM_PSEUDONYM_KEY": os.environ.get("MMFM_PSEUDONYM_KEY", "test-key-" + "1" * 40)}
    for pool in ("cpu", "gpu"):
        _prefect(env, "work-pool", "create", pool, "--type", "process")
    _prefect(env, "--no-prompt", "deploy", "--all")
    listed = _prefect(env, "deployment", "ls").stdout
    for name in ("pipeline/nightly-data", "version/nightly-version", "pipeline/retrain", "monitor/daily-monitor"):
        assert name in listed
    _prefect(env, "deployment", "run", "pipeline/nightly-data")
    worker = subprocess.Popen([str(BIN / "prefect"), "worker", "start", "--pool", "cpu"], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        states = {}
        for _ in range(240):  # the worker polls every few seconds; the run itself takes ~10-30 s
            states = {r["name"]: r["state_type"] for r in _flow_runs(env) if r["state_type"] != "SCHEDULED"}
            if states and all(s in ("COMPLETED", "FAILED", "CRASHED") for s in states.values()):
                break
            time.sleep(1)
    finally:
        os.killpg(worker.pid, 15)
        worker.wait(timeout=30)
    assert list(states.values()) == ["COMPLETED"], states


def _flow_runs(env: dict) -> list[dict]:
    request = urllib.request.Request(f"{env['PREFECT_API_URL']}/flow_runs/filter", data=b"{}", method="POST",
                                     headers={"Content-Type": "application/json"})
    return json.loads(urllib.request.urlopen(request, timeout=30).read())
