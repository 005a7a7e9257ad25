"""Resumable: `kill -9` the demo (the whole pipeline: ingest -> validate -> version -> pretrain -> finetune ->
evaluate -> register -> promote -> monitor) inside each stage, rerun, and it completes with the outputs of a run that
was never interrupted: no duplicated rows, artifacts, ledger events, MLflow runs, registered versions, decisions or
monitoring reports, at most the in-flight task done again, and no process of the killed group left.

Cost: one chain on one workspace, one demo run per kill. Run 1 kills itself in ingest while publishing the fourth
extract (site-b's FHIR export, which has quarantined lines) with its staged parts, quarantine file and de-id report
written and its ledger event and ingest-state record not yet (tasks/faults.py: no file appears in between for
a test to watch for); the runs after it are each SIGKILLed by this test the moment a real side effect shows the next
stage in flight, except finetune's and promote's, which kill themselves where no file shows the moment: finetune
inside its second task's MLflow run, the first task finished (`finetune.in_run@2`), promote between its decision and
its ledger event (`promote.after_verdict`); the last run completes. The uninterrupted reference is conftest.py's
`clean_demo`.

One kill per recovery mechanism: ingest (resumable publication), version (a publication cut between `dvc add` and
the git commit), pretrain (checkpoint resume), finetune (a finished task's run reused, an open one marked KILLED),
promote (the pending decision completed), monitor (the area prepared once). Kills that would test a mechanism again
are left to the tests that cover it without the whole demo: inside validate's GX run (nothing is published before it
ends; the later window, after the quarantine write, is test_publish_windows.py's validate kill), evaluate after its
MLflow run (the run journal's reuse of a finished run: test_publish_windows.py's `pretrain.after_run` kill and
test_run_journal.py), register after the version row (an incomplete version completed by the rerun:
test_mlflow_faults.py).
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from contextlib import closing
from pathlib import Path

import polars as pl
import pytest

from tests.reliability.demo_runs import (
    finished_runs,
    ledger_events,
    leftovers,
    make_workspace,
    mlflow_rows,
    registered_versions,
    run_demo,
)

slow = pytest.mark.slow  # every test on the killed chain; the ledger test below is quick


def _in_version(ws: Path) -> dict | None:  # `dvc add` of the governance folders: after dvc commit, before git commit
    return {"dvc_add": True} if (ws / "data" / "reports.dvc").exists() else None


def _in_pretrain(ws: Path) -> dict | None:  # a checkpoint written, training not finished (12 steps, one every 3)
    ckpts = sorted((ws / ".mmfm" / "checkpoints").glob("pretrain-*/ckpt_*.pt"))
    return {"checkpoints": {str(p): p.stat().st_ino for p in ckpts}} if ckpts else None


def _in_monitor(ws: Path) -> dict | None:  # the area ingested and validated, drift under way; no MLflow run yet
    areas = sorted((ws / "data" / "monitoring").glob("*")) if (ws / "data" / "monitoring").exists() else []
    return {"area": areas[0].name, "files": sorted(p.name for p in areas[0].iterdir())} if areas else None


# (stage, watched side effect, or the fault point where the run kills itself when nothing can be watched)
KILLS = [("version", _in_version, None), ("pretrain", _in_pretrain, None), ("finetune", None, "finetune.in_run@2"),
         ("promote", None, "promote.after_verdict"), ("monitor", _in_monitor, None)]
KILLED = ["ingest", *(stage for stage, _, _ in KILLS)]


@pytest.fixture(scope="module")
def chain(tmp_path_factory, clean_demo):
    root = tmp_path_factory.mktemp("killed-demo")
    ws = make_workspace(root / "ws")
    runs = {"ingest": run_demo(ws, root / "logs", fault="ingest.after_parts@4")}
    for stage, watch, fault in KILLS:
        runs[stage] = run_demo(ws, root / "logs", kill_when=(stage, watch) if watch else None, fault=fault)
    final = run_demo(ws, root / "logs")
    print({k: (r.returncode, r.killed_at, r.seconds) for k, r in {**runs, "final": final}.items()})
    return ws, runs, final


def _next(chain, stage: str):
    """The run after the one killed in `stage`: the one that resumed it."""
    runs = {**chain[1], "final": chain[2]}
    order = list(runs)
    return runs[order[order.index(stage) + 1]]


@slow
def test_every_run_was_killed_in_its_stage_and_the_last_one_completes(chain):
    ws, runs, final = chain
    watched = {stage for stage, watch, _ in KILLS if watch}
    for stage, run in runs.items():
        assert run.returncode == -9, (stage, run.returncode, run.stderr[-2000:])
        assert run.killed_at == (stage if stage in watched else None), (stage, run.killed_at)
    assert final.returncode == 0, final.stderr[-3000:]
    out = final.summary()
    assert out["dataset_version"] and out["governance"]["registered"] == "mmfm-multimodal/1", out["stages"]
    assert out["governance"]["promotion"]["decision"] == "already champion"
    assert out["governance"]["monitoring"]["status"] in ("ok", "drift", "insufficient")


@slow
@pytest.mark.parametrize("stage", KILLED)
def test_no_process_of_a_killed_run_is_left(chain, stage):
    assert leftovers(chain[1][stage].tag, grace_s=2) == []


def _tables(folder: Path) -> dict[str, pl.DataFrame]:
    from tasks.ingest.staged import read_table

    names = sorted(p.name for p in folder.iterdir() if p.is_dir() and p.name not in ("images",)) \
        if folder.name == "staged" else sorted(p.stem for p in folder.glob("*.parquet"))
    return {n: read_table(folder, n) if folder.name == "staged" else pl.read_parquet(folder / f"{n}.parquet")
            for n in names}


@slow
@pytest.mark.parametrize("layer", ["staged", "curated"])
def test_tables_have_no_duplicates_and_equal_the_uninterrupted_run(chain, clean_demo, layer):
    from tasks.ingest.staged import ID_COLUMN
    from tasks.lineage import tree_sha256

    ws, clean = chain[0], clean_demo[0]
    got, want = _tables(ws / "data" / layer), _tables(clean / "data" / layer)
    assert set(got) == set(want) and want
    for name, frame in got.items():
        key = ID_COLUMN.get(name)
        if key in frame.columns:
            assert frame[key].is_duplicated().sum() == 0, f"{layer}/{name}: duplicate {key}"
        assert frame.sort(frame.columns).equals(want[name].sort(want[name].columns)), f"{layer}/{name} differs"
    assert tree_sha256(ws / "data" / layer) == tree_sha256(clean / "data" / layer)  # byte for byte


@slow
def test_quarantine_and_deid_reports_are_those_of_the_uninterrupted_run_once(chain, clean_demo):
    from tasks.ingest.quarantine import read_quarantine

    cols = ["source_uri", "location", "source", "stage", "rule"]
    got = read_quarantine(chain[0] / "data" / "quarantine").select(cols)
    want = read_quarantine(clean_demo[0] / "data" / "quarantine").select(cols)
    assert got.height == want.height and got.sort(cols).equals(want.sort(cols))
    assert not list((chain[0] / "data" / "quarantine").glob(".*")), "a temporary file was left in quarantine/"
    reports = [sorted(p.read_text() for p in (ws / "data" / "reports").glob("deid-*.json"))
               for ws in (chain[0], clean_demo[0])]
    assert reports[0] == reports[1], "de-identification reports differ from (or duplicate) the uninterrupted run's"


def _logical(events) -> Counter:
    """What a ledger says happened, without ids and times: stage, and for ingest which extract and its counts."""
    return Counter((e.stage, e.params.get("source"), e.params.get("site"),
                    tuple(sorted((k, v) for k, v in e.facts.items() if k in ("received", "ingested", "quarantined"))))
                   for e in events)


@slow
def test_ledger_has_the_events_of_the_uninterrupted_run_once_and_verifies(chain, clean_demo):
    from tasks.lineage import Ledger, verify

    got, want = ledger_events(chain[0]), ledger_events(clean_demo[0])
    assert _logical(got) == _logical(want)
    assert len({(e.stage, e.run_id) for e in got}) == len(got)
    report = verify(Ledger.of_workspace(chain[0]), chain[0])
    assert report.ok, report.text()


@slow
def test_mlflow_has_one_registered_version_and_no_extra_completed_run(chain, clean_demo):
    assert registered_versions(chain[0]) == registered_versions(clean_demo[0]) == [("mmfm-multimodal", 1)]
    assert finished_runs(chain[0]) == finished_runs(clean_demo[0])


@slow
def test_ingest_resumes_only_the_extract_in_flight(chain, clean_demo):
    ws, runs, _ = chain
    first, second = runs["ingest"], _next(chain, "ingest")
    everything = clean_demo[1].published()
    assert len(everything) == len(set(everything)) >= 3
    assert first.published() == everything[:3]  # killed while publishing the fourth extract
    assert second.published() == everything[3:]  # the in-flight one once, then the rest; never the first three again
    with closing(sqlite3.connect(ws / ".mmfm" / "ingest.db")) as db:
        assert db.execute("SELECT count(*) FROM publishing").fetchone()[0] == 0  # no claim left open


DATA, MODEL = {"ingest", "validate"}, {"pretrain", "finetune", "evaluate"}


@slow
@pytest.mark.parametrize("stage,before", [("version", DATA), ("pretrain", DATA), ("finetune", DATA | {"pretrain"}),
                                          ("promote", DATA | MODEL), ("monitor", DATA | MODEL)])
def test_a_rerun_skips_the_stages_finished_before_the_kill(chain, stage, before):
    """The run after the kill in `stage` (the next one in the chain) did not redo what was done: DVC finds the
    finished stages current, and after promote the registry ones are not done twice."""
    after = _next(chain, stage)
    assert before <= after.skipped_stages(), after.skipped_stages()
    if stage in MODEL:
        assert stage not in after.skipped_stages()  # the stage in flight is done again
    if stage in ("promote", "monitor"):
        assert "registered mmfm-multimodal/1 (already registered)" in after.stderr
    if stage == "monitor":
        assert "promotion to champion: already champion" in after.stderr


@slow
def test_finetune_kept_the_task_finished_before_the_kill(chain):
    """Killed inside the second task's (risk) MLflow run: the rerun reused the first task's adapter and MLflow run
    instead of training it again (the finished-run count per name is checked against the uninterrupted run in
    test_mlflow_...), and kept nothing once the stage was recorded."""
    ws = chain[0]
    meta = json.loads((ws / "models" / "finetuned" / "diagnosis" / "meta.json").read_text())
    rerun = _next(chain, "finetune").stderr
    assert f"fine-tuned diagnosis: kept from an interrupted run (MLflow run {meta['mlflow_run_id']})" in rerun
    assert "fine-tuned risk: kept" not in rerun
    assert not (ws / ".mmfm" / "runs").exists() or not list((ws / ".mmfm" / "runs").iterdir())  # journals cleared


@slow
def test_runs_a_kill_left_open_are_closed_as_killed(chain):
    """The finetune kill came inside the second task's MLflow run: the rerun marked that run KILLED (tagged
    mmfm.interrupted) instead of leaving it RUNNING forever; no run of the workspace is left RUNNING (monitor's kill
    came outside its run)."""
    ws = chain[0]
    assert mlflow_rows(ws, "SELECT name FROM runs WHERE status = 'RUNNING'") == []
    killed = mlflow_rows(ws, "SELECT r.name FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid "
                             "WHERE r.status = 'KILLED' AND t.key = 'mmfm.interrupted' AND t.value = 'true'")
    assert ("finetune-risk",) in killed, killed


def _registry_rows(ws: Path) -> dict:
    return {
        "aliases": mlflow_rows(ws, "SELECT name, alias, version FROM registered_model_aliases ORDER BY alias"),
        "model_tags": mlflow_rows(ws, "SELECT key, value FROM registered_model_tags WHERE key LIKE 'mmfm.%' "
                                      "ORDER BY key"),
        "decisions": mlflow_rows(ws, "SELECT version, key FROM model_version_tags WHERE key LIKE 'mmfm.approved.%' "
                                     "OR key LIKE 'mmfm.refused.%' ORDER BY key")}


@slow
def test_promote_killed_after_its_decision_completes_that_decision_once(chain, clean_demo):
    """`promote.after_verdict`: the decision tag written, the ledger event, alias history and alias not. The rerun
    completes that decision: one approval tag, `champion` on version 1, the version once in the alias history, the
    pending marker gone; the ledger's single promote event is checked by test_ledger_..."""
    ws, runs, _ = chain
    assert "promotion to champion" not in runs["promote"].stderr  # killed inside promote
    assert "promotion to champion: approved" in _next(chain, "promote").stderr
    got, want = _registry_rows(ws), _registry_rows(clean_demo[0])
    assert [(n, a, v) for n, a, v in got["aliases"]] == [("mmfm-multimodal", "challenger", 1),
                                                         ("mmfm-multimodal", "champion", 1)]
    assert got["aliases"] == want["aliases"] and got["model_tags"] == want["model_tags"]
    assert dict(got["model_tags"])["mmfm.alias_history.champion"] == '["1"]'
    assert [(v, k.rsplit(".", 1)[0]) for v, k in got["decisions"]] == [(1, "mmfm.approved.champion")]
    assert len(got["decisions"]) == len(want["decisions"]) == 1


