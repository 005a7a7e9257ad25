"""Omics ingest on a generated cohort (every reported corruption under its rule, nothing else rejected) and on
tiny hand-written extracts (formats, orientations, each rule)."""

from __future__ import annotations

import json
import shutil
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from tasks.deid.pseudonym import Pseudonymizer
from tasks.ingest.accounting import BatchResult
from tasks.ingest.landing import land, object_uri
from tasks.ingest.omics import META_COLUMNS, find_sample_sheet, ingest_omics, omics_frame, orientation
from tasks.synth.generate import SynthConfig, generate

SITE = "site-a"
KEYS = Pseudonymizer(b"k" * 32)
EXPECTED_RULE = {"invalid_omics_value": "omics.value"}
PENDING = "missing_patient_reference"  # a sample of no known patient is pending (waits for FHIR), not rejected


def ingest_dir(source: Path, landing: Path, known: set[str] | None, **kw) -> BatchResult:
    return ingest_omics(land(source, landing, "omics", SITE), landing, KEYS, SITE, known, **kw)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cohort")
    generate(out, SynthConfig(patients=30, sites=1, seed=4, corrupt_rate=0.2, cxr_size=32, ct_shape=(2, 16, 16)))
    return out


@pytest.fixture(scope="module")
def known(cohort) -> set[str]:
    return set(pl.read_csv(cohort / "truth" / "patients.tsv", separator="\t", infer_schema=False)["mrn"])


@pytest.fixture(scope="module")
def expression(cohort) -> pl.DataFrame:
    return pl.read_csv(cohort / SITE / "omics" / "expression.tsv", separator="\t", infer_schema=False)


@pytest.fixture(scope="module")
def sheet(cohort) -> pl.DataFrame:
    return pl.read_csv(cohort / SITE / "omics" / "sample_sheet.tsv", separator="\t", infer_schema=False)


@pytest.fixture(scope="module")
def result(cohort, known, tmp_path_factory) -> BatchResult:
    return ingest_dir(cohort / SITE / "omics", tmp_path_factory.mktemp("ws") / "landing", known)


def comparable(r: BatchResult) -> tuple:
    """What must not depend on the file format: rows, features, and (rule, sample's place) of each rejection (a
    transposed file's column k holds what a samples x features file's row k - 1 holds)."""
    def place(location: str) -> str:
        kind, n = location.split()
        return f"row {int(n) - 1}" if kind == "column" else location

    held = sorted((p["sheet_location"], p["patient_key"]) for p in r.pending)  # pending: by its sheet row
    return r.rows["omics"], r.rows["omics_features"], sorted((j.rule, place(j.location)) for j in r.rejections), held


def variant(tmp_path: Path, cohort: Path, name: str, frame: pl.DataFrame, write) -> Path:
    """An extract with the cohort's sample sheet and `frame` written by `write(frame, path)` as `name`."""
    d = tmp_path / name.replace(".", "_")
    d.mkdir()
    shutil.copy(cohort / SITE / "omics" / "sample_sheet.tsv", d / "sample_sheet.tsv")
    write(frame, d / name)
    return d


def test_accounting_identity(result, expression):
    assert result.source == "omics"
    assert result.received == expression.height == result.ingested + result.quarantined + len(result.pending)
    assert result.balanced()
    assert len(result.rows["omics"]) == result.ingested


def test_every_omics_corruption_under_its_rule_and_nothing_else(result, cohort, expression, sheet, tmp_path):
    truth = [json.loads(line) for line in (cohort / "truth" / "corruptions.jsonl").read_text().splitlines()]
    truth = [t for t in truth if t["modality"] == "omics"]
    assert {t["kind"] for t in truth} == {*EXPECTED_RULE, PENDING}  # the cohort exercises both kinds
    extract = land(cohort / SITE / "omics", tmp_path / "landing", "omics", SITE)
    sha_of = {f"{SITE}/omics/{f.rel_path}": f.sha256 for f in extract.files}
    row_in = {"sample_sheet.tsv": list(sheet["sample_id"]), "expression.tsv": list(expression["sample_id"])}

    def where(t: dict) -> tuple[str, str]:  # the file where the fault is, and the sample's data row in it
        return sha_of[t["file"]], f"row {row_in[Path(t['file']).name].index(t['sample_id']) + 1}"

    held = {(p["sheet_sha256"], p["sheet_location"]) for p in result.pending}
    assert held == {where(t) for t in truth if t["kind"] == PENDING}
    truth = [t for t in truth if t["kind"] != PENDING]
    got = {(j.sha256, j.location): j for j in result.rejections}
    assert set(got) == {where(t) for t in truth}
    for t in truth:
        rej = got[where(t)]
        assert (rej.rule, rej.source, rej.stage) == (EXPECTED_RULE[t["kind"]], "omics", "ingest")
        assert rej.source_uri == object_uri(tmp_path / "landing", rej.sha256)


