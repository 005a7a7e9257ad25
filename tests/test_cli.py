"""The CLI contract: --json puts one object on the last stdout line; errors are one line, exit 1."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from flows.cli import app

runner = CliRunner()


def _last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def test_synth_json_counts(tmp_path):
    res = runner.invoke(app, ["synth", "--out", str(tmp_path / "c"), "--patients", "12", "--sites", "2",
                              "--seed", "7", "--json"])
    assert res.exit_code == 0, res.output
    out = _last_json(res.stdout)
    assert out["patients"] == 12 and out["sites"] == ["site-a", "site-b"]
    assert set(out["modalities"]) == {"imaging", "labs", "notes", "omics"}
    assert out["fhir_resources"]["Patient"] == 12
    assert out["dicom_files"] == len(list((tmp_path / "c").rglob("*.dcm")))


def test_bad_argument_is_one_clear_line(tmp_path):
    res = runner.invoke(app, ["synth", "--out", str(tmp_path / "c"), "--patients", "0"])
    assert res.exit_code == 1
    assert "--patients" in res.output and "Traceback" not in res.output
    res = runner.invoke(app, ["synth", "--out", str(tmp_path / "c"), "--patients", "3", "--shift", "site-z"])
    assert res.exit_code == 1 and "site-z" in res.output


def test_init_makes_a_git_and_dvc_workspace(tmp_path):
    ws = tmp_path / "ws"
    res = runner.invoke(app, ["init", str(ws), "--json"])
    assert res.exit_code == 0, res.output
    assert (ws / ".git").exists() and (ws / ".dvc" / "config").exists()
    assert "synth" in yaml.safe_load((ws / "params.yaml").read_text())
    assert "../.mmfm/dvc-remote" in (ws / ".dvc" / "config").read_text()
    log = subprocess.run(["git", "log", "--oneline"], cwd=ws, capture_output=True, text=True).stdout
    assert "mmfm init" in log
    assert runner.invoke(app, ["init", str(ws)]).exit_code == 0  # idempotent


def test_help_lists_commands():
    out = subprocess.run([sys.executable, "-m", "flows.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for name in ("init", "synth", "demo"):
        assert name in out.stdout


def quick_workspace(root: Path) -> Path:
    """`mmfm init` + a params.yaml with a few training steps: what a user does to try the demo in seconds."""
    assert runner.invoke(app, ["init", str(root)]).exit_code == 0
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["pretrain"].update(steps=4, eval_every=2, checkpoint_every=2, batch_size=8)
    params["finetune"].update(steps=4, eval_every=2, batch_size=8)
    params["evaluate"].update(n_boot=20, baseline_steps=3, min_group=2, gradcam_patients=1)
    params["promote"].update(subgroup_gap_rule="report")  # subgroups of two or three patients: gaps are noise
    # a few training steps on ~12 patients beat neither chance nor the baselines: excepted, with the reason recorded
    params["promote"]["exceptions"] = {"tasks_above_chance": "tiny test cohort", "beats_baselines": "tiny test cohort"}
    # ~12 patients and maybe a random demo key: thirds make an empty val or test split unlikely (0.67^11 = 1%)
    params["validate"]["splits"] = {"train": 0.34, "val": 0.33, "test": 0.33}
    params["synth"]["shifted_patients"] = 24  # the monitored extract: small, the drift tests say "too few rows"
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return root


@pytest.mark.slow  # two whole demos
@pytest.mark.timeout(600)
def test_demo_runs_and_reports_limits(tmp_path, prefect_api, monkeypatch):
    monkeypatch.setenv("MMFM_PSEUDONYM_KEY", "")  # recorded, so the demo's own key is unset again afterwards
    monkeypatch.delenv("MMFM_PSEUDONYM_KEY")
    ws = quick_workspace(tmp_path / "demo")
    res = runner.invoke(app, ["demo", "--patients", "20", "--workspace", str(ws), "--json"])
    assert res.exit_code == 0, res.output
    out = _last_json(res.stdout)
    assert out["stages"] == ["synth", "ingest", "validate", "version", "pretrain", "finetune", "evaluate",
                             "register", "promote", "monitor"]
    assert set(out["evaluation"]["tasks"]) == {"diagnosis", "risk", "survival"}
    gov = out["governance"]
    assert gov["registered"] == "mmfm-multimodal/1" and gov["promotion"]["decision"] == "approved"
    assert gov["monitoring"]["status"] in ("ok", "drift", "insufficient") and gov["audit"]["complete"] is True, gov
    assert out["dataset_version"]
    assert out["pseudonym_key"]["created"] is True
    assert oct(Path(out["pseudonym_key"]["path"]).stat().st_mode & 0o777) == "0o600"
    ing = out["ingest"]
    assert ing["received"] == ing["ingested"] + ing["quarantined"] + ing.get("pending", 0) > 0
    assert 0.5 < out["bayes"]["bayes_auroc"] <= 1.0
    assert Path(out["cohort"], "truth", "patients.tsv").exists()
    again = _last_json(runner.invoke(app, ["demo", "--patients", "20", "--workspace", str(ws), "--json"]).stdout)
    assert again["stages"] == ["synth (reused: same parameters)", "ingest (up to date)", "validate (up to date)",
                               "pretrain (up to date)", "finetune (up to date)", "evaluate (up to date)",
                               "register", "promote", "monitor"]
    assert again["governance"]["registered"] == "mmfm-multimodal/1"  # nothing registered twice
    assert again["governance"]["promotion"]["decision"] == "already champion"


@pytest.mark.slow  # a whole demo
@pytest.mark.timeout(600)
def test_lineage_and_audit_verify_on_the_demo_workspace(tmp_path, prefect_api, monkeypatch):
    import os

    monkeypatch.setenv("MMFM_PSEUDONYM_KEY", "lineage-test-key-" + "3" * 40)  # fixed: the same splits every run
    ws = quick_workspace(tmp_path / "demo")
    params = yaml.safe_load((ws / "params.yaml").read_text())
    params["promote"]["required_split"] = "external"  # the gate refuses: evaluated on the test split only
    (ws / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    demo = runner.invoke(app, ["demo", "--patients", "12", "--workspace", str(ws), "--json"])
    assert demo.exit_code == 0
    gov = _last_json(demo.stdout)["governance"]
    assert gov["promotion"]["decision"] == "refused" and "external" in gov["promotion"]["reasons"]
    # a refused version is still monitored (shadow monitoring) and audited: the demo runs every stage either way
    assert gov["monitoring"]["model"] == "mmfm-multimodal/1"
    assert gov["monitoring"]["status"] in ("ok", "drift", "insufficient")
    assert _last_json(demo.stdout)["stages"][-3:] == ["register", "promote (refused by the gate)", "monitor"]
    graph = _last_json(runner.invoke(app, ["lineage", "data/curated", "-w", str(ws), "--json"]).stdout)
    stages = {n.get("stage") for n in graph["nodes"] if n.get("stage")}
    assert {"ingest", "validate"} <= stages
    version = _last_json(demo.stdout)["dataset_version"]
    by_version = _last_json(runner.invoke(app, ["lineage", version, "-w", str(ws), "--json"]).stdout)
    assert {"ingest", "validate", "version"} <= {n.get("stage") for n in by_version["nodes"] if n.get("stage")}
    ok = runner.invoke(app, ["audit", "verify", "-w", str(ws), "--json"])
    assert ok.exit_code == 0 and _last_json(ok.stdout)["ok"] is True
    exported = _last_json(runner.invoke(app, ["audit", "export", "--out", str(tmp_path / "ol.ndjson"), "-w", str(ws),
                                              "--json"]).stdout)
    events = [json.loads(x) for x in (tmp_path / "ol.ndjson").read_text().splitlines()]
    assert exported["events"] == len(events) > 0 and {e["job"]["name"] for e in events} >= {"ingest", "validate"}

    target = ws / "data" / "curated" / "labs.parquet"  # flip one byte, keep size and mtime: dvc status won't see it
    stat = target.stat()
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    bad = runner.invoke(app, ["audit", "verify", "-w", str(ws), "--json"])
    assert bad.exit_code == 1
    report = _last_json(bad.stdout)
    assert report["ok"] is False and any(p["kind"] == "artifact_modified" for p in report["problems"])
