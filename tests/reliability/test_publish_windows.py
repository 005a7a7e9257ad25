"""Kill windows of publication, without the whole demo: a small workspace (10 generated patients, 15% corrupt,
so validate quarantines orphaned rows) ingested in this process; `mmfm validate`, `mmfm version`, `mmfm pretrain`
and a pipeline run as subprocesses that SIGKILL themselves at a fault point (tasks/faults.py) between a write and
the record of it; the reruns run here.

- `validate.after_quarantine`: the quarantine file written, report, curated tables and ledger event not. The file is
  named by the staged data it describes, so the rerun finds it: one file, the same bytes, one ledger event.
- `version.after_commit`: the dataset version committed, its ledger event not. The rerun records that commit's event
  (from the commit's trailers) and publishes nothing new: one commit, one event.
- `pretrain.after_run`: the backbone published and its MLflow run ended, the ledger event not. The rerun records that
  run (tasks/stage/journal.py) instead of logging a second one: one finished run, one event naming it.
- `pipeline.before_dvc_commit`: a stage (finetune) finished with its ledger event, `dvc commit` not. The rerun
  commits it without running it (flows/pipeline.py finished_unrecorded): one event, three finished task runs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.reliability.demo_runs import ROOT

KEY = "test-key-" + "4" * 40

pytestmark = pytest.mark.slow


def _cli(ws: Path, command: str, fault: str) -> subprocess.CompletedProcess:
    """`mmfm <command>` in its own process group, killing itself at `fault`."""
    return subprocess.run([sys.executable, "-m", "flows.cli", command, "-w", str(ws), "--json"], cwd=ROOT,
                          env=_env(fault), capture_output=True, text=True, timeout=300, start_new_session=True)


def _env(fault: str) -> dict:
    from prefect.settings import PREFECT_API_URL

    return {**os.environ, "MMFM_PSEUDONYM_KEY": KEY, "PREFECT_API_URL": PREFECT_API_URL.value(),
            "MMFM_FAULT_KILL_AT": fault, "OMP_NUM_THREADS": "1"}


def _events(ws: Path, stage: str) -> list:
    from tasks.lineage import Ledger

    return [e for e in Ledger.of_workspace(ws).events() if e.stage == stage]


@pytest.fixture(scope="module")
def ingested(tmp_path_factory, prefect_api):
    from flows.ingest import run as ingest
    from flows.pipeline import render_dvc_yaml
    from tasks.synth.generate import SynthConfig, generate
    from tasks.workspace import init_workspace

    previous = os.environ.get("MMFM_PSEUDONYM_KEY")
    os.environ["MMFM_PSEUDONYM_KEY"] = KEY
    root = tmp_path_factory.mktemp("publish-windows")
    generate(root / "cohort", SynthConfig(patients=10, sites=1, seed=31, corrupt_rate=0.15, cxr_size=32,
                                          ct_shape=(2, 16, 16)))
    ws = init_workspace(root / "ws", dvc_yaml=render_dvc_yaml())
    params = ws.params()  # a few training steps, and thirds so val and test are not empty with 10 patients
    params["pretrain"].update(steps=4, eval_every=2, checkpoint_every=2, batch_size=8)
    params["finetune"].update(steps=2, eval_every=0, batch_size=8)
    params["validate"]["splits"] = {"train": 0.34, "val": 0.33, "test": 0.33}
    ws.params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    shutil.copytree(root / "cohort" / "site-a", ws.extracts / "hospital" / "site-a")
    ingest(ws.root)
    yield ws
    if previous is None:
        os.environ.pop("MMFM_PSEUDONYM_KEY", None)
    else:
        os.environ["MMFM_PSEUDONYM_KEY"] = previous


@pytest.fixture(scope="module")
def validated(ingested):
    """(workspace, killed process, (quarantine files and bytes, curated tables and report) left by the kill,
    the rerun's summary)"""
    from flows.validate import validate

    ws = ingested
    killed = _cli(ws.root, "validate", "validate.after_quarantine")
    left = {p.name: p.read_bytes() for p in ws.quarantine.glob("validate-*.parquet")}
    published = sorted(p.name for p in ws.curated.glob("*.parquet")) + \
        sorted(p.name for p in ws.reports.glob("validation.json"))
    return ws, killed, (left, published), validate(workspace=ws.root)


def test_validate_killed_after_its_quarantine_file_reuses_it(validated):
    import polars as pl

    from tasks.lineage import artifact_sha256

    ws, killed, (left, published), rerun = validated
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert len(left) == 1 and published == []  # killed after the quarantine write, before report and tables
    name, content = next(iter(left.items()))
    assert pl.read_parquet(ws.quarantine / name).filter(pl.col("stage") == "validate").height > 0
    assert rerun["quarantine_file"] == f"data/quarantine/{name}" and rerun["quarantined"] > 0
    assert {p.name: p.read_bytes() for p in ws.quarantine.glob("validate-*.parquet")} == {name: content}
    assert not list(ws.quarantine.glob(".*")), "a temporary file was left in quarantine/"
    events = _events(ws.root, "validate")
    assert len(events) == 1
    assert {o["uri"]: o["sha256"] for o in events[0].outputs}[f"data/quarantine/{name}"] == \
        artifact_sha256(ws.quarantine / name)


def test_version_killed_after_its_commit_records_that_version_once(validated):
    from flows.version import head_unrecorded, version
    from tasks.lineage import Ledger, verify
    from tasks.vcs import git

    ws = validated[0]
    before = git(ws.root, "rev-parse", "HEAD").strip()
    killed = _cli(ws.root, "version", "version.after_commit")
    assert killed.returncode == -9, killed.stderr[-2000:]
    committed = git(ws.root, "rev-parse", "HEAD").strip()
    assert committed != before and _events(ws.root, "version") == []  # published, its event lost with the process
    assert head_unrecorded(ws.root)  # what the demo can ask before deciding whether to run `version`

    again = version(workspace=ws.root)
    assert again["git_rev"] == committed and again["already_published"] is True
    assert git(ws.root, "rev-parse", "HEAD").strip() == committed  # no second (empty) commit for the same data
    events = _events(ws.root, "version")
    assert len(events) == 1 and events[0].event_id == again["lineage_event"]
    assert events[0].facts["git_rev"] == committed and events[0].facts["recorded_after_interruption"] is True
    assert events[0].facts["dataset_version"] == again["dataset_version"] == f"{committed[:12]}-" \
        f"{again['curated_md5'][:12]}"
    assert [i["uri"] for i in events[0].inputs] == ["data/curated"]
    assert verify(Ledger.of_workspace(ws.root), ws.root).ok and not head_unrecorded(ws.root)


def _finished_runs(ws: Path, prefix: str) -> list[str]:
    import mlflow

    from tasks import tracking

    tracking.configure(ws)
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    return sorted(r.info.run_id for r in runs if r.info.run_name.startswith(prefix) and r.info.status == "FINISHED")


@pytest.fixture(scope="module")
def pretrained(validated):
    """(workspace, killed process, (finished pretrain runs, pretrain events) the kill left, the rerun's summary)"""
    from flows.pretrain import pretrain_flow

    ws = validated[0]
    killed = _cli(ws.root, "pretrain", "pretrain.after_run")
    left = _finished_runs(ws.root, "pretrain-"), _events(ws.root, "pretrain")
    return ws, killed, left, pretrain_flow(workspace=ws.root)


def test_pretrain_killed_after_its_run_ended_records_that_run_once(pretrained):
    ws, killed, (left, events_left), rerun = pretrained
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert len(left) == 1 and events_left == []  # logged and published; the event lost with the process
    assert rerun["mlflow_run_id"] == left[0]  # recorded, not trained and logged again
    assert _finished_runs(ws.root, "pretrain-") == left
    events = _events(ws.root, "pretrain")
    assert len(events) == 1 and events[0].facts["mlflow_run_id"] == left[0]
    assert not (ws.state / "runs" / "pretrain").exists()  # the journal is gone once the event is written


KILLED_PIPELINE = "import sys; from flows.pipeline import pipeline; pipeline(sys.argv[1], stages=sys.argv[2:])"


def test_pipeline_killed_before_dvc_commit_records_the_stage_without_running_it(pretrained):
    from flows.pipeline import pipeline, stage_is_current

    ws = pretrained[0]
    stages = ["pretrain", "finetune"]
    killed = subprocess.run([sys.executable, "-c", KILLED_PIPELINE, str(ws.root), *stages], cwd=ROOT,
                            env=_env("pipeline.before_dvc_commit"), capture_output=True, text=True, timeout=300,
                            start_new_session=True)
    assert killed.returncode == -9, killed.stderr[-2000:]
    # pretrain was run by `mmfm pretrain` (above), which leaves DVC's record to the pipeline: committed, not rerun
    assert "stage pretrain finished in run" in killed.stderr
    assert len(_events(ws.root, "finetune")) == 1 and not stage_is_current(ws.root, "finetune")
    runs = _finished_runs(ws.root, "finetune-")

    again = pipeline(workspace=ws.root, stages=stages)
    assert (again["ran"], again["skipped"], again["recorded"]) == ([], ["pretrain"], ["finetune"])
    assert stage_is_current(ws.root, "finetune")
    assert len(_events(ws.root, "finetune")) == 1 and len(_events(ws.root, "pretrain")) == 1
    assert _finished_runs(ws.root, "finetune-") == runs and len(runs) == 3
