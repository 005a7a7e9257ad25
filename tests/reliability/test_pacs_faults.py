"""Fault: the PACS dies in the middle of `mmfm ingest pacs`.

Injected: a real Orthanc holding a few studies, with a Lua `IncomingHttpRequestFilter` (Orthanc's own hook, run for
each HTTP request) that SIGKILLs Orthanc itself when the second WADO-RS study retrieval arrives: QIDO-RS has
answered, one retrieval went out before, every later one meets a dead PACS. Deterministic, and nothing in mmfm is
replaced. Then Orthanc is started again on the same database and ports and ingest is rerun.

Asserted: every retrieval that failed was tried exactly 1 + retries times, the waits between tries follow the
configured growing delays; the command exits 1 with one line naming the PACS URL and no traceback, UID or patient
field; nothing was landed, staged, quarantined or recorded in the ledger and no `.dcm`/`.part` is left in the
workspace; the rerun ingests every study once (received == ingested + quarantined == files uploaded, one ledger
event, no duplicate staged row), and a third run fetches nothing.

Second case: no PACS at all when ingest starts (QIDO-RS refused): the same bounded retries, one error naming the URL,
nothing written.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import pydicom
import pytest
import yaml

from flows.ingest import ingest_pacs
from tasks.ingest.pacs import PacsError, find_studies, stow_instances
from tasks.ingest.staged import read_table
from tasks.ingest.state import IngestState
from tasks.lineage import Ledger
from tasks.synth.generate import SynthConfig, generate
from tasks.workspace import init_workspace
from tests.pacs.conftest import orthanc_factory, orthanc_install  # noqa: F401 - fixtures shared with tests/pacs

pytestmark = pytest.mark.slow

DELAYS = [0.25, 0.5, 1.0]  # params.yaml ingest.pacs.retry_delays for the test; the default is [2, 5, 15]
CRASH_ON_SECOND_RETRIEVAL = """
retrievals = 0
function IncomingHttpRequestFilter(method, uri, ip, username, httpHeaders)
  if method == 'GET' and string.match(uri, '^/dicom%-web/studies/[%d%.]+$') then
    retrievals = retrievals + 1
    if retrievals == 2 then
      os.execute('kill -KILL $PPID')  -- the shell's parent is Orthanc: it dies before answering
    end
  end
  return true
end
"""


def _mmfm(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """The real command in its own process (stderr as a user sees it), on the test session's Prefect API."""
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
    return subprocess.run([sys.executable, "-c", "from flows.cli import app; app()", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


async def _retrievals(workspace: Path) -> list[tuple[object, list]]:
    """(task run, its states in time order) of every retrieve-pacs-study run of the failed ingest of `workspace`."""
    from prefect import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
        FlowRunFilterState,
        FlowRunFilterStateType,
        TaskRunFilter,
        TaskRunFilterName,
    )
    from prefect.client.schemas.objects import StateType

    async with get_client() as client:
        failed = FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.FAILED])))
        runs = [r for r in await client.read_flow_runs(flow_run_filter=failed)
                if r.parameters.get("workspace") == str(workspace)]
        assert len(runs) == 1, runs
        task_runs = await client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[runs[0].id])),
            task_run_filter=TaskRunFilter(name=TaskRunFilterName(like_="retrieve-pacs-study")))
        out = []
        for tr in task_runs:
            states = sorted(await client.read_task_run_states(tr.id), key=lambda s: s.timestamp)
            out.append((tr, states))
        return out


def _task_history(workspace: Path, expected: int, timeout_s: float = 30.0) -> list[tuple[object, list]]:
    """Task-run states reach the API as events, a moment after the run ends: wait until each run shows a final one."""
    deadline = time.monotonic() + timeout_s
    while True:
        runs = asyncio.run(_retrievals(workspace))
        if len(runs) == expected and all(states and states[-1].is_final() for _, states in runs):
            return runs
        if time.monotonic() > deadline:
            raise AssertionError(f"task-run states incomplete after {timeout_s} s: "
                                 f"{[(tr.name, [s.name for s in st]) for tr, st in runs]}")
        time.sleep(0.5)


def _leftovers(ws) -> list[Path]:
    return [p for p in ws.root.rglob("*") if p.suffix in (".dcm", ".part") and ".git" not in p.parts]


