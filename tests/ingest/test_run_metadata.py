"""What an ingest leaves outside the workspace's data (issue 17): Prefect's run database, the `--json` summary and the
CLI's error line hold no source path, no extract file name and no exception text quoting input.

The extract's folder and one of its files carry a canary (as a patient's name and MRN would), its manifest's
transactionTime is a malformed canary, and a second run has its FHIR task raise an OSError naming a canary file,
chained from a ValueError quoting a canary value. Then every text column of every table of Prefect's SQLite database
(flow-run parameters, logs, task/flow-run states, events) is searched for them."""

from __future__ import annotations

import json
import pickle
import shutil
import sqlite3
import time
import traceback
from datetime import datetime
from pathlib import Path

import pydantic
import pytest
from typer.testing import CliRunner

import flows.ingest as ingest_flows
from flows.boundary import WITHHELD
from flows.cli import app
from flows.cli.common import error_line
from flows.ingest import ingest_fhir_flow, ingest_omics_flow, ingest_pacs
from flows.monitor import monitor_flow
from flows.predict import predict_flow
from tasks.ingest.guards import IngestRefused
from tasks.runners import task_runner
from tasks.scrub import PipelineError, rule_of, scrub
from tasks.synth.generate import SynthConfig, generate
from tasks.workspace import init_workspace

CANARY = "Canaryname_MRN98765"
runner = CliRunner()


