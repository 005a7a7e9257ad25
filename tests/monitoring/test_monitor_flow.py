"""`mmfm monitor` end to end on a trained, registered workspace: a breach exits 3 with the JSON report, the
retraining trigger fires once per cooldown, and the monitored extract never reaches the training data.

A 40-patient training cohort gives the drift tests too little reference to localise a shift (that is measured on the
demo cohort and in tests/monitoring/test_*_drift.py); here the breach is made certain through the performance rule
(`performance_tolerance: -1`: any measured performance counts as a drop)."""

from __future__ import annotations

import json
import shutil

import polars as pl
import pytest
import yaml
from typer.testing import CliRunner

from flows.cli import app
from tasks.lineage import Ledger
from tasks.synth.generate import SynthConfig, generate

runner = CliRunner()


def _run(ws, *args):
    return runner.invoke(app, [*args, "-w", str(ws), "--json"])


@pytest.fixture(scope="module")
def champion(trained_workspace, tmp_path_factory):
    root = tmp_path_factory.mktemp("monitor") / "ws"
    shutil.copytree(trained_workspace[0].root, root, symlinks=True)
    (root / ".mmfm" / "mlflow.db").unlink()
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["monitor"].update(min_rows=20, min_reference_rows=10, performance_tolerance=-1.0)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    registered = json.loads(_run(root, "register").stdout.strip().splitlines()[-1])
    promoted = _run(root, "promote", f"mmfm-multimodal/{registered['version']}", "--approver", "dr-ada",
                    "--reason", "baseline")
    assert promoted.exit_code == 0, promoted.output
    return root


@pytest.mark.slow
def test_a_breach_exits_3_and_triggers_one_retrain_per_cooldown_without_touching_training_data(champion, tmp_path):
    generate(tmp_path / "shifted", SynthConfig(patients=120, sites=2, seed=21, cxr_size=32, ct_shape=(2, 16, 16),
                                               shift="site-b"))
    curated_before = pl.read_parquet(champion / "data" / "curated" / "cohort.parquet")
    first = _run(champion, "monitor", str(tmp_path / "shifted"))
    assert first.exit_code == 3, first.output  # drift: non-zero status, JSON still printed
    report = json.loads(first.stdout.strip().splitlines()[-1])
    assert report["status"] == "drift" and report["performance"]["drifted"] is True
    assert set(report["tabular"]["sites"]) == {"site-a", "site-b"} and "embedding" in report
    assert report["retrain"]["fired"] is True
    assert report["tabular"]["correction"] == "bonferroni" and report["tabular"]["threshold"] < 0.05
    # the new scanner is seen where it happened, and named: site-b's acquisition features, not site-a's
    assert "site-b" in report["flagged_sites"] and report["tabular"]["drifted_sites"] == ["site-b"]
    scanner = report["tabular"]["sites"]["site-b"]["groups"]["acquisition"]["features"]["scanner_2d"]
    # the model name is free text: it reaches staged tables as a keyed token (the vendor, on the safe list, stays)
    (new,) = scanner["new_categories"]
    assert new.startswith("SIEMENS keyed-") and "SOMATOM" not in json.dumps(report)
    assert "site-b: " in report["findings"] and f"(new: {new})" in report["findings"]
    again = json.loads(_run(champion, "monitor", str(tmp_path / "shifted")).stdout.strip().splitlines()[-1])
    assert again["retrain"]["fired"] is False and again["retrain"]["status"] == "suppressed"

    curated_after = pl.read_parquet(champion / "data" / "curated" / "cohort.parquet")
    assert curated_after.equals(curated_before)
    area = champion / ".mmfm" / "areas" / "monitoring" / report["area"]
    assert pl.read_parquet(area / "data" / "curated" / "cohort.parquet").height == report["current"]["patients"]
    events = [e for e in Ledger.of_workspace(champion).events() if e.stage == "monitor"]
    assert [e.facts["status"] for e in events] == ["drift", "drift"]
