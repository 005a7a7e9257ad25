"""What an operator sees from the real `mmfm` console script: a wrong argument refused at once in one plain line
(no Prefect server started, no Python class name, no Prefect log line), `--version`, paths never folded when the
output is piped, tables instead of Python reprs, and a `pipeline` with nothing to do answered without Prefect."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flows.cli import app

MMFM = str(Path(sys.executable).parent / "mmfm")  # the console script pyproject installs
CLASS_NAME = re.compile(r"\b[A-Z]\w*(Error|Exception|Refused|Blocked)\b")
runner = CliRunner()


def mmfm(*args: str, home: Path, timeout: float = 120) -> tuple[subprocess.CompletedProcess, float]:
    """Run the console script as a user would (no test Prefect API: it would start its own), piped."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MMFM_VERBOSE"))}
    env["PREFECT_HOME"] = str(home)  # where a Prefect server started by this command would put its database
    t0 = time.perf_counter()
    done = subprocess.run([MMFM, *args], capture_output=True, text=True, env=env, timeout=timeout)
    return done, time.perf_counter() - t0


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    ws = tmp_path_factory.mktemp("cli") / "ws"
    assert runner.invoke(app, ["init", str(ws)]).exit_code == 0
    return ws


def assert_one_plain_error_line(done: subprocess.CompletedProcess, *expected: str) -> str:
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    line = lines[0]
    assert line.startswith("error: ") and "ERROR |" not in done.stderr and "Traceback" not in done.stderr
    assert not CLASS_NAME.search(line), line
    for text in expected:
        assert text in line, line
    return line


@pytest.mark.parametrize("args, expected", [
    (["monitor", "no-such-extract"], ["SOURCE", "no such file or folder"]),
    (["predict", "--model", "mmfm-multimodal"], ["--model", "NAME@alias"]),
    (["predict", "--model", "mmfm-multimodal@champion", "--split", "everything"], ["--split", "test, val"]),
    (["promote", "mmfm-multimodal", "--approver", "a", "--reason", "r"], ["MODEL"]),
    (["ingest", "dicom", ".", "--site", "site-a", "--runner", "spark"], ["--runner", "threads, dask, ray"]),
    (["ingest", "fhir", "no-such-export", "--site", "site-a"], ["SOURCE"]),
])
def test_a_wrong_argument_is_refused_at_once_in_one_plain_line(workspace, tmp_path, args, expected):
    done, seconds = mmfm(*args, "-w", str(workspace), home=tmp_path / "prefect")
    line = assert_one_plain_error_line(done, *expected)
    assert "no-such" not in line  # an extract's path is never repeated (it may name a patient)
    assert not (tmp_path / "prefect" / "prefect.db").exists()  # refused before any Prefect server started
    assert seconds < 10, seconds  # about a second on an idle machine (the interpreter and the CLI's imports)


def test_a_folder_that_is_no_workspace_is_named_in_one_line(tmp_path):
    done, _ = mmfm("validate", "-w", str(tmp_path / "nowhere"), home=tmp_path / "prefect")
    assert_one_plain_error_line(done, "is not an mmfm workspace", "mmfm init")
    assert not (tmp_path / "prefect").exists()


def test_debug_shows_the_trace(workspace, tmp_path):
    done, _ = mmfm("predict", "--model", "nonsense", "-w", str(workspace), "--debug", home=tmp_path / "prefect")
    assert done.returncode == 1 and "Traceback" in done.stderr


def test_version(tmp_path):
    done, _ = mmfm("--version", home=tmp_path)
    assert done.returncode == 0 and done.stdout.strip() == f"mmfm {version('mmfm')}"


def test_piped_output_never_folds_a_long_path(tmp_path):
    deep = tmp_path / ("d" * 60) / ("e" * 60) / "a-workspace-with-a-long-name"
    assert len(str(deep)) > 150
    done, _ = mmfm("init", str(deep), home=tmp_path / "prefect")
    assert done.returncode == 0, done.stderr
    assert any(str(deep) in line for line in done.stdout.splitlines()), done.stdout
    missing = deep.parent / "not-a-workspace-either"
    done, _ = mmfm("version", "-w", str(missing), home=tmp_path / "prefect")
    assert str(missing) in done.stderr.splitlines()[0], done.stderr


def test_validate_prints_tables_not_reprs(workspace, prefect_api):
    res = runner.invoke(app, ["validate", "-w", str(workspace)])
    assert res.exit_code == 0, res.output
    assert "{'" not in res.stdout and "['" not in res.stdout
    assert "quarantined" in res.stdout and "failed rules" in res.stdout


def test_pipeline_never_run_is_not_taken_for_up_to_date(workspace):
    from flows.cli.fastpath import nothing_to_do

    assert nothing_to_do(workspace) is None  # no stage recorded in dvc.lock: the flow runs


@pytest.mark.slow  # the shared trained workspace: every stage on 40 patients
def test_a_pipeline_with_nothing_to_do_starts_no_prefect(trained_workspace, tmp_path):
    ws, _, _ = trained_workspace
    done, seconds = mmfm("pipeline", "-w", str(ws.root), "--json", home=tmp_path / "prefect")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["ran"] == [] and summary["skipped"] == ["ingest", "validate", "pretrain", "finetune", "evaluate"]
    assert summary["fast_path"] is True
    assert not (tmp_path / "prefect").exists()  # no Prefect server, no run database
    assert done.stderr == ""


def test_a_local_dask_cluster_serves_no_dashboard():
    """`--runner dask` starts a local cluster (tasks.runners): no dashboard and no HTTP pages (docs/scale-out.md)."""
    import urllib.error
    import urllib.request

    from distributed import LocalCluster

    from tasks.runners import no_dashboard

    no_dashboard()
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster:
        base = cluster.dashboard_link.removesuffix("/status")
        for page in ("/status", "/health", "/metrics", "/info/main/workers.html"):
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(base + page, timeout=10)
            assert refused.value.code == 404, page
