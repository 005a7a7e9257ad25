"""`mmfm monitor` end to end on a trained, registered workspace: a breach exits 3 with the JSON report, the
retraining trigger fires once per cooldown, and the monitored extract never reaches the training data; an extract
too small for any test is "insufficient" (exit 4, naming what was not tested), and an alias the gate did not set
is refused unless --allow-ungated.

The breach comes from site-b's new scanner (tabular acquisition features). Performance is not judged here: the
40-patient cohort's held-out patients are fewer than the 20 labelled patients the bootstrap needs on each side, so the
performance family is reported untested (insufficient), never "no drift"; its decisions are tested in
tests/monitoring/test_performance.py."""

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
    assert report["status"] == "drift" and report["performance"]["status"] == "insufficient"
    assert any(u["family"] == "performance" and u["reason"] for u in report["untested"])
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


@pytest.mark.slow
def test_an_extract_too_small_for_every_test_is_insufficient_not_ok(champion, tmp_path):
    """Issue 19: every site below the minimum used to read "OK", exit 0. 12 patients in 2 sites, min_rows 20."""
    generate(tmp_path / "tiny", SynthConfig(patients=12, sites=2, seed=31, cxr_size=32, ct_shape=(2, 16, 16)))
    result = _run(champion, "monitor", str(tmp_path / "tiny"))
    assert result.exit_code == 4, result.output
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["status"] == "insufficient" and report["exit_code"] == 4 and report["retrain"] is None
    untested = {(u["site"], u["family"]): u["reason"] for u in report["untested"]}
    assert {("all", "tabular"), ("site-a", "tabular"), ("site-b", "tabular"), ("all", "embedding"),
            ("all", "performance")} <= set(untested)
    assert untested[("all", "tabular")] == f"{report['current']['patients']} patients, fewer than the minimum 20"
    assert json.loads((champion / "data" / "monitoring" / report["area"] / "drift.json").read_text())[
        "status"] == "insufficient"
    human = runner.invoke(app, ["monitor", str(tmp_path / "tiny"), "-w", str(champion)])
    assert human.exit_code == 4 and "INSUFFICIENT" in human.stdout and "not tested" in human.stdout
    assert "{" not in human.stdout  # tables, no dict reprs


@pytest.mark.slow
def test_an_alias_the_gate_did_not_set_is_refused_unless_allowed(champion, tmp_path):
    import mlflow

    from tasks import tracking

    tracking.configure(champion)
    client = mlflow.MlflowClient()
    version = client.get_model_version_by_alias("mmfm-multimodal", "champion").version
    client.set_registered_model_alias("mmfm-multimodal", "shadow", version)  # as the UI's "Promote model" does
    generate(tmp_path / "tiny", SynthConfig(patients=12, sites=2, seed=32, cxr_size=32, ct_shape=(2, 16, 16)))
    refused = _run(champion, "monitor", str(tmp_path / "tiny"), "--model", "mmfm-multimodal@shadow")
    assert refused.exit_code == 1 and "mmfm-multimodal@shadow" in refused.output
    assert "--allow-ungated" in refused.output and "Traceback" not in refused.output
    allowed = _run(champion, "monitor", str(tmp_path / "tiny"), "--model", "mmfm-multimodal@shadow",
                   "--allow-ungated")
    assert allowed.exit_code == 4, allowed.output
    report = json.loads(allowed.stdout.strip().splitlines()[-1])
    assert report["gate"]["gated"] is False and report["model_version"] == f"mmfm-multimodal/{version}"
    event = [e for e in Ledger.of_workspace(champion).events() if e.stage == "monitor"][-1]
    assert event.facts["ungated"] is True