def test_values_equal_the_tsv(result, expression):
    by_pseudonym = {KEYS.resource_id(SITE, "Sample", sid): i for i, sid in enumerate(expression["sample_id"])}
    genes = expression.columns[1:]
    assert [f["feature"] for f in result.rows["omics_features"]] == genes
    assert [f["index"] for f in result.rows["omics_features"]] == list(range(len(genes)))
    for row in result.rows["omics"]:
        source = expression.row(by_pseudonym[row["sample_id"]])
        assert [row[g] for g in genes] == [float(np.float32(v)) for v in source[1:]]


def test_staged_frame_is_typed(result):
    frame = omics_frame(result.rows["omics"], result.rows["omics_features"])
    assert frame.columns[: len(META_COLUMNS)] == list(META_COLUMNS)
    assert frame.schema["collection_date"] == pl.Date
    assert {frame.schema[f["feature"]] for f in result.rows["omics_features"]} == {pl.Float32}


def test_no_mrn_or_lab_sample_id_in_rows_or_rejection_messages(result, sheet):
    rows_text = json.dumps(result.rows, default=str)
    messages = " ".join(j.message + j.source_uri + j.location for j in result.rejections)
    for mrn in sheet["mrn"]:
        assert mrn not in rows_text and mrn not in messages
    for sid in sheet["sample_id"]:  # a lab may use the MRN as its sample id: positions only
        assert sid not in rows_text and sid not in messages


def test_collection_date_shifted_by_the_patients_offset(result, sheet):
    for rec in sheet.iter_rows(named=True):
        patient = KEYS.patient(SITE, rec["mrn"])
        row = next((r for r in result.rows["omics"] if r["patient_id"] == patient), None)
        if row is not None:
            expected = date.fromisoformat(rec["collection_date"]) + timedelta(days=KEYS.date_offset_days(patient))
            assert row["collection_date"] == expected < date.fromisoformat(rec["collection_date"])
            assert row["sample_id"] == KEYS.resource_id(SITE, "Sample", rec["sample_id"])
            assert (row["site"], row["specimen"], row["assay"]) == (SITE, rec["specimen"], rec["assay"])


def test_deterministic(result, cohort, known, tmp_path):
    again = ingest_dir(cohort / SITE / "omics", tmp_path / "landing", known)
    assert comparable(again) == comparable(result)
    assert [r["patient_id"] for r in again.rows["omics"]] == sorted(r["patient_id"] for r in again.rows["omics"])