@slow
def test_monitor_resumed_gives_one_report_equal_to_the_uninterrupted_run(chain, clean_demo):
    """Killed while drift was computed on the ingested and validated monitoring area: the rerun leaves one report
    folder with the same files, verdict and counts (received, quarantined: over every ingest run of the area, not
    the rerun's "nothing new") as an uninterrupted run (the one MLflow run and one ledger event are checked by
    test_mlflow_... and test_ledger_...); the area holds its quarantine records once and its ledger the events of an
    uninterrupted run (validated once: flows/area.py skips a current validate stage)."""
    from tasks.ingest.quarantine import read_quarantine

    ws, runs, _ = chain
    assert "drift.json" not in runs["monitor"].facts["files"]  # killed before the report
    got, want = (sorted((w / "data" / "monitoring").iterdir()) for w in (ws, clean_demo[0]))
    assert [p.name for p in got] == [runs["monitor"].facts["area"]] and len(want) == 1  # named by extract path
    assert sorted(p.name for p in got[0].iterdir()) == sorted(p.name for p in want[0].iterdir())
    reports = [json.loads((d[0] / "drift.json").read_text()) for d in (got, want)]
    for key in ("model_version", "status", "flagged_sites", "current"):
        assert reports[0][key] == reports[1][key], key
    assert reports[0]["reference"]["patients"] == reports[1]["reference"]["patients"]
    cols = ["source_uri", "location", "source", "stage", "rule"]
    areas = [w / ".mmfm" / "areas" / "monitoring" / d[0].name / "data" / "quarantine"
             for w, d in ((ws, got), (clean_demo[0], want))]
    assert all(a.is_dir() for a in areas)
    rows = [read_quarantine(a).select(cols).sort(cols) for a in areas]
    assert rows[0].equals(rows[1])
    from tasks.lineage import Ledger

    assert _logical(Ledger.of_workspace(areas[0].parents[1]).events()) == \
        _logical(Ledger.of_workspace(areas[1].parents[1]).events())  # the area validated once, counts kept


