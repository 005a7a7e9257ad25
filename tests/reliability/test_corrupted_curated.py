"""A curated file changed after `validate` + `version` is refused before any training step.

Three ways data goes bad in place: a flipped byte that keeps size and mtime (the case `dvc status` misses), a
truncated file (a copy cut short), and a valid parquet table rewritten with other values. Each time the model stages
(the pipeline, and the pretrain/finetune/evaluate flows that `mmfm pretrain` etc. run alone) must stop before
training, naming the file, saying it no longer matches validate's record in dvc.lock and how to put it back; after
`dvc checkout` the pipeline goes on, and DVC agrees the models were trained on exactly the restored data.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from contextlib import closing
from pathlib import Path

import polars as pl
import pytest

from flows.pipeline import MODEL_STAGES, pipeline
from tasks.validation.curated_check import CuratedChanged, changed_files, check_curated
from tasks.vcs import dvc_run


def flip_byte_keep_mtime(path: Path) -> None:
    before = path.stat()
    with open(path, "r+b") as fh:
        fh.seek(before.st_size // 2)
        byte = fh.read(1)
        fh.seek(before.st_size // 2)
        fh.write(bytes([byte[0] ^ 0xFF]))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


def truncate_half(path: Path) -> None:
    os.truncate(path, path.stat().st_size // 2)


def rewrite_values(path: Path) -> None:
    """Still a valid table with the same schema and rows; only the numbers changed."""
    frame = pl.read_parquet(path)
    column = next(name for name, dtype in frame.schema.items() if dtype.is_float())
    frame.with_columns(pl.col(column) * 10).write_parquet(path)


def _image_shard(curated: Path) -> str:
    return str(sorted((curated / "images").glob("*.npz"))[0].relative_to(curated.parent.parent))


CASES = {"flipped byte, same size and mtime": (flip_byte_keep_mtime, lambda c: "data/curated/labs.parquet"),
         "truncated image shard": (truncate_half, _image_shard),
         "rewritten table, valid parquet": (rewrite_values, lambda c: "data/curated/labs.parquet")}


def _training_traces(root: Path) -> dict:
    """Everything a training step would leave: MLflow runs, checkpoints, model files (with mtimes)."""
    with closing(sqlite3.connect(root / ".mmfm" / "mlflow.db")) as db:
        runs = db.execute("select count(*) from runs").fetchone()[0]
    files = {str(p.relative_to(root)): p.stat().st_mtime_ns
             for d in (root / ".mmfm" / "checkpoints", root / "models") if d.exists() for p in d.rglob("*")}
    return {"mlflow_runs": runs, "files": files}


@pytest.fixture(scope="module")
def workspace(trained_workspace, tmp_path_factory) -> Path:
    ws, _, _ = trained_workspace
    root = tmp_path_factory.mktemp("corrupted") / "ws"
    shutil.copytree(ws.root, root, symlinks=True)  # the shared workspace stays as it is
    assert changed_files(root) == []
    return root


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_a_changed_curated_file_is_refused_before_training(workspace, case, prefect_api):
    corrupt, target = CASES[case]
    path = target(workspace / "data" / "curated")
    traces = _training_traces(workspace)
    corrupt(workspace / path)

    with pytest.raises(CuratedChanged) as refused:
        pipeline(workspace=workspace, stages=list(MODEL_STAGES))
    message = str(refused.value)
    assert message.startswith(f"{path}: ") and "dvc.lock" in message and "dvc checkout" in message
    assert "\n" not in message
    assert _training_traces(workspace) == traces  # no MLflow run, no checkpoint, no model file written

    restored = dvc_run(workspace, "checkout", "--force", "--relink", "data/curated")  # the fix the message gives
    assert restored.returncode == 0, restored.stderr
    check_curated(workspace)


@pytest.mark.slow
def test_each_model_stage_alone_refuses_and_the_pipeline_goes_on_after_checkout(workspace, prefect_api):
    from flows.evaluate import evaluate_flow
    from flows.finetune import finetune_flow
    from flows.pretrain import pretrain_flow

    flip_byte_keep_mtime(workspace / "data" / "curated" / "labs.parquet")
    traces = _training_traces(workspace)
    for stage in (pretrain_flow, finetune_flow, evaluate_flow):  # `mmfm pretrain` etc. run these flows
        with pytest.raises(CuratedChanged, match=r"^data/curated/labs\.parquet: .*dvc\.lock"):
            stage(workspace=workspace)
    assert _training_traces(workspace) == traces

    dvc_run(workspace, "checkout", "--force", "--relink", "data/curated")
    goes_on = pipeline(workspace=workspace, stages=list(MODEL_STAGES))
    assert goes_on["skipped"] == list(MODEL_STAGES)  # the models were trained on exactly the restored data
    assert _training_traces(workspace) == traces
