"""A flow run left RUNNING by `kill -9` is marked CRASHED by the heartbeat automation shipped in prefect.yaml,
shown against a real `prefect server` on 127.0.0.1.

In Prefect 3.9.1 the flow engine itself emits `prefect.flow-run.heartbeat` events from a daemon thread every
PREFECT_FLOWS_HEARTBEAT_FREQUENCY seconds (minimum 30) for every flow run, including runs started directly in a
process (`mmfm pipeline`), not only for runs a worker or runner starts; so the pipeline is run directly here.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import pytest
import yaml

from tests.reliability.demo_runs import KEY, TAG_ENV, leftovers
from tests.test_deployments import BIN, ROOT, server  # noqa: F401 - the real `prefect server` fixture

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]  # a server, a pipeline, then the 90 s crash window
HEARTBEAT_S = 30


def _api(env: dict, path: str, body: dict | None = None):
    request = urllib.request.Request(f"{env['PREFECT_API_URL']}{path}", data=json.dumps(body or {}).encode(),
                                     method="POST", headers={"Content-Type": "application/json"})
    return json.loads(urllib.request.urlopen(request, timeout=30).read())


def _runs(env: dict) -> dict[str, dict]:
    flows = {f["id"]: f["name"] for f in _api(env, "/flows/filter")}
    return {r["id"]: {**r, "flow": flows.get(r["flow_id"])} for r in _api(env, "/flow_runs/filter")}


def _heartbeats(env: dict) -> set[str]:
    """Flow-run ids the server has heartbeat events for."""
    found = _api(env, "/events/filter", {"filter": {"event": {"name": ["prefect.flow-run.heartbeat"]}},
                                         "limit": 50})
    return {e["resource"]["prefect.resource.id"].removeprefix("prefect.flow-run.") for e in found["events"]}


def test_a_killed_pipeline_run_is_marked_crashed_by_the_heartbeat_automation(server, tmp_path):  # noqa: F811
    automation = yaml.safe_load((ROOT / "prefect.yaml").read_text())["automations"][0]
    window = int(automation["trigger"]["within"])
    created = subprocess.run([str(BIN / "prefect"), "automation", "create", "--from-file", str(ROOT / "prefect.yaml")],
                             cwd=ROOT, env=server, capture_output=True, text=True, timeout=120)
    assert created.returncode == 0, created.stdout + created.stderr
    ws = tmp_path / "ws"
    env = {**server, "MMFM_PSEUDONYM_KEY": KEY, "OMP_NUM_THREADS": "1", TAG_ENV: "crash-marking",
           "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(HEARTBEAT_S)}
    mmfm = [sys.executable, "-m", "flows.cli"]
    for args in (["init", str(ws)], ["synth", "--out", str(ws / "extracts" / "c"), "--patients", "8"]):
        done = subprocess.run([*mmfm, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
    proc = subprocess.Popen([*mmfm, "pipeline", "-w", str(ws)], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            running = {i for i, r in _runs(env).items() if r["state_type"] == "RUNNING"}
            beating = running & _heartbeats(env)
            if any(_runs(env)[i]["flow"] == "pipeline" for i in beating):
                break
            time.sleep(1)
        assert proc.poll() is None, "the pipeline ended before a heartbeat reached the server"
        os.killpg(proc.pid, signal.SIGKILL)
        killed_at = time.monotonic()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert leftovers("crash-marking") == []
    # a run whose first heartbeat never reached the server is not watched (the trigger starts `after` one)
    zombies = {i for i, r in _runs(env).items() if r["state_type"] == "RUNNING"} & _heartbeats(env)
    assert zombies, "nothing with a heartbeat was left RUNNING by the kill"
    while time.monotonic() - killed_at < window + 60:
        runs = _runs(env)
        states = {i: runs[i] for i in zombies}
        if all(r["state_type"] == "CRASHED" for r in states.values()):
            break
        time.sleep(2)
    crashed_after = time.monotonic() - killed_at
    assert "pipeline" in {r["flow"] for r in states.values()}
    assert all(r["state_type"] == "CRASHED" for r in states.values()), \
        {r["flow"]: r["state_type"] for r in states.values()}
    assert all("no heartbeat" in (r["state"]["message"] or "") for r in states.values())
    print(f"{len(zombies)} run(s) marked CRASHED {crashed_after:.0f} s after the kill (window {window} s): "
          f"{sorted(r['flow'] for r in states.values())}")
    assert crashed_after <= window + 60
