"""The gate on real staged data: a generated cohort (with injected faults) through the plain ingest functions, then
every contract with GX as the record. Nothing may break a `fail` rule; what is quarantined is orphans of rows the
ingest rejected; GX agrees with the split; the quarantine records write like the ingest's."""

from __future__ import annotations

import json

import polars as pl
import pytest

from tasks.deid import Pseudonymizer
from tasks.ingest.dicom import ImagingConfig, batch_series, ingest_series_batch, scan_headers
from tasks.ingest.fhir import ingest_fhir
from tasks.ingest.landing import land
from tasks.ingest.omics import ingest_omics
from tasks.ingest.quarantine import Quarantine, read_quarantine
from tasks.ingest.staged import build_cohort, read_table, write_part
from tasks.synth.generate import SynthConfig, generate
from tasks.validation.contracts import validate_tables

KEYS = Pseudonymizer(b"k" * 32)
SITES = ("site-a", "site-b")
TABLES = ("patients", "encounters", "labs", "conditions", "notes", "imaging", "omics", "omics_features")


def _stage(result, staged, extract_id) -> None:
    for table, rows in result.rows.items():
        write_part(staged, table, extract_id, rows)


@pytest.fixture(scope="module")
def staged(tmp_path_factory):
    root = tmp_path_factory.mktemp("ws")
    cohort, landing, staged = root / "cohort", root / "data" / "landing", root / "data" / "staged"
    generate(cohort, SynthConfig(patients=14, sites=2, seed=31, corrupt_rate=0.1, cxr_size=48, ct_shape=(4, 24, 24)))
    for site in SITES:
        extract = land(cohort / site / "fhir", landing, "fhir", site)
        _stage(ingest_fhir(extract, landing, KEYS, site), staged, extract.extract_id)
        known = set(read_table(staged, "patients").filter(pl.col("site") == site)["patient_id"])
        extract = land(cohort / site / "omics", landing, "omics", site)
        _stage(ingest_omics(extract, landing, KEYS, site, known), staged, extract.extract_id)
        extract = land(cohort / site / "dicom", landing, "dicom", site)
        groups, result = scan_headers(extract, landing, site)
        for batch in batch_series(groups):
            result.merge(ingest_series_batch(batch, landing, staged, KEYS, site, ImagingConfig()))
        _stage(result, staged, extract.extract_id)
    build_cohort(staged)
    return staged


@pytest.fixture(scope="module")
def report(staged, tmp_path_factory):
    tables = {t: read_table(staged, t) for t in TABLES} | {"cohort": pl.read_parquet(staged / "cohort.parquet")}
    assert all(tables[t].height for t in TABLES)
    return validate_tables(tables, context_dir=tmp_path_factory.mktemp("gx"))


def test_real_staged_data_breaks_no_fail_rule(report):
    assert not report.blocked, report.messages
    assert all(t.failures == {} for t in report.tables.values())
    for t in report.tables.values():
        assert t.rows_checked == t.rows_passed + t.rows_quarantined and t.rows_failed == 0
        for o in t.rules:
            if o.unit == "rows" and o.skipped is None:
                assert o.gx_unexpected is not None and o.gx_unexpected >= o.failed
    assert report.tables["imaging"].outcome("imaging.tensor").failed == 0  # ingest resamples to the model's shapes
    json.dumps(report.summary())


def test_what_is_quarantined_is_orphans_of_rejected_rows(report):
    reasons = {rule for t in report.tables.values() for rule in t.quarantine_reasons}
    assert reasons and reasons <= {f"{t}.{r}_known" for t in TABLES + ("cohort",) for r in ("patient", "encounter")}


def test_quarantine_records_write_like_the_ingest(report, tmp_path):
    rejections = report.rejections("validate-run")
    assert len(rejections) == sum(t.rows_quarantined for t in report.tables.values())
    quarantine = Quarantine("validate-run")
    quarantine.extend(rejections)
    quarantine.write(tmp_path)
    frame = read_quarantine(tmp_path)
    assert frame.height == len(rejections) and set(frame["stage"]) == {"validate"}
    assert frame["contract_version"].str.contains(r"^\w+@\d+\.\d+\.\d+$").all()
