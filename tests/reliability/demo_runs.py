"""`mmfm demo` as a real subprocess in its own process group: start it, SIGKILL the group the moment a real side
effect shows a stage is in flight, and read back what a run left behind (tables, ledger, MLflow, processes).

Every run carries MMFM_RELIABILITY_RUN=<tag> in its environment, which every descendant inherits (the ephemeral
Prefect server, DVC, torchrun ranks), so "no processes of ours left" is checked by scanning /proc for the tag,
whatever process group or session a child may have moved to.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
SITECUSTOMIZE = Path(__file__).resolve().parent / "sitecustomize"
TAG_ENV = "MMFM_RELIABILITY_RUN"
KEY = "reliability-key-" + "2" * 40  # one key for every run: the same pseudonyms, so tables compare byte for byte
PATIENTS = 12


def make_workspace(root: Path) -> Path:
    """tests/test_cli.py's quick workspace, with more pre-training steps than checkpoints so a kill can land
    between a checkpoint and the end of training."""
    from tests.test_cli import quick_workspace

    quick_workspace(root)
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["pretrain"].update(steps=12, checkpoint_every=3, eval_every=6)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return root


@dataclass
class Run:
    """One `mmfm demo` process: its exit status, output, and whether we killed it."""

    tag: str
    returncode: int
    stdout: str
    stderr: str
    killed_at: str | None = None  # the watched side effect that triggered the kill
    seconds: float = 0.0
    facts: dict = field(default_factory=dict)  # what the watcher saw at the moment of the kill

    def summary(self) -> dict:
        return json.loads(self.stdout.strip().splitlines()[-1])

    def published(self) -> list[tuple[str, str]]:
        """(source, site) of every extract the pipeline's ingest published in this run (flows/ingest.py publish()
        logs it last); the demo's monitor ingests a shifted extract later, after "data stages ran"."""
        found = []
        for line in self.stderr.splitlines():
            if line.startswith("data stages ran"):
                break
            if "ingested " in line and " items (" in line and " from site " in line:
                words = line.split("ingested ", 1)[1].split()  # N of M SOURCE items (Q quarantined) from site S
                found.append((words[3], line.rsplit(" from site ", 1)[1].strip()))
        return found

    def skipped_stages(self) -> set[str]:
        return {line.split("stage ", 1)[1].split()[0] for line in self.stderr.splitlines()
                if "is up to date: skipped" in line}


def demo_env(tag: str, egress_log: Path | None = None, fault: str | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "PREFECT_HOME", "MMFM_FAULT_KILL_AT")}
    env.update({TAG_ENV: tag, "MMFM_PSEUDONYM_KEY": KEY, "OMP_NUM_THREADS": "1", "PREFECT_LOGGING_LEVEL": "INFO",
                "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",  # migrations on a busy 2-core machine
                "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"})
    if egress_log is not None:
        env["MMFM_EGRESS_LOG"] = str(egress_log)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SITECUSTOMIZE), env.get("PYTHONPATH")) if p)
    if fault:
        env["MMFM_FAULT_KILL_AT"] = fault
    return env


def run_demo(ws: Path, logs: Path, *, kill_when: tuple[str, Callable[[Path], dict | None]] | None = None,
             egress_log: Path | None = None, fault: str | None = None, timeout: float = 900) -> Run:
    """Run `mmfm demo` on `ws` to the end, or SIGKILL its process group as soon as `kill_when[1](ws)` returns facts
    (polled every 20 ms). With `fault`, the run kills itself at that point (tasks/faults.py)."""
    tag = uuid.uuid4().hex
    logs.mkdir(parents=True, exist_ok=True)
    out, err = logs / f"{tag}.out", logs / f"{tag}.err"
    t0 = time.perf_counter()
    with open(out, "w") as fo, open(err, "w") as fe:
        proc = subprocess.Popen([sys.executable, "-m", "flows.cli", "demo", "--patients", str(PATIENTS),
                                 "--workspace", str(ws), "--json"], cwd=ROOT, stdout=fo, stderr=fe,
                                env=demo_env(tag, egress_log, fault), start_new_session=True)
        killed_at, facts = None, {}
        try:
            while proc.poll() is None and time.perf_counter() - t0 < timeout:
                if kill_when is not None and (facts := kill_when[1](ws)):
                    os.killpg(proc.pid, signal.SIGKILL)
                    killed_at = kill_when[0]
                    break
                time.sleep(0.02)
            else:
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGKILL)
                    killed_at = "timeout"
        finally:
            proc.wait(timeout=60)
    return Run(tag, proc.returncode, out.read_text(), err.read_text(), killed_at, round(time.perf_counter() - t0, 1),
               facts or {})


def leftovers(tag: str, grace_s: float = 10.0) -> list[str]:
    """Processes (pid + command line) whose environment carries the run's tag, after up to `grace_s` seconds for
    the kernel to finish tearing the killed group down."""
    deadline = time.monotonic() + grace_s
    while True:
        found = []
        marker = f"{TAG_ENV}={tag}".encode()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if marker in (entry / "environ").read_bytes().split(b"\0"):
                    state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
                    if state != "Z":  # a zombie has exited; only its parent's wait() is pending
                        command = (entry / "cmdline").read_bytes().replace(b"\0", b" ")[:160]
                        found.append(f"{entry.name}: {command.decode(errors='replace')}")
            except OSError:
                continue
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


# ---- what a workspace holds ----------------------------------------------------------------------------------------

def mlflow_rows(ws: Path, sql: str) -> list[tuple]:
    db = ws / ".mmfm" / "mlflow.db"
    if not db.exists():
        return []
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)) as con:
        try:
            return con.execute(sql).fetchall()
        except sqlite3.OperationalError:  # tables not created yet, or locked for a moment
            return []


def finished_runs(ws: Path) -> Counter:
    """MLflow runs counted as complete, per run name (a monitoring area's keyed digest dropped: it names the area,
    and is keyed by the extract's path, which differs between workspaces)."""
    rows = mlflow_rows(ws, "SELECT name FROM runs WHERE status = 'FINISHED'")
    return Counter(re.sub(r"-(?:extract-[0-9a-f]{16}|[0-9a-f]{8})$", "", name) for (name,) in rows)


def registered_versions(ws: Path) -> list[tuple]:
    return mlflow_rows(ws, "SELECT name, version FROM model_versions ORDER BY name, version")


def ledger_events(ws: Path) -> list:
    from tasks.lineage import Ledger

    return Ledger.of_workspace(ws).events()
