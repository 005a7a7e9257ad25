"""Omics ingested before the FHIR export of its patients: samples are pending (not quarantined, not lost), the FHIR
ingest that brings the patients stages them, a sample of a patient who never arrives stays pending with its reason,
and reruns stage nothing twice. Real flows, real parquet, a generated cohort."""

from __future__ import annotations

import shutil
import sqlite3

import polars as pl
import pytest

from flows.ingest import ingest_fhir_flow, ingest_omics_flow
from tasks.deid import Pseudonymizer
from tasks.ingest.pending import pending_lines
from tasks.ingest.staged import read_table
from tasks.ingest.state import IngestState
from tasks.synth.generate import SynthConfig, generate
from tasks.workspace import init_workspace

SITE = "site-a"
NEVER_MRN = "MRN-NEVER-ARRIVES-7"


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    out = tmp_path_factory.mktemp("pending") / "cohort"
    generate(out, SynthConfig(patients=6, sites=1, seed=5, corrupt_rate=0.0, cxr_size=16, ct_shape=(2, 8, 8)))
    return out


@pytest.fixture(scope="module")
def omics_src(cohort, tmp_path_factory):
    """The site's omics extract plus one sample ("SX") of a patient the EHR extract does not have."""
    d = tmp_path_factory.mktemp("omics_src") / "omics"
    shutil.copytree(cohort / SITE / "omics", d)
    matrix = (d / "expression.tsv").read_text().splitlines()
    first = matrix[1].split("\t")
    (d / "expression.tsv").write_text("\n".join([*matrix, "\t".join(["SX", *first[1:]])]) + "\n")
    sheet = (d / "sample_sheet.tsv").read_text().splitlines()
    header = sheet[0].split("\t")
    extra = ["SX" if c == "sample_id" else NEVER_MRN if c == "mrn" else "" for c in header]
    (d / "sample_sheet.tsv").write_text("\n".join([*sheet, "\t".join(extra)]) + "\n")
    return d


def _omics_rows(ws) -> pl.DataFrame:
    return read_table(ws.staged, "omics").sort("sample_id")


def test_omics_before_fhir_is_pending_then_staged(cohort, omics_src, tmp_path, prefect_api, pseudonym_key):
    keys = Pseudonymizer(pseudonym_key.encode())
    n = pl.read_csv(omics_src / "expression.tsv", separator="\t", infer_schema=False).height
    ws = init_workspace(tmp_path / "ws")
    state = IngestState(ws.state)

    # omics first: every sample broke no rule but names no known patient -> pending, not quarantined
    first = ingest_omics_flow(source=omics_src, workspace=ws.root, site=SITE)
    assert (first["received"], first["ingested"], first["quarantined"], first["pending"]) == (n, 0, 0, n)
    assert first["received"] == first["ingested"] + first["quarantined"] + first["pending"]
    assert first["message"] == f"{n} omics samples pending: patient not yet ingested (site {SITE})"
    assert first["quarantine_reasons"] == {} and first["pending_reasons"] == {"patient not yet ingested": n}
    assert len(state.pending(SITE)) == n and read_table(ws.staged, "omics").height == 0
    db = (ws.state / "ingest.db").read_bytes()
    assert NEVER_MRN.encode() not in db and b"SX" not in db  # keyed hashes and places only

    again = ingest_omics_flow(source=omics_src, workspace=ws.root, site=SITE)
    assert again["received"] == 0 and len(state.pending(SITE)) == n  # the retry loses nothing

    # the FHIR ingest of those patients stages them in the same run
    fhir = ingest_fhir_flow(source=cohort / SITE / "fhir", workspace=ws.root, site=SITE)
    held = fhir["pending_omics"]
    assert (held["staged"], held["still_pending"]) == (n - 1, 1)
    (batch,) = held["ingests"]
    assert (batch["received"], batch["ingested"], batch["quarantined"], batch["pending"]) == (n - 1, n - 1, 0, 0)
    assert first["received"] == batch["ingested"] + first["quarantined"] + held["still_pending"]  # per extract
    staged = _omics_rows(ws)
    assert staged.height == n - 1
    assert set(staged["patient_id"]) <= set(read_table(ws.staged, "patients")["patient_id"])

    # the patient who never arrives: still pending, listed with its reason, under the pseudonym its MRN will have
    (left,) = state.pending(SITE)
    assert (left["reason"], left["patient_key"]) == ("patient not yet ingested", keys.patient(SITE, NEVER_MRN))
    assert left["location"] == f"row {n}" and left["sheet_location"] == f"row {n}"
    assert pending_lines(state) == [f"1 omics samples pending: patient not yet ingested (site {SITE})"]
    assert f"1 omics samples pending: patient not yet ingested (site {SITE})" in fhir["message"]

    # reruns stage nothing twice
    for rerun in (ingest_fhir_flow(source=cohort / SITE / "fhir", workspace=ws.root, site=SITE),
                  ingest_omics_flow(source=omics_src, workspace=ws.root, site=SITE)):
        assert rerun["received"] == 0 and (rerun.get("pending_omics") or {}).get("staged", 0) == 0
    assert _omics_rows(ws).equals(staged) and len(state.pending(SITE)) == 1
    with sqlite3.connect(ws.state / "ingest.db") as con:
        assert con.execute("SELECT count(*) FROM pending WHERE batch != ''").fetchone() == (0,)

    # the same rows as omics ingested after FHIR (the usual order)
    usual = init_workspace(tmp_path / "usual")
    ingest_fhir_flow(source=cohort / SITE / "fhir", workspace=usual.root, site=SITE)
    direct = ingest_omics_flow(source=omics_src, workspace=usual.root, site=SITE)
    assert (direct["ingested"], direct["pending"]) == (n - 1, 1)
    assert _omics_rows(usual).equals(staged)