@pytest.fixture(scope="module")
def fhir_export(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run-metadata") / "cohort"
    generate(out, SynthConfig(patients=3, sites=1, seed=5, missing_rate=0.0, cxr_size=16, ct_shape=(2, 8, 8)))
    return out / "site-a" / "fhir"


def _canary_extract(fhir: Path, root: Path) -> Path:
    """The export under a folder named like a patient, its Patient file too, and a transactionTime quoting them."""
    src = root / CANARY / "fhir"
    shutil.copytree(fhir, src)
    manifest = json.loads((src / "manifest.json").read_text())
    manifest["transactionTime"] = f"{CANARY}-not-a-time"
    for entry in manifest["output"]:
        if entry["type"] == "Patient":
            entry["url"] = f"{CANARY}_Patient.ndjson"
    (src / "Patient.ndjson").rename(src / f"{CANARY}_Patient.ndjson")
    (src / "manifest.json").write_text(json.dumps(manifest))
    return src


def _raises_with_values(src: Path):
    def broken(*args, **kwargs):
        try:
            datetime.fromisoformat(f"{CANARY}-not-a-time")  # ValueError: Invalid isoformat string: 'Canaryname...'
        except ValueError as exc:
            raise FileNotFoundError(2, f"cannot read {CANARY}", str(src / f"{CANARY}_Patient.ndjson")) from exc

    return broken


def _database() -> Path:
    import prefect.settings

    url = prefect.settings.PREFECT_SERVER_DATABASE_CONNECTION_URL.value()
    assert url.startswith("sqlite"), url
    return Path(url.split(":///", 1)[1])


def _rows(con: sqlite3.Connection, sql: str, *args) -> list:
    return con.execute(sql, args).fetchall()


def _wait_until_stored(db: Path, workspace: Path, timeout: float = 30.0) -> None:
    """Logs (every 2 s) and events (every 5 s) reach the database in batches: wait until the failed run's are there."""
    deadline = time.monotonic() + timeout
    while True:
        with sqlite3.connect(db) as con:
            runs = [r[0] for r in _rows(con, "SELECT id FROM flow_run WHERE parameters LIKE ?", f"%{workspace}%")]
            logs = [r[0] for r in _rows(con, "SELECT message FROM log")]
            events = [r[0] for r in _rows(con, "SELECT resource_id FROM events WHERE event = "
                                               "'prefect.flow-run.Failed'")]
        if (runs and any("PipelineError" in m for m in logs)
                and any(e.endswith(str(runs[0])) for e in events)):
            return
        assert time.monotonic() < deadline, "Prefect's database never received the failed run's logs and events"
        time.sleep(0.5)


def _hits(db: Path, needles: list[str]) -> list[str]:
    """Every (table.column) whose text holds a needle, over every table and column of the database."""
    found = []
    with sqlite3.connect(db) as con:
        for (table,) in _rows(con, "SELECT name FROM sqlite_master WHERE type = 'table'"):
            for column in [r[1] for r in _rows(con, f"PRAGMA table_info('{table}')")]:
                for needle in needles:
                    n = _rows(con, f"SELECT count(*) FROM '{table}' WHERE "
                                   f"instr(lower(CAST(\"{column}\" AS TEXT)), lower(?)) > 0", needle)[0][0]
                    if n:
                        found.append(f"{table}.{column} ({needle}: {n})")
    return found


def test_prefect_database_summary_and_errors_hold_no_source_name(fhir_export, tmp_path, prefect_api, pseudonym_key,
                                                                  monkeypatch):
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect-home"))  # the CLI only sets a default
    src = _canary_extract(fhir_export, tmp_path)
    ws = init_workspace(tmp_path / "ws")

    # through the CLI: the summary names the landing extract and objects, never a file of the extract
    res = runner.invoke(app, ["ingest", "fhir", str(src), "--site", "site-a", "-w", str(ws.root), "--json"])
    assert CANARY.lower() not in res.output.lower()
    if res.exit_code == 0:  # the malformed transactionTime is quarantined (tasks/ingest), the rest ingested
        summary = json.loads(res.stdout.strip().splitlines()[-1])
        assert summary["received"] == summary["ingested"] + summary["quarantined"] > 0
        assert summary["manifest"] and all(k.startswith("data/landing/objects/") for k in summary["manifest"])
        assert len(summary["extract_id"]) == 16
    else:  # a task raised: one value-free line
        lines = [line for line in res.output.splitlines() if line.startswith("error:")]
        assert len(lines) == 1 and "ingest-fhir" in lines[0], res.output

    # a task raising an exception that quotes a path and, in its cause, a value: the run fails value-free
    monkeypatch.setattr(ingest_flows, "ingest_fhir", _raises_with_values(src))
    ws2 = init_workspace(tmp_path / "ws2")
    with pytest.raises(PipelineError) as caught:
        ingest_fhir_flow(source=src, workspace=ws2.root, site="site-a")
    err = caught.value
    assert (err.rule, err.where) == ("io.not_found", "ingest-fhir-export")
    assert CANARY not in "".join(traceback.format_exception(err))
    res = runner.invoke(app, ["ingest", "fhir", str(src), "--site", "site-a", "-w", str(tmp_path / "ws2")])
    assert res.exit_code == 1 and CANARY.lower() not in res.output.lower()
    assert "io.not_found" in res.output

    db = _database()
    _wait_until_stored(db, ws2.root)
    leaks = _hits(db, [CANARY, str(src), str(tmp_path / CANARY)])
    assert not leaks, leaks
    with sqlite3.connect(db) as con:  # and it did record the runs: parameters withheld, the rule in the state
        params = [json.loads(r[0]) for r in _rows(con, "SELECT parameters FROM flow_run WHERE parameters LIKE ?",
                                                      f"%{ws2.root}%")]
        states = [r[0] for r in _rows(con, "SELECT message FROM task_run_state WHERE message LIKE ?",
                                      "%io.not_found%")]
    assert params and all(p["source"] == WITHHELD for p in params)
    assert states and all("ingest-fhir-export" in m for m in states)


# ---- the pieces, fast ------------------------------------------------------------------------------------------------

class _Model(pydantic.BaseModel):
    count: int


def _pydantic():
    _Model(count=CANARY)


def _json():
    json.loads('{"name": "' + CANARY)


def _missing_file(tmp_path: Path):
    (tmp_path / f"{CANARY}.dcm").read_bytes()


CASES = [  # (what raises, the rule it leaves under)
    (lambda tmp: datetime.fromisoformat(CANARY), "input.value"),
    (lambda tmp: int(CANARY), "input.value"),
    (lambda tmp: _pydantic(), "input.structure"),
    (lambda tmp: _json(), "input.json"),
    (lambda tmp: {}[CANARY], "input.missing_key"),
    (_missing_file, "io.not_found"),
    (lambda tmp: (CANARY.encode() + b"\xff").decode("utf-8"), "input.encoding"),
    (lambda tmp: CANARY + 1, "input.type"),
]


@pytest.mark.parametrize(("fail", "rule"), CASES)
def test_an_exception_leaves_a_step_by_its_rule_only(fail, rule, tmp_path):
    def step():
        try:
            fail(tmp_path)
        except Exception as exc:  # noqa: BLE001
            raise scrub(exc, "some-step") from None

    with pytest.raises(PipelineError) as caught:
        step()
    err = caught.value
    assert (err.rule, err.where) == (rule, "some-step")
    assert CANARY not in "".join(traceback.format_exception(err)) + repr(err) + error_line(err)
    assert err.__context__ is not None and err.__suppress_context__  # kept for --debug, never printed
    again = pickle.loads(pickle.dumps(err))  # crosses Dask/Ray process boundaries whole
    assert (again.rule, again.where, str(again)) == (err.rule, err.where, str(err))


def test_a_value_free_exception_passes_with_its_cause_hidden():
    try:
        try:
            int(CANARY)
        except ValueError as cause:
            raise IngestRefused("the extract path does not exist") from cause
    except IngestRefused as exc:
        kept = scrub(exc, "some-step")
    assert isinstance(kept, IngestRefused) and str(kept) == "the extract path does not exist"
    assert CANARY not in "".join(traceback.format_exception(kept))
    assert CANARY in str(kept.__context__)


@pytest.mark.parametrize("exc", [json.JSONDecodeError("Expecting value", f'{{"a": {CANARY}', 6),
                                 FileNotFoundError(2, "No such file or directory", f"/x/{CANARY}.dcm"),
                                 KeyError(CANARY)])
def test_the_cli_error_line_quotes_no_input(exc):
    line = error_line(exc)
    assert CANARY not in line and rule_of(exc)[0] in line and type(exc).__name__ not in line
    assert error_line(IngestRefused("site 'x' is not a site name")) == "site 'x' is not a site name"


def test_prefect_stores_no_extract_path_among_a_runs_parameters(tmp_path):
    source = tmp_path / CANARY
    flows = [(ingest_fhir_flow, {"source": source, "workspace": tmp_path, "site": "site-a"}),
             (ingest_omics_flow, {"source": source, "workspace": tmp_path, "site": "site-a", "sample_sheet": source}),
             (ingest_pacs, {"url": "http://127.0.0.1:1/dicom-web", "workspace": tmp_path, "site": "site-a",
                            "auth": ("user", CANARY)}),
             (monitor_flow, {"workspace": tmp_path, "source": source}),
             (predict_flow, {"workspace": tmp_path, "model": "m@champion", "source": source})]
    for fl, params in flows:
        for variant in (fl, fl.with_options(task_runner=task_runner("threads"))):  # the CLI's with_options too
            stored = json.dumps(variant.serialize_parameters(params))
            assert CANARY not in stored and WITHHELD in stored, (fl.name, stored)
    assert predict_flow.serialize_parameters({"workspace": tmp_path, "source": None})["source"] is None
