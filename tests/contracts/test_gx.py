"""Great Expectations is the reporter of record: for every part of every rule, GX must count exactly the rows the
polars fast path split off, on batches with faults of every kind (nulls and NaN included); its artifacts land under
context_dir and quote no values; and a disagreement between the two blocks the batch instead of passing silently."""

from __future__ import annotations

import json
import re
from pathlib import Path

import polars as pl
import pytest

import tasks.validation.gx_suites as compiler
from tasks.validation.contracts import validate_tables
from tasks.validation.data_docs import table_verdict
from tests.contracts.batch import make_batch, set_rows

SECRET_VALUE = 987654.321  # an out-of-range value: no artifact may quote it


def _faulty(batch: dict[str, pl.DataFrame]) -> dict[str, pl.DataFrame]:
    b = dict(batch)
    split = dict(b["cohort"].select("patient_id", "split").iter_rows())
    labs = b["labs"].with_columns(split=pl.col("patient_id").replace_strict(split))
    for ids, values in [(["O0-wbc"], {"value": float("nan")}), (["O0-crp"], {"value_type": None}),
                        (["O0-spo2", "O1-spo2"], {"value": SECRET_VALUE}), (["O1-wbc"], {"loinc": "9999-9"}),
                        (["O1-crp"], {"unit": "mmol/L"}), (["O2-wbc"], {"observation_id": None}),
                        (["O2-crp"], {"observation_id": "O2-spo2"}), (["O2-ddimer"], {"time": "yesterday"}),
                        (["O3-wbc"], {"time": "1900-01-01"}), (["O3-crp"], {"patient_id": None}),
                        (["O3-spo2"], {"patient_id": "P-nobody"}), (["O4-crp", "O4-wbc"], {"source_unit": "mg/dL"}),
                        (["O4-ddimer"], {"encounter_id": "E-none", "site": "Site A!"}),
                        (["O4-spo2"], {"split": "train"})]:
        labs = set_rows(labs, "observation_id", ids, **values)
    b["labs"] = labs
    b["patients"] = set_rows(set_rows(b["patients"], "patient_id", ["P1"], sex="robot"), "patient_id", ["P2"],
                             birth_date="1931", sex=None)
    img = set_rows(b["imaging"], "series_id", ["S0"], shape=[1, 16, 48, 47], value_min=-3000.0)
    img = set_rows(set_rows(img, "series_id", ["S3"], dtype="float64", shape=None), "series_id", ["S4"], modality="US")
    b["imaging"] = img
    b["omics"] = b["omics"].with_columns(collection_date=pl.when(pl.col("sample_id") == "X3").then(
        pl.date(1900, 1, 1)).otherwise("collection_date"))
    b["notes"] = set_rows(b["notes"], "note_id", ["N0"], kind="letter", text=None)
    b["omics_features"] = set_rows(b["omics_features"], "feature", ["GENE0002"], index=-1)
    return b


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    context = tmp_path_factory.mktemp("gx")
    return validate_tables(_faulty(make_batch()), context_dir=context), context


def test_gx_counts_what_polars_splits(recorded):
    report, _ = recorded
    assert not [m for m in report.messages if "disagree" in m or "GX could not" in m], report.messages
    checked = 0
    for table in report.tables.values():
        for o in table.rules:
            if o.unit == "rows" and o.skipped is None:
                assert o.gx_unexpected is not None and o.gx_unexpected >= o.failed, o
                checked += 1
    assert checked > 40
    labs = report.tables["labs"]
    assert labs.outcome("labs.value_in_physiologic_range").gx_unexpected == 3  # NaN and two out of range
    assert labs.outcome("labs.value_type_not_null").gx_unexpected == 1
    assert labs.outcome("labs.observation_id_unique").gx_unexpected == 2
    assert report.tables["imaging"].outcome("imaging.tensor").failed == 2


def test_faults_of_every_kind_were_seen(recorded):
    report, _ = recorded
    seen = {o.type for t in report.tables.values() for o in t.rules if o.failed}
    assert seen == {"not_null", "in_set", "between", "unique", "foreign_key", "temporal", "split_integrity", "tensor"}
    assert sorted(report.messages) == ["labs: rule labs.split_integrity (fail) broken by 7 rows",
                                       "omics_features: rule omics_features.index_non_negative (fail) broken by 1 row"]


def test_artifacts_are_under_context_dir_and_quote_no_values(recorded):
    report, context = recorded
    assert set(report.artifacts) >= {f"gx_results/{t}" for t in report.tables} | {"data_docs/local_site"}
    doc = json.loads((context / "results" / "labs.json").read_text())
    parts = {r["expectation_config"]["meta"]["part"] for r in doc["results"]}
    assert len(parts) == len(doc["results"]) and all(p.startswith("__p") for p in parts)
    html = list((context / "gx").rglob("*.html"))
    assert any(p.name == "index.html" for p in html) and any("validations" in p.parts for p in html)
    written = b"".join(p.read_bytes() for p in context.rglob("*") if p.is_file())
    assert b"987654" not in written and b"nobody" not in written