@slow
def test_pretrain_resumed_from_its_checkpoint(chain):
    """Checkpoints written before the kill were not written again (training went on from the last one, it did not
    restart), and the backbone carries the tokenizer those checkpointed steps were trained with: the checkpoint
    folder keeps its tokenizer or concept lexicon (`<checkpoint dir>/tokenizer/`) and a resumed run uses it, so the
    restored weights read the inputs they were trained with even if a tokenizers upgrade came between kill and resume
    (training itself is deterministic: tests/models/test_text.py)."""
    ws, runs, _ = chain
    killed = runs["pretrain"].facts["checkpoints"]
    for path, inode in killed.items():
        assert Path(path).stat().st_ino == inode, f"{path} was written again: training restarted"
    saved = Path(next(iter(killed))).parent / "tokenizer"
    published = ws / "models" / "backbone" / "tokenizer"
    if (saved / "concepts.yaml").exists():  # the concept reader (tiny): its lexicon is what the weights read
        assert (saved / "concepts.yaml").read_bytes() == (published / "concepts.yaml").read_bytes()
        return
    assert (saved / "tokenizer.json").exists(), "the checkpoint folder does not keep the tokenizer its weights used"
    vocab = [json.loads((f / "tokenizer.json").read_text())["model"]["vocab"]  # the token ids
             for f in (saved, published)]
    assert vocab[0] == vocab[1]


