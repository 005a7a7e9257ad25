"""Fault: the MLflow tracking server dies during `mmfm register`, and stays down for the next attempt.

Injected: a real `mlflow server` on loopback (SQLite + local artifacts, no auth) whose process group is SIGKILLed by
a second client the moment the REST API lists the new model version, i.e. after the version exists and before the
register run has written its tags and alias. A second `register` then meets the dead server. Finally the server is
started again on the same store and port, and `register` is rerun.

Asserted: both failures exit 1 with one line naming the tracking URI and no traceback; the dead-server attempt (run
as a separate process, as a user would) gives up after exactly the configured number of retries; the version left
behind is marked `mmfm.registration=incomplete` and `load_verified` (the path of the gate, predict and monitor)
refuses it; the rerun completes that same version (no second one) with every tag, the alias and one ledger event,
and `load_verified` accepts it. Separately: the CLI's default MLflow retry bounds give up on a dead server within a
minute where MLflow's own defaults take minutes (computed with urllib3's Retry).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tasks.lineage import Ledger
from tests.registry.mlflow_server import _stop, _wait_ready, free_port, server_command, server_env

NAME = "mmfm-faults"
SMALL_RETRIES = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                 "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}


class Server:
    """A real `mlflow server` that can be killed and started again on the same store, artifacts and port."""

    def __init__(self, root: Path) -> None:
        self.root, self.port, self.proc = root, free_port(), None
        root.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Server:
        with (self.root / "server.log").open("ab") as log:
            self.proc = subprocess.Popen(server_command(self.root, self.port, auth=False), cwd=self.root,
                                         env=server_env(self.root, auth=False), stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        _wait_ready(self.url, self.proc, 120.0, self.root / "server.log")
        return self

    def kill(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None:
            _stop(self.proc)


def _kill_when_a_version_appears(server: Server, seen: dict, done: threading.Event) -> None:
    """The second client: poll the REST API; kill the server as soon as NAME has a version, keep what it showed."""
    query = urllib.parse.urlencode({"filter": f"name='{NAME}'"})
    url = f"{server.url}/api/2.0/mlflow/model-versions/search?{query}"
    while not done.is_set():
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                versions = json.loads(resp.read() or b"{}").get("model_versions") or []
        except OSError:
            versions = []
        if versions:
            server.kill()
            seen.update({t["key"]: t["value"] for t in versions[0].get("tags", [])}, version=versions[0]["version"])
            return
        time.sleep(0.02)


def _register(ws: Path):
    from flows.cli import app

    return CliRunner().invoke(app, ["register", "--name", NAME, "-w", str(ws), "--json"])


def _register_in_a_process(ws: Path) -> subprocess.CompletedProcess:
    """The real command as a user runs it (stderr as they see it, Prefect's log lines included), on the test
    session's Prefect API."""
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
    return subprocess.run([sys.executable, "-c", "from flows.cli import app; app()", "register", "--name", NAME,
                           "-w", str(ws)], env=env, capture_output=True, text=True, timeout=300)


def _one_error_line(exit_code: int, output: str, url: str) -> str:
    """Exit 1, one `error:` line naming the server as unreachable, no traceback."""
    assert exit_code == 1, output[-3000:]
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and url in errors[0] and "unreachable" in errors[0], output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    return errors[0]


@pytest.mark.slow
def test_server_killed_mid_register_leaves_a_marked_version_that_the_rerun_completes(
        trained_workspace, tmp_path, monkeypatch):
    import mlflow

    from tasks.registry.integrity import MANIFEST_HASH_TAG, IntegrityError
    from tasks.registry.staging import REGISTRATION, load_verified

    ws = tmp_path / "ws"
    shutil.copytree(trained_workspace[0].root, ws, symlinks=True)
    server = Server(tmp_path / "mlflow").start()
    try:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", server.url)
        for key, value in SMALL_RETRIES.items():
            monkeypatch.setenv(key, value)

        # 1. the server dies between creating the version and completing it
        seen: dict = {}
        done = threading.Event()
        killer = threading.Thread(target=_kill_when_a_version_appears, args=(server, seen, done), daemon=True)
        killer.start()
        try:
            killed = _register(ws)
        finally:
            done.set()
            killer.join(timeout=10)
        assert seen, f"the server was never killed: register finished first\n{killed.output}"
        assert seen.get(REGISTRATION) == "incomplete", seen  # born marked, as the version was first seen
        _one_error_line(killed.exit_code, killed.output, server.url)

        # 2. the server stays down: the command retries the first request twice (urllib3 logs each), then one line
        dead = _register_in_a_process(ws)
        _one_error_line(dead.returncode, dead.stdout + dead.stderr, server.url)
        retried = [line for line in dead.stderr.splitlines() if "Retrying (Retry(" in line]
        assert len(retried) == int(SMALL_RETRIES["MLFLOW_HTTP_REQUEST_MAX_RETRIES"]), dead.stderr[-3000:]

        # 3. back on the same store: the left-over version is marked and refused by the loader
        server.start()
        client = mlflow.MlflowClient(tracking_uri=server.url, registry_uri=server.url)
        left = client.get_model_version(NAME, seen["version"])
        assert left.tags.get(REGISTRATION) == "incomplete"
        with pytest.raises(IntegrityError, match="registration incomplete"):
            load_verified(f"{NAME}/{left.version}", tmp_path / "refused")

        # 4. the rerun completes that version: one version, whole, aliased, recorded once, loadable
        rerun = _register(ws)
        assert rerun.exit_code == 0, rerun.output
        summary = json.loads(rerun.stdout.strip().splitlines()[-1])
        assert summary["version"] == left.version and summary["completed_earlier_attempt"] is True
        versions = client.search_model_versions(f"name='{NAME}'")
        assert [v.version for v in versions] == [left.version]
        tags = versions[0].tags
        assert tags[REGISTRATION] == "complete" and tags["mmfm.content_sha256"] and tags[MANIFEST_HASH_TAG]
        assert tags["mmfm.lineage_event"] == summary["lineage_event"]
        assert client.get_model_version_by_alias(NAME, "challenger").version == left.version
        events = [e for e in Ledger.of_workspace(ws).events() if e.stage == "register"]
        assert [e.run_id for e in events] == [f"{NAME}/{left.version}"]
        assert load_verified(f"{NAME}@challenger", tmp_path / "loaded") is not None
    finally:
        server.stop()


def test_cli_bounds_mlflow_retries_to_well_under_a_minute(monkeypatch):
    """Worst-case wait of one request to a dead server, with urllib3's own back-off arithmetic (the Retry MLflow
    builds from these variables), under the CLI's bounds and under MLflow's defaults."""
    from mlflow.environment_variables import (
        MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR,
        MLFLOW_HTTP_REQUEST_BACKOFF_JITTER,
        MLFLOW_HTTP_REQUEST_MAX_RETRIES,
    )
    from urllib3.util.retry import Retry

    from tasks.settings import MLFLOW_CLIENT_BOUNDS, bounded_mlflow_retries

    def worst_case(retries: int, factor: float, jitter: float) -> float:
        retry, waited = Retry(total=retries, connect=retries, backoff_factor=factor), 0.0
        for _ in range(retries):
            retry = retry.increment(method="GET", url="/", error=ConnectionRefusedError())
            waited += retry.get_backoff_time() + jitter
        return waited

    for key in MLFLOW_CLIENT_BOUNDS:
        monkeypatch.delenv(key, raising=False)
    bounded_mlflow_retries()
    assert {k: os.environ[k] for k in MLFLOW_CLIENT_BOUNDS} == MLFLOW_CLIENT_BOUNDS
    ours = worst_case(MLFLOW_HTTP_REQUEST_MAX_RETRIES.get(), MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR.get(),
                      MLFLOW_HTTP_REQUEST_BACKOFF_JITTER.get())
    theirs = worst_case(MLFLOW_HTTP_REQUEST_MAX_RETRIES.default, MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR.default,
                        MLFLOW_HTTP_REQUEST_BACKOFF_JITTER.default)
    assert ours < 40 and theirs > 200, (ours, theirs)

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")  # a user's own setting wins
    bounded_mlflow_retries()
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "1"