def test_a_broken_schema_is_recorded_by_gx_too(batch):
    labs = batch["labs"].drop("value_type").with_columns(value=pl.lit("x"))
    report = validate_tables({"patients": batch["patients"], "labs": labs})
    assert report.messages == ["labs: rule labs.schema (fail) broken by 2 columns (missing: value_type; dtype: value)"]
    results = {r["expectation_config"]["type"]: r["success"] for r in report.tables["labs"].gx["results"]
               if r["expectation_config"]["kwargs"].get("column") in (None, "value")}
    assert results == {"expect_table_columns_to_match_set": False, "expect_column_type_to_be": False}


def test_a_disagreement_between_polars_and_gx_blocks(batch, monkeypatch):
    def lenient_not_null(e, c, s):  # polars that misses nulls, GX that does not
        return compiler.replace(c, parts=(compiler.Part(pl.lit(False), ("ExpectColumnValuesToNotBeNull",
                                                                        {"column": e.args["column"]})),))

    monkeypatch.setitem(compiler.COMPILERS, "not_null", lenient_not_null)
    labs = set_rows(batch["labs"], "observation_id", ["O0-crp"], value_type=None)
    report = validate_tables({"patients": batch["patients"], "labs": labs})
    assert report.blocked
    assert "labs: rule labs.value_type_not_null part 0: polars counts 0, GX 1 (the split and the record disagree)" \
        in report.messages


# ------------------------------------------------------------------------------------------------ Data Docs
SITE = ("gx", "uncommitted", "data_docs", "local_site")
EXTERNAL = re.compile(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//|url\(\s*["']?(?:https?:)?//""", re.I)


def _site(context) -> Path:
    return context.joinpath(*SITE)


def test_data_docs_reference_nothing_outside_the_site(recorded):
    _, context = recorded
    pages = list(_site(context).rglob("*.html"))
    assert len(pages) > 10
    offenders = {p.name: EXTERNAL.findall(p.read_text())[:3] for p in pages if EXTERNAL.search(p.read_text())}
    assert offenders == {}
    assert all("<script" not in p.read_text() for p in pages)  # every GX script needs jQuery from a CDN
    for page in pages:  # every local reference resolves
        for ref in re.findall(r"""(?:src|href)="([^"#:]+)[#"]""", page.read_text()):
            assert (page.parent / ref).exists(), (page.name, ref)


def test_data_docs_say_mmfm_verdict_per_suite(recorded):
    """Quarantined rows or warnings are not a failure of the table: only a broken fail rule is."""
    report, context = recorded
    site = _site(context)
    index = json.loads((site / "index.json").read_text())
    assert index["verdict"] == "failed"  # labs.split_integrity and omics_features.index_non_negative are fail rules
    want = {t: table_verdict(r.summary()) for t, r in report.tables.items()}
    assert index["tables"] == want
    assert {"failed", "quarantined"} <= set(want.values())
    html = (site / "index.html").read_text()
    assert len(re.findall(r'id="mmfm-verdict"', html)) == 1 and 'data-verdict="failed"' in html
    for table, verdict in want.items():
        [page] = site.glob(f"validations/{table}/*/*/*.html")
        assert json.loads(page.with_suffix(".json").read_text())["verdict"] == verdict
        text = page.read_text()
        assert f'data-verdict="{verdict}"' in text
        status = re.search(r"Status:</span>(.{0,300})", text, re.S).group(1)
        assert ("Failed" in status) == (verdict == "failed"), (table, status)
        if verdict == "quarantined":
            q = report.tables[table].rows_quarantined
            assert f"quarantined {q} row" in status and "text-danger" not in text


def test_an_earlier_run_keeps_its_own_verdict(tmp_path):
    validate_tables(_faulty(make_batch()), context_dir=tmp_path)
    validate_tables(make_batch(), context_dir=tmp_path)
    site = _site(tmp_path)
    assert json.loads((site / "index.json").read_text())["verdict"] == "passed"
    labs = sorted(site.glob("validations/labs/*/*/*.json"), key=lambda p: p.parent.name)
    assert [json.loads(p.read_text())["verdict"] for p in labs] == ["failed", "passed"]
    index = (site / "index.html").read_text()
    assert "Failed: quarantined 18 rows (policy); 2 rows warned about (policy: warn); 7 rows broke a fail rule" \
        in index and index.count('id="mmfm-verdict"') == 1
