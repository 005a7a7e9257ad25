"""The same ingest on Prefect's thread runner, a local Dask cluster (2 worker processes) and a local Ray cluster
(2 CPUs) writes the same bytes: outputs depend on the input, never on the scheduler. The clusters listen and
connect on loopback only and leave no process behind."""

from __future__ import annotations

import hashlib
import ipaddress
import os
import threading
import uuid

import psutil
import pytest

from flows.ingest import ingest_dicom
from tasks.runners import task_runner
from tasks.synth.generate import SynthConfig, generate
from tasks.workspace import init_workspace

pytestmark = pytest.mark.slow

MARK = "MMFM_TEST_RUNNER_MARK"  # every process this test's clusters start inherits it from the environment


def _staged_digest(ws) -> dict[str, str]:
    return {p.relative_to(ws.staged).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(ws.staged.rglob("*")) if p.is_file()}


def _marked(mark: str) -> list[psutil.Process]:
    """Processes started from this one since `mark` was set (by environment, so re-parented ones count too)."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.pid != os.getpid() and proc.environ().get(MARK) == mark:
                found.append(proc)
        except psutil.Error:
            continue
    return found


def _cluster_processes(mark: str) -> list[psutil.Process]:
    """The marked processes but multiprocessing's resource tracker, which serves this Python process (Dask's
    workers are spawned through it) and ends with it."""
    found = []
    for proc in _marked(mark):
        try:
            if "multiprocessing.resource_tracker" not in " ".join(proc.cmdline()):
                found.append(proc)
        except psutil.Error:
            continue
    return found


def _loopback(ip: str) -> bool:
    addr = ipaddress.ip_address(ip.split("%")[0])
    return (getattr(addr, "ipv4_mapped", None) or addr).is_loopback


class SocketWatch(threading.Thread):
    """Polls the TCP sockets of this process and of the marked ones while a flow runs."""

    def __init__(self, mark: str):
        super().__init__(daemon=True)
        self.mark, self.stop, self.listening, self.outside = mark, threading.Event(), set(), set()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while not self.stop.wait(0.5):
                self._poll()
        except BaseException as exc:  # noqa: BLE001 - re-raised by the test, not lost in a thread
            self.error = exc

    def _poll(self) -> None:
        for proc in [psutil.Process(), *_marked(self.mark)]:
            try:
                name, conns = proc.name(), proc.net_connections(kind="inet")
            except psutil.Error:
                continue
            for c in conns:
                if c.status == psutil.CONN_LISTEN and proc.pid != os.getpid():
                    self.listening.add((name, c.laddr.ip, c.laddr.port))
                for addr in (c.laddr, c.raddr):
                    if addr and not _loopback(addr.ip):
                        self.outside.add((name, c.status, addr.ip, addr.port))


def test_threads_dask_and_ray_write_identical_outputs_on_loopback(tmp_path, prefect_api, pseudonym_key,
                                                                   monkeypatch):
    cohort = tmp_path / "cohort"
    generate(cohort, SynthConfig(patients=10, sites=1, seed=15, corrupt_rate=0.1, cxr_size=48, ct_shape=(4, 24, 24)))
    for var in ("MMFM_DASK_ADDRESS", "MMFM_RAY_ADDRESS", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER",
                "RAY_USAGE_STATS_ENABLED"):
        monkeypatch.setenv(var, "")  # restored after the test: task_runner sets the RAY_* ones itself
        monkeypatch.delenv(var)
    digests, summaries = [], []
    for runner in ("threads", "dask", "ray"):
        mark = uuid.uuid4().hex
        monkeypatch.setenv(MARK, mark)
        ws = init_workspace(tmp_path / runner)
        flow = ingest_dicom.with_options(task_runner=task_runner(runner))
        watch = SocketWatch(mark)
        watch.start()
        try:
            summaries.append(flow(source=cohort / "site-a" / "dicom", workspace=ws.root, site="site-a", max_items=8))
        finally:
            watch.stop.set()
            watch.join()
        digests.append(_staged_digest(ws))
        assert watch.error is None, f"{runner}: the socket watch failed: {watch.error!r}"
        assert not watch.outside, f"{runner}: sockets off loopback {sorted(watch.outside)}"
        if runner != "threads":  # the watch saw the cluster's servers, all of them on loopback
            assert watch.listening, f"{runner}: no cluster process was seen listening"
        _, alive = psutil.wait_procs(_cluster_processes(mark), timeout=20)
        assert not alive, f"{runner}: processes left behind {[(p.pid, p.name()) for p in alive]}"
    assert digests[0] == digests[1] == digests[2] and any(k.startswith("images/") for k in digests[0])
    keep = ("received", "ingested", "quarantined", "quarantine_reasons", "tables")
    accounting = [{k: s[k] for k in keep} for s in summaries]
    assert accounting[0] == accounting[1] == accounting[2] and accounting[0]["quarantined"] > 0