def _long(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.unpivot(index="sample_id", variable_name="gene", value_name="value")


def _transposed(frame: pl.DataFrame, first: str) -> pl.DataFrame:
    genes = frame.columns[1:]
    body = frame.drop("sample_id").transpose(column_names=frame["sample_id"].to_list())
    return body.insert_column(0, pl.Series(first, genes))


@pytest.mark.parametrize("name, shape, write", [
    ("expression.parquet", lambda f: f, lambda f, p: f.write_parquet(p)),
    ("expression.csv", lambda f: f, lambda f, p: f.write_csv(p)),
    ("matrix.txt", lambda f: f, lambda f, p: f.write_csv(p, separator=";")),  # sniffed, not the suffix default
    ("long.tsv", _long, lambda f, p: f.write_csv(p, separator="\t")),
    ("long.parquet", _long, lambda f, p: f.write_parquet(p)),
    ("genes_by_samples.tsv", lambda f: _transposed(f, "gene"), lambda f, p: f.write_csv(p, separator="\t")),
    ("unnamed_index.csv", lambda f: _transposed(f, ""), lambda f, p: f.write_csv(p)),  # pandas' to_csv style
])
def test_same_rows_whatever_the_format_or_orientation(result, cohort, known, expression, tmp_path, name, shape,
                                                      write):
    d = variant(tmp_path, cohort, name, shape(expression), write)
    assert comparable(ingest_dir(d, tmp_path / "landing", known)) == comparable(result)


def test_numeric_parquet_with_nan_and_inf(cohort, known, expression, tmp_path):
    frame = expression.with_columns(pl.col(c).cast(pl.Float32, strict=False) for c in expression.columns[1:])
    frame = frame.with_columns(pl.when(pl.int_range(pl.len()) == 0).then(float("inf"))
                               .otherwise(pl.col("GENE0003")).alias("GENE0003"),
                               pl.when(pl.int_range(pl.len()) == 1).then(float("nan"))
                               .otherwise(pl.col("GENE0004")).alias("GENE0004"))
    r = ingest_dir(variant(tmp_path, cohort, "x.parquet", frame, lambda f, p: f.write_parquet(p)),
                   tmp_path / "landing", known)
    rules = {j.location: j.rule for j in r.rejections}
    assert rules["row 1"] == "omics.value"
    assert "row 2" not in rules  # one NaN is a missing value, not an error
    (row,) = [x for x in r.rows["omics"] if x["sample_id"] == KEYS.resource_id(SITE, "Sample", frame["sample_id"][1])]
    assert [g for g in frame.columns[1:] if row[g] is None] == ["GENE0004"]


@pytest.mark.parametrize("columns, first, expected", [
    (["sample_id", "gene", "value"], ["S1"], "long"),
    (["Sample", "Gene_Symbol", "tpm"], ["S1"], "long"),
    (["sample_id", "GENE1", "GENE2"], ["S1"], "wide"),
    (["id", "GENE1", "GENE2"], ["S1"], "wide"),  # first column values are sheet ids
    (["gene", "S1", "S2"], ["GENE1"], "transposed"),  # first column named like a feature
    (["", "S1", "S2"], ["GENE1"], "transposed"),  # the header holds the sheet's ids
    (["", "X1", "X2"], ["GENE1"], "wide"),  # neither axis matches the sheet: the default
    (["gene", "sample_id", "value", "extra"], ["GENE1"], "transposed"),  # four columns: not long
])
def test_orientation_rule(columns, first, expected):
    assert orientation(columns, first, {"S1", "S2"}) == expected


def _tiny(tmp_path: Path, matrix: str, name: str = "m.tsv", sheet: str | None = None) -> Path:
    d = tmp_path / "tiny"
    d.mkdir(exist_ok=True)
    (d / name).write_text(matrix)
    (d / "samples.tsv").write_text(sheet or "sample_id\tmrn\tcollection_date\nS1\tM1\t2020-01-02\n"
                                            "S2\tM2\t2020-02-03\nS3\tM3\t2020-03-04\n")
    return d


def _rules(r: BatchResult) -> dict[str, str]:
    assert r.balanced()
    return {j.location: j.rule for j in r.rejections}


@pytest.mark.parametrize("cell, rule", [("#DIV/0!", "omics.value"), ("#N/A", "omics.value"), ("inf", "omics.value"),
                                        ("abc", "omics.value"), ("1e300", "omics.value"), ("NA", None),
                                        ("", None), ("NaN", None), ("n/a", None), ("-1.5e-3", None)])
def test_cell_values(tmp_path, cell, rule):
    r = ingest_dir(_tiny(tmp_path, f"sample_id\tg1\tg2\tg3\nS1\t1\t{cell}\t2\n"), tmp_path / "l", None)
    assert _rules(r) == ({"row 1": rule} if rule else {})


def test_missing_threshold(tmp_path):
    r = ingest_dir(_tiny(tmp_path, "sample_id\tg1\tg2\tg3\tg4\nS1\t1\tNA\t\t2\nS2\t1\tNA\tNA\t\n"), tmp_path / "l",
                   {"M1", "M2"})
    assert _rules(r) == {"row 2": "omics.missing"}
    (row,) = r.rows["omics"]
    assert [row[g] for g in ("g1", "g2", "g3", "g4")] == [1.0, None, None, 2.0]


def test_duplicates_sheet_and_patient_rules(tmp_path):
    matrix = "sample_id\tg1\nS1\t1\nS1\t2\nS2\t3\nS3\t4\nS4\t5\n"
    r = ingest_dir(_tiny(tmp_path, matrix), tmp_path / "l", {"M1", "M2"})
    # matrix rows 2 (the second S1) and 5 (S4, not in the sheet); S3 (matrix row 4, the sheet's row 3) names no
    # known patient: pending, not rejected
    assert _rules(r) == {"row 2": "omics.duplicate", "row 5": "omics.sample_sheet"}
    assert sorted(row["g1"] for row in r.rows["omics"]) == [1.0, 3.0]  # the first S1 is the one considered
    assert r.received == 5 and r.ingested == 2 and r.balanced()
    (held,) = r.pending
    assert (held["location"], held["sheet_location"], held["patient_key"], held["reason"]) == \
        ("row 4", "row 3", KEYS.patient(SITE, "M3"), "patient not yet ingested")
    unchecked = ingest_dir(_tiny(tmp_path, matrix), tmp_path / "l2", None)  # no EHR MRNs: no patient check
    assert not unchecked.pending and unchecked.ingested == 3
    by_pseudonym = ingest_dir(_tiny(tmp_path, matrix), tmp_path / "l3", {KEYS.patient(SITE, m) for m in ("M1", "M2")})
    assert comparable(by_pseudonym) == comparable(r)  # the staged patients table knows pseudonyms, not MRNs


def test_conflicting_sheet_rows_and_long_format_repeats(tmp_path):
    sheet = "sample_id\tmrn\nS1\tM1\nS1\tM9\nS2\tM2\n"
    long = "sample_id\tgene\tvalue\nS1\tg1\t1\nS2\tg1\t2\nS2\tg1\t3\n"
    r = ingest_dir(_tiny(tmp_path, long, sheet=sheet), tmp_path / "l", None)
    assert _rules(r) == {"row 1": "omics.sample_sheet", "row 2": "omics.duplicate"}  # sheet row 1, matrix row 2


def test_unreadable_files_and_explicit_sheet(tmp_path):
    d = _tiny(tmp_path, "sample_id\tg1\nS1\t1\n", sheet="sample_id\tmrn\nS9\tM9\n")
    (d / "notes.md").write_text("not a matrix\n")
    (d / "broken.csv").write_text("sample_id,g1,g1\nS2,1,2\n")
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "sample_sheet.csv").write_text("sample_id,mrn\nS1,M1\n")
    landed = land(extra, tmp_path / "l", "omics", SITE).files[0]
    r = ingest_dir(d, tmp_path / "l", None, sample_sheet=landed)
    assert find_sample_sheet(land(d, tmp_path / "l", "omics", SITE)).rel_path == "samples.tsv"
    assert r.balanced() and [(j.rule, j.location) for j in r.rejections] == [("omics.format", "")] * 2
    assert r.ingested == 1 and r.rows["omics"][0]["patient_id"] == KEYS.patient(SITE, "M1")


def test_panels_are_unioned_and_unmeasured_features_are_null(tmp_path):
    d = _tiny(tmp_path, "sample_id\tg1\tg2\nS1\t1\t2\n", name="panel_a.tsv")
    (d / "panel_b.csv").write_text("sample_id,g2,g3\nS2,3,4\n")
    (d / "clash.tsv").write_text("sample_id\tsite\nS3\t1\n")  # a feature named like a table column
    r = ingest_dir(d, tmp_path / "l", None)
    assert [(f["feature"], f["index"]) for f in r.rows["omics_features"]] == [("g1", 0), ("g2", 1), ("g3", 2)]
    values = {row["patient_id"]: [row[g] for g in ("g1", "g2", "g3")] for row in r.rows["omics"]}
    assert values == {KEYS.patient(SITE, "M1"): [1.0, 2.0, None], KEYS.patient(SITE, "M2"): [None, 3.0, 4.0]}
    assert [(j.rule, j.location) for j in r.rejections] == [("omics.format", "")] and r.balanced()
