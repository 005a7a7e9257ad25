"""The pipeline and dataset versions: DVC decides what is out of date, Prefect runs it; a rerun with nothing new
does no work; a new extract reruns what depends on it; publishing is all or nothing; old versions come back."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import polars as pl
import pytest
import yaml

from flows.pipeline import DATA_STAGES, STAGES, pipeline, render_dvc_yaml
from flows.version import PublishError, version
from tasks.synth.generate import SynthConfig, generate
from tasks.vcs import dvc_run
from tasks.workspace import DEFAULT_PARAMS, init_workspace

ROOT = Path(__file__).resolve().parents[2]


def test_dvc_yaml_and_params_at_the_root_match_the_stages():
    assert (ROOT / "dvc.yaml").read_text() == render_dvc_yaml()
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert params == DEFAULT_PARAMS
    for stage in STAGES:
        assert (ROOT / "flows" / f"{stage.name}.py").exists()
        assert all(p in params for p in stage.params)


def _git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout.strip()


@pytest.mark.slow
def test_pipeline_skips_current_stages_versions_roll_back_and_check_out(tmp_path, prefect_api, pseudonym_key):
    cohort = tmp_path / "cohort"
    generate(cohort, SynthConfig(patients=16, sites=2, seed=5, corrupt_rate=0.05, cxr_size=32, ct_shape=(2, 16, 16)))
    ws = init_workspace(tmp_path / "ws", dvc_yaml=render_dvc_yaml())
    shutil.copytree(cohort / "site-a", ws.extracts / "hospital" / "site-a")

    first = pipeline(workspace=ws.root, stages=list(DATA_STAGES))
    assert first["ran"] == ["ingest", "validate"] and first["skipped"] == []
    t0 = time.perf_counter()
    again = pipeline(workspace=ws.root, stages=list(DATA_STAGES))
    assert again["ran"] == [] and again["skipped"] == ["ingest", "validate"]
    assert time.perf_counter() - t0 < 30

    v1 = version(workspace=ws.root)
    assert v1["git_rev"] == _git(ws.root, "rev-parse", "HEAD")
    labs_v1 = pl.read_parquet(ws.curated / "labs.parquet")

    # a failed push publishes nothing: same HEAD, same dvc.lock as before the attempt
    (tmp_path / "not-a-dir").write_text("")
    dvc_run(ws.root, "remote", "modify", "local", "url", str(tmp_path / "not-a-dir" / "remote"))
    shutil.copytree(cohort / "site-b", ws.extracts / "hospital" / "site-b")
    partial = pipeline(workspace=ws.root, stages=list(DATA_STAGES))
    assert partial["ran"] == ["ingest", "validate"]
    assert partial["stages"]["ingest"]["received"] > 0
    assert all(s["site"] == "site-b" for s in partial["stages"]["ingest"]["sources"] if s["received"])
    lock_before = (ws.root / "dvc.lock").read_text()
    with pytest.raises(PublishError, match="dvc push"):
        version(workspace=ws.root, push_retries=0)
    assert _git(ws.root, "rev-parse", "HEAD") == v1["git_rev"]
    assert (ws.root / "dvc.lock").read_text() == lock_before

    dvc_run(ws.root, "remote", "modify", "local", "url", str(ws.state / "dvc-remote"))
    v2 = version(workspace=ws.root)
    assert v2["curated_md5"] != v1["curated_md5"]
    assert pl.read_parquet(ws.curated / "labs.parquet").height > labs_v1.height

    # the older version's exact rows come back
    _git(ws.root, "checkout", v1["git_rev"], "--", "dvc.lock")
    dvc_run(ws.root, "checkout", "--force", *DATA_STAGES)  # that version recorded the data stages only
    assert pl.read_parquet(ws.curated / "labs.parquet").equals(labs_v1)
