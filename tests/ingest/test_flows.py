"""The ingest flows end to end on a generated cohort: accounting per source, idempotent reruns, staged tables
that join across modalities, and PHI canaries over everything the run wrote (files, logs, summaries)."""

from __future__ import annotations

import json
import logging

import polars as pl
import pytest

from flows.ingest import ingest_dicom, ingest_fhir_flow, ingest_omics_flow
from tasks.deid import Pseudonymizer
from tasks.ingest.quarantine import read_quarantine
from tasks.ingest.staged import read_table
from tasks.synth.generate import SynthConfig, generate
from tasks.workspace import init_workspace

SITES = ("site-a", "site-b")


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    out = tmp_path_factory.mktemp("flows") / "cohort"
    generate(out, SynthConfig(patients=16, sites=2, seed=31, corrupt_rate=0.1, cxr_size=48, ct_shape=(4, 24, 24)))
    return out


def _run_all(ws, cohort):
    summaries = []
    for site in SITES:
        for run, name in ((ingest_fhir_flow, "fhir"), (ingest_omics_flow, "omics"), (ingest_dicom, "dicom")):
            summaries.append(run(source=cohort / site / name, workspace=ws.root, site=site))
    return summaries


def _phi_canaries(cohort) -> set[str]:
    truth = pl.read_csv(cohort / "truth" / "patients.tsv", separator="\t")
    canaries = set(truth["mrn"]) | set(truth["fhir_id"])
    for site in SITES:
        for line in (cohort / site / "fhir" / "Patient.ndjson").read_text().splitlines():
            try:
                p = json.loads(line)
            except json.JSONDecodeError:
                continue
            canaries |= {p["name"][0]["text"], p["telecom"][0]["value"], p["address"][0]["line"][0],
                         p["birthDate"]}
    return canaries


@pytest.mark.slow  # every ingest flow on a generated cohort
def test_ingest_flows_end_to_end(cohort, tmp_path, prefect_api, pseudonym_key, caplog):
    caplog.set_level(logging.DEBUG)
    ws = init_workspace(tmp_path / "ws")
    summaries = _run_all(ws, cohort)
    for s in summaries:
        assert s["received"] == s["ingested"] + s["quarantined"] + s.get("pending", 0), s
    assert sum(s["quarantined"] for s in summaries) > 0

    # the staged tables join on pseudonyms: every imaged patient of the truth file is one staged patient
    keys = Pseudonymizer(pseudonym_key.encode())
    truth = pl.read_csv(cohort / "truth" / "patients.tsv", separator="\t")
    imaging = read_table(ws.staged, "imaging")
    patients = set(read_table(ws.staged, "patients")["patient_id"])
    assert set(imaging["patient_id"]) <= {keys.patient(s, m) for s, m in zip(truth["site"], truth["mrn"], strict=True)}
    assert set(imaging["patient_id"]) & patients
    cohort_table = pl.read_parquet(ws.staged / "cohort.parquet")
    assert cohort_table["has_imaging"].sum() > 0 and cohort_table["has_omics"].sum() > 0

    # one keyed date shift per patient across modalities: the radiograph's study date (DICOM) is the date of its
    # report (FHIR DiagnosticReport), both shifted by the same offset
    reports = read_table(ws.staged, "notes").filter(pl.col("kind") == "radiology_report", pl.col("loinc") == "36643-5")
    report_day = dict(zip(reports["patient_id"], reports["time"].str.slice(0, 10), strict=True))
    cxr = imaging.filter(pl.col("modality").is_in(["DX", "CR"]))
    pairs = [(d, report_day[p]) for p, d in zip(cxr["patient_id"], cxr["study_date"], strict=True) if p in report_day]
    assert pairs and all(a == b for a, b in pairs)

    # nothing identifying anywhere the run wrote or logged
    written = b"".join(p.read_bytes() for p in (ws.root / "data").rglob("*") if p.is_file()
                       and "landing" not in p.parts)
    written += json.dumps(summaries).encode() + caplog.text.encode()
    leaks = [c for c in _phi_canaries(cohort) if c.encode() in written]
    assert not leaks
    # summaries name landing extracts and objects, never a file of the extract (its name may name a patient)
    names = {p.name for site in SITES for p in (cohort / site).rglob("*") if p.is_file()}
    assert not [n for n in names if n in json.dumps(summaries)]
    assert read_quarantine(ws.quarantine).height == sum(s["quarantined"] for s in summaries)

    # a rerun of the same extracts does nothing and says so
    again = _run_all(ws, cohort)
    assert all(s["received"] == 0 and s["already_ingested_files"] > 0 for s in again)
    assert read_table(ws.staged, "imaging").height == imaging.height
