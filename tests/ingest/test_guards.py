"""What an ingest or a version refuses before writing anything: a site name outside the pattern, an empty extract
folder, a pseudonym key other than the workspace's, a dataset version with no patients; and the MRN found by its
identifier system (`--mrn-system`) where Patients carry no MR type code."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from prefect.settings import PREFECT_API_URL
from typer.testing import CliRunner

from flows.cli import app
from tasks.synth.generate import SynthConfig, generate
from tasks.workspace import init_workspace

runner = CliRunner()
MRN_SYSTEM = "urn:oid:1.2.36.146.595.217.0.1"


def _files(root: Path) -> dict[str, int]:
    """Every file under the workspace's data/ and .mmfm/, with its size: what an ingest could have written."""
    return {str(p.relative_to(root)): p.stat().st_size for d in ("data", ".mmfm") for p in (root / d).rglob("*")
            if p.is_file()}


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("guards") / "cohort"
    generate(out, SynthConfig(patients=6, sites=1, seed=5, corrupt_rate=0.0, cxr_size=32, ct_shape=(2, 16, 16)))
    return out


def _refused(args: list[str], *phrases: str) -> str:
    res = runner.invoke(app, args)
    assert res.exit_code == 1, res.output
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), res.output  # one line, no traceback
    for phrase in phrases:
        assert phrase in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("site", ["", "Site A", "site_a", "-a", "a" * 64])
def test_a_site_outside_the_pattern_is_refused_before_anything_is_written(cohort, tmp_path, pseudonym_key, site):
    ws = init_workspace(tmp_path / "ws")
    before = _files(ws.root)
    _refused(["ingest", "fhir", str(cohort / "site-a" / "fhir"), "--site", site, "-w", str(ws.root)],
             "is not a site name", "lower-case letters, digits and '-'")
    assert _files(ws.root) == before


def test_an_empty_folder_is_an_error_not_nothing_new(tmp_path, pseudonym_key):
    ws = init_workspace(tmp_path / "ws")
    empty = tmp_path / "export"
    (empty / "sub").mkdir(parents=True)
    (empty / ".DS_Store").write_text("hidden files are not an extract")
    before = _files(ws.root)
    for kind in ("fhir", "omics", "dicom"):
        _refused(["ingest", kind, str(empty), "--site", "site-a", "-w", str(ws.root)], "holds no file to ingest")
    assert _files(ws.root) == before


@pytest.mark.slow  # a FHIR ingest, then a refused one
def test_another_pseudonym_key_is_refused_naming_the_fix(cohort, tmp_path, monkeypatch, prefect_api):
    ws = init_workspace(tmp_path / "ws")
    monkeypatch.setenv("MMFM_PSEUDONYM_KEY", "first-key-" + "1" * 40)
    res = runner.invoke(app, ["ingest", "fhir", str(cohort / "site-a" / "fhir"), "--site", "site-a",
                              "-w", str(ws.root), "--json"])
    assert res.exit_code == 0, res.output
    before = _files(ws.root)
    monkeypatch.setenv("MMFM_PSEUDONYM_KEY", "other-key-" + "2" * 40)
    line = _refused(["ingest", "omics", str(cohort / "site-a" / "omics"), "--site", "site-a", "-w", str(ws.root)],
                    "not the key this workspace's data was pseudonymised with", "mmfm init")
    assert "first-key" not in line and "other-key" not in line  # a fingerprint, never the key
    assert _files(ws.root) == before


def _git_head(root: Path) -> str:
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True).stdout.strip()


def _without_mr_type(export: Path) -> None:
    """Patients whose MRN is marked by its identifier system only (no HL7 v2-0203 MR type code), as many sites do."""
    path = export / "Patient.ndjson"
    out = []
    for line in path.read_text().splitlines():
        patient = json.loads(line)
        for ident in patient.get("identifier", []):
            if any(c.get("code") == "MR" for c in (ident.get("type") or {}).get("coding", [])):
                ident.pop("type")
                ident["system"] = MRN_SYSTEM
        out.append(json.dumps(patient))
    path.write_text("\n".join(out) + "\n")
    manifest = export / "manifest.json"  # the manifest's counts still hold: only identifiers changed
    assert manifest.exists()


@pytest.mark.slow  # two FHIR ingests, a validate and a refused version
def test_mrn_by_system_and_a_version_without_patients(cohort, tmp_path, pseudonym_key, prefect_api):
    import shutil

    export = tmp_path / "fhir"
    shutil.copytree(cohort / "site-a" / "fhir", export)
    _without_mr_type(export)

    # without the system: every Patient is quarantined with its own reason; validate publishes no patient, and a
    # dataset version with zero patients is refused, naming the table
    ws = init_workspace(tmp_path / "ws")
    res = runner.invoke(app, ["ingest", "fhir", str(export), "--site", "site-a", "-w", str(ws.root), "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert summary["quarantine_reasons"].get("deid.fhir_no_mrn") == 6
    assert summary["received"] == summary["ingested"] + summary["quarantined"]
    assert runner.invoke(app, ["validate", "-w", str(ws.root)]).exit_code == 0
    head = (ws.root / ".git" / "HEAD").read_text(), _git_head(ws.root)
    done = subprocess.run([sys.executable, "-m", "flows.cli", "version", "-w", str(ws.root)], capture_output=True,
                          text=True, env={**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}, timeout=300)
    assert done.returncode == 1, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "data/curated/patients.parquet has no rows" in errors[0], done.stderr
    assert "Traceback" not in done.stderr
    assert ((ws.root / ".git" / "HEAD").read_text(), _git_head(ws.root)) == head  # nothing committed

    # with it: the six patients are found by their identifier system
    ws2 = init_workspace(tmp_path / "ws2")
    res = runner.invoke(app, ["ingest", "fhir", str(export), "--site", "site-a", "--mrn-system", MRN_SYSTEM,
                              "-w", str(ws2.root), "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert "deid.fhir_no_mrn" not in summary["quarantine_reasons"]
    assert summary["tables"]["patients"] == 6
