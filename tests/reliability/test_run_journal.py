"""tasks/stage/journal.py on a real MLflow (SQLite) and ledger, with the states a kill leaves simulated by stopping
short: a run created and never ended is what SIGKILL leaves (the subprocess kills are in test_publish_windows.py and
test_kill_resume.py). Also tasks/registry/promotion.py settle_promotion(): the marker a kill leaves after the alias
was set."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tasks.lineage import Ledger
from tasks.stage.journal import INTERRUPTED_TAG, RunJournal
from tasks.workspace import Workspace


@pytest.fixture
def ws(tmp_path):
    from tasks import tracking

    ws = Workspace(tmp_path / "ws")
    ws.state.mkdir(parents=True)
    (ws.models / "backbone").mkdir(parents=True)
    (ws.models / "backbone" / "weights.bin").write_bytes(b"weights v1")
    tracking.configure(ws.root)
    return ws


def _open_run(ws: Workspace) -> str:
    """A run left RUNNING, as by a process killed inside `with mlflow.start_run()`."""
    import mlflow

    from tasks import tracking

    return mlflow.MlflowClient().create_run(tracking.experiment_id(ws.root, "mmfm")).info.run_id


def _status(run_id: str) -> tuple[str, str | None]:
    import mlflow

    run = mlflow.MlflowClient().get_run(run_id)
    return run.info.status, run.data.tags.get(INTERRUPTED_TAG)


def test_a_run_killed_before_it_finished_is_marked_killed_and_not_reused(ws):
    run_id = _open_run(ws)
    RunJournal(ws, "pretrain", "pretrain", "key-1").start(run_id)
    assert RunJournal(ws, "pretrain", "pretrain", "key-1").recover() is None
    assert _status(run_id) == ("KILLED", "true")
    assert not (ws.state / "runs" / "pretrain").exists()


@pytest.mark.parametrize("ended", [False, True], ids=["killed-before-end-of-run", "killed-after-end-of-run"])
def test_a_finished_run_without_its_ledger_event_is_reused_once(ws, ended):
    import mlflow

    run_id = _open_run(ws)
    journal = RunJournal(ws, "pretrain", "pretrain", "key-1")
    journal.start(run_id)
    journal.finish({"mlflow_run_id": run_id, "steps": 4}, outputs=[ws.models / "backbone"])
    if ended:
        mlflow.MlflowClient().set_terminated(run_id)
    done = RunJournal(ws, "pretrain", "pretrain", "key-1").recover()
    assert done["run_id"] == run_id and done["result"] == {"mlflow_run_id": run_id, "steps": 4}
    assert _status(run_id) == ("FINISHED", None)  # its content was complete: only MLflow's end was missing

    Ledger.of_workspace(ws.root).append("pretrain", "flow-1", facts={"mlflow_run_id": run_id})
    assert RunJournal(ws, "pretrain", "pretrain", "key-1").recover() is None  # recorded: a leftover, forgotten
    assert not (ws.state / "runs" / "pretrain").exists()


@pytest.mark.parametrize("change", ["key", "outputs"])
def test_a_finished_run_is_not_reused_for_other_inputs_or_changed_outputs(ws, change):
    run_id = _open_run(ws)
    journal = RunJournal(ws, "pretrain", "pretrain", "key-1")
    journal.start(run_id)
    journal.finish({"mlflow_run_id": run_id}, outputs=[ws.models / "backbone"])
    key = "key-2" if change == "key" else "key-1"
    if change == "outputs":
        (ws.models / "backbone" / "weights.bin").write_bytes(b"weights v2")
    assert RunJournal(ws, "pretrain", "pretrain", key).recover() is None
    assert _status(run_id)[0] == "FINISHED"


def test_a_kept_folder_survives_until_cleared_and_a_finetune_task_is_named_by_the_stage_event(ws, tmp_path):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_model.safetensors").write_bytes(b"lora")
    run_id = _open_run(ws)
    journal = RunJournal(ws, "finetune-risk", "finetune", "key-risk")
    journal.start(run_id)
    journal.finish({"mlflow_run_id": run_id}, keep=adapter)
    again = RunJournal(ws, "finetune-risk", "finetune", "key-risk")
    assert again.recover()["run_id"] == run_id
    assert (again.kept / "adapter_model.safetensors").read_bytes() == b"lora"
    Ledger.of_workspace(ws.root).append("finetune", "flow-2", facts={"mlflow_run_ids": {"risk": run_id}})
    assert RunJournal(ws, "finetune-risk", "finetune", "key-risk").recover() is None


def test_a_torn_journal_is_forgotten(ws):
    (ws.state / "runs" / "evaluate").mkdir(parents=True)
    (ws.state / "runs" / "evaluate" / "journal.json").write_text('{"stage": "evalu')
    assert RunJournal(ws, "evaluate", "evaluate", "k").recover() is None
    assert not (ws.state / "runs" / "evaluate").exists()


def test_settle_promotion_removes_only_a_marker_whose_records_are_all_written(ws):
    import mlflow

    from tasks.registry.promotion import PROMOTING, settle_promotion

    client = mlflow.MlflowClient()
    client.create_registered_model("m")
    for _ in range(2):
        client.create_model_version("m", source=str(Path(ws.root) / "artifacts"))
    marker = {"version": "2", "stamp": "x", "verdict": {"decision": "approved", "approver": "a", "reason": "r"},
              "checks": []}
    client.set_registered_model_tag("m", f"{PROMOTING}champion", json.dumps(marker))
    client.set_registered_model_alias("m", "champion", "1")  # killed before the alias moved: a rerun completes it
    assert settle_promotion(client, "m", "champion") is False
    client.set_registered_model_tag("m", "mmfm.alias_history.champion", json.dumps(["1", "2"]))
    client.set_registered_model_alias("m", "champion", "2")  # killed after the alias, before the marker's removal
    assert settle_promotion(client, "m", "champion") is True
    assert f"{PROMOTING}champion" not in client.get_registered_model("m").tags
    assert settle_promotion(client, "m", "champion") is False