def test_orthanc_killed_mid_ingest_fails_cleanly_and_the_rerun_ingests_each_study_once(
        orthanc_factory, tmp_path, monkeypatch, prefect_api, pseudonym_key):  # noqa: F811 - imported fixture
    cohort = tmp_path / "cohort"
    generate(cohort, SynthConfig(patients=2, sites=1, seed=7, missing_rate=0.0, cxr_size=32, ct_shape=(2, 16, 16)))
    files = sorted((cohort / "site-a" / "dicom").rglob("*.dcm"))
    headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    uids = {ds.StudyInstanceUID for ds in headers}
    identifiers = uids | {str(ds.PatientID) for ds in headers} | {str(ds.PatientName) for ds in headers}
    lua = tmp_path / "crash_on_second_retrieval.lua"
    lua.write_text(CRASH_ON_SECOND_RETRIEVAL)
    server = orthanc_factory(lua_scripts=(str(lua),))
    stow_instances(server.dicomweb_url, files, auth=server.auth)
    assert len(find_studies(server.dicomweb_url, auth=server.auth)) == len(uids) >= 3

    ws = init_workspace(tmp_path / "ws")
    params = yaml.safe_load(ws.params_file.read_text())
    params["ingest"]["pacs"] = {"retry_delays": DELAYS}
    ws.params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    monkeypatch.setenv("MMFM_PACS_PASSWORD", server.password)  # never on the command line
    args = ("ingest", "pacs", "--url", server.dicomweb_url, "--site", "site-a", "--user", server.user, "-w",
            str(ws.root))
    failed = _mmfm(*args, cwd=tmp_path)
    assert server.process.poll() is not None, "the Lua hook did not stop Orthanc"

    # one clear line, exit 1, no traceback, no identifier
    assert failed.returncode == 1, failed.stderr[-3000:]
    errors = [line for line in failed.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, failed.stderr[-3000:]
    assert server.dicomweb_url in errors[0] and "not retrieved" in errors[0] and "nothing was ingested" in errors[0]
    output = failed.stdout + failed.stderr
    assert "Traceback" not in output and not any(value in output for value in identifiers), output[-3000:]

    # bounded retries with growing back-off, read from Prefect's record of the task runs
    runs = _task_history(ws.root, expected=len(uids))
    gave_up = [(tr, states) for tr, states in runs if states[-1].is_failed()]
    assert len(gave_up) >= len(uids) - 1 and all(states[-1].is_completed() for tr, states in runs
                                                 if (tr, states) not in gave_up)
    for tr, states in gave_up:
        assert tr.run_count == 1 + len(DELAYS), [s.name for s in states]
        waits = [(s.state_details.scheduled_time - s.timestamp).total_seconds() for s in states
                 if s.name == "AwaitingRetry"]
        assert waits == pytest.approx(DELAYS, abs=0.05)
        starts = [s.timestamp for s in states if s.is_running()]
        gaps = [(b - a).total_seconds() for a, b in zip(starts, starts[1:], strict=False)]
        assert len(gaps) == len(DELAYS) and all(g >= d for g, d in zip(gaps, DELAYS, strict=True)), gaps

    # nothing half-done: no landed or staged data, no quarantine, no ledger event, no study marked fetched
    assert _leftovers(ws) == [] and not any(ws.landing.rglob("*")) and not any(ws.staged.rglob("*.parquet"))
    assert not any(ws.quarantine.rglob("*.parquet"))
    assert [e for e in Ledger.of_workspace(ws.root).events() if e.stage == "ingest"] == []
    assert IngestState(ws.state).fetched() == set()

    # the PACS comes back on the same database and ports; the rerun ingests every study exactly once
    server.lua_scripts = ()
    server.start()
    assert len(find_studies(server.dicomweb_url, auth=server.auth)) == len(uids)
    summary = ingest_pacs(url=server.dicomweb_url, workspace=ws.root, site="site-a", auth=server.auth)
    assert summary["studies_fetched"] == summary["studies_found"] == len(uids)
    assert summary["received"] == len(files) == summary["ingested"] + summary["quarantined"]
    imaging = read_table(ws.staged, "imaging")
    assert imaging.height > 0 and imaging["series_id"].n_unique() == imaging.height
    assert [e.run_id for e in Ledger.of_workspace(ws.root).events() if e.stage == "ingest"] == [summary["run_id"]]

    again = ingest_pacs(url=server.dicomweb_url, workspace=ws.root, site="site-a", auth=server.auth)
    assert again["studies_fetched"] == 0 and again["received"] == 0
    assert len([e for e in Ledger.of_workspace(ws.root).events() if e.stage == "ingest"]) == 1


def test_pacs_down_before_ingest_fails_in_bounded_time_and_changes_nothing(tmp_path, prefect_api, pseudonym_key):
    from tests.pacs.orthanc import free_port

    ws = init_workspace(tmp_path / "ws")
    params = yaml.safe_load(ws.params_file.read_text())
    params["ingest"]["pacs"] = {"retry_delays": [0.1, 0.2]}
    ws.params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    url = f"http://127.0.0.1:{free_port()}/dicom-web"  # nothing listens there
    started = time.monotonic()
    with pytest.raises(PacsError) as err:
        ingest_pacs(url=url, workspace=ws.root, site="site-a")
    assert time.monotonic() - started < 20
    assert str(err.value).startswith(f"PACS {url}: finding studies failed (QIDO-RS, 2 retries after [0.1, 0.2] s)")
    assert "refused" in str(err.value)
    assert _leftovers(ws) == [] and Ledger.of_workspace(ws.root).events() == []
