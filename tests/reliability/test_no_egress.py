"""No egress: the whole demo (CLI, ephemeral Prefect server, DVC, MLflow, every Python subprocess) opens no
connection and resolves no name outside this host.

tests/reliability/sitecustomize/sitecustomize.py is put on PYTHONPATH, so every Python process of the run installs
an audit hook (sys.addaudithook) for socket.connect / socket.sendto / socket.getaddrinfo that records each
destination before the call proceeds, and refuses non-local ones. Non-Python processes (git) are not hooked; the
demo runs git only on local repositories.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter

import pytest

from tests.reliability.demo_runs import SITECUSTOMIZE


def _records(folder) -> list[dict]:
    return [json.loads(line) for f in sorted(folder.glob("*.ndjson")) for line in f.read_text().splitlines()]


def test_the_recorder_sees_and_refuses_a_non_loopback_connect_in_a_child_process(tmp_path):
    env = {**os.environ, "MMFM_EGRESS_LOG": str(tmp_path / "egress"),
           "PYTHONPATH": os.pathsep.join(p for p in (str(SITECUSTOMIZE), os.environ.get("PYTHONPATH")) if p)}
    child = ("import socket, subprocess, sys\n"
             "s = socket.socket(); s.settimeout(0.2)\n"
             "try:\n    s.connect(('10.255.255.1', 9))\nexcept PermissionError:\n    print('refused')\n"
             "subprocess.run([sys.executable, '-c', 'import socket; socket.getaddrinfo(\"localhost\", 80)'])\n")
    done = subprocess.run([sys.executable, "-c", child], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "refused", done.stderr
    seen = _records(tmp_path / "egress")
    outside = [r for r in seen if r["event"] == "socket.connect" and r["host"] == "10.255.255.1"]
    assert len(outside) == 1 and outside[0]["local"] is False
    grandchild = [r for r in seen if r["event"] == "socket.getaddrinfo" and r["pid"] != outside[0]["pid"]]
    assert grandchild and grandchild[0]["host"] == "localhost" and grandchild[0]["local"] is True


@pytest.mark.slow
def test_the_demo_opens_no_connection_outside_loopback(clean_demo):
    ws, run, egress = clean_demo
    seen = _records(egress)
    started = {r["pid"]: r["command"] for r in seen if r["event"] == "process.start"}
    calls = [r for r in seen if r["event"] != "process.start"]
    outside = [r for r in calls if not r["local"]]
    summary = Counter((r["event"], r.get("family", ""), r.get("host", r.get("address", ""))) for r in calls)
    print(f"egress recorder: {len(started)} Python processes hooked, {len(calls)} socket calls: {dict(summary)}")
    assert outside == [], outside[:10]
    assert any(r["event"] == "socket.connect" and r.get("host") in ("127.0.0.1", "::1") for r in calls), \
        "no loopback connection seen: the recorder did not run in the demo's processes"
    commands = list(started.values())
    for what, needle in (("the CLI", "flows.cli demo"), ("the ephemeral Prefect server", "prefect.server.api.server"),
                         ("DVC", "-m dvc")):
        assert any(needle in c for c in commands), f"{what} ran without the recorder: {commands[:5]}"