LEDGER_WRITER = """
import sys
from pathlib import Path
from tasks.lineage import Ledger
ledger = Ledger(Path(sys.argv[1]))
for i in range(3):
    ledger.append("ingest", f"run-{i}", params={"i": i})
"""


def test_a_kill_mid_append_leaves_no_torn_or_half_chained_event(tmp_path):
    """SIGKILL between INSERT and COMMIT of the third event: the ledger keeps two whole events, verifies, and the
    next append chains onto the second."""
    import os
    import subprocess
    import sys

    from tasks.lineage import GENESIS, Ledger, verify
    from tests.reliability.demo_runs import ROOT

    path = tmp_path / ".mmfm" / "lineage.db"
    env = {**os.environ, "MMFM_FAULT_KILL_AT": "lineage.mid_append@3"}
    done = subprocess.run([sys.executable, "-c", LEDGER_WRITER, str(path)], cwd=ROOT, env=env, timeout=120)
    assert done.returncode == -9
    ledger = Ledger(path)
    assert [e.run_id for e in ledger.events()] == ["run-0", "run-1"]
    assert verify(ledger, tmp_path).ok
    third = ledger.append("ingest", "run-2")
    assert third.prev_hash == ledger.events()[1].hash != GENESIS
    assert [e.seq for e in ledger.events()] == [1, 2, 3] and verify(ledger, tmp_path).ok
