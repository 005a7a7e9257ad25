"""Each policy on injected faults, with exact counts: quarantine drops the rows (once, under the first rule they
break), fail blocks the batch with a message naming table, rule and count, warn counts and keeps. Polars only here
(gx=False); tests/contracts/test_gx.py checks that GX counts the same."""

from __future__ import annotations

import polars as pl

from tasks.validation.contracts import validate_tables
from tests.contracts.batch import set_rows

RANGE = "labs.value_in_physiologic_range"


def _balanced(report) -> None:
    for t in report.tables.values():
        assert t.rows_checked == t.rows_passed + t.rows_quarantined + t.rows_failed, t.table
        assert report.clean[t.table].height == t.rows_passed


def test_quarantine_drops_exactly_the_broken_rows(batch):
    bad = ["O0-crp", "O1-heart_rate", "O2-spo2"]
    batch["labs"] = set_rows(batch["labs"], "observation_id", bad, value=-5.0)  # every plausible range starts >= 0
    report = validate_tables(batch, gx=False)
    labs = report.tables["labs"]
    assert not report.blocked and report.messages == []
    assert labs.quarantine_reasons == {RANGE: 3} and labs.rows_quarantined == 3
    assert labs.outcome(RANGE).failed == 3
    assert sorted(labs.quarantine_frame["row_key"]) == sorted(bad)
    assert set(labs.quarantine_frame["rule"]) == {RANGE} and set(labs.quarantine_frame["policy"]) == {"quarantine"}
    assert set(labs.quarantine_frame["contract_version"]) == {"2.0.0"}
    assert {(q.key, q.rule, q.policy, q.contract_version) for q in labs.quarantined} == {
        (k, RANGE, "quarantine", "2.0.0") for k in bad}
    assert report.clean["labs"].height == batch["labs"].height - 3
    assert not set(bad) & set(report.clean["labs"]["observation_id"])
    _balanced(report)


def test_quarantine_records_name_rows_by_key_never_by_value(batch):
    batch["labs"] = set_rows(batch["labs"], "observation_id", ["O3-ddimer"], value=987654.321)
    rejections = validate_tables(batch, gx=False).rejections("run-1")
    assert [(r.rule, r.location, r.stage, r.run_id) for r in rejections] == [
        (RANGE, "observation_id O3-ddimer", "validate", "run-1")]
    assert rejections[0].contract_version == "labs@2.0.0" and rejections[0].sha256 == "c" * 64
    assert "987654" not in repr(rejections)


def test_a_row_breaking_several_rules_is_quarantined_once_under_the_first(batch):
    # unit_canonical comes before value_in_physiologic_range in contracts/labs.yaml
    batch["labs"] = set_rows(batch["labs"], "observation_id", ["O1-crp"], unit="mg/dL", value=-1.0)
    labs = validate_tables(batch, gx=False).tables["labs"]
    assert labs.rows_quarantined == 1 and labs.quarantine_reasons == {"labs.unit_canonical": 1}
    assert labs.outcome("labs.unit_canonical").failed == 1 and labs.outcome(RANGE).failed == 1


def test_fail_blocks_with_table_rule_and_count(batch):
    batch["patients"] = pl.concat([batch["patients"], batch["patients"].head(1)])  # P0 twice
    report = validate_tables(batch, gx=False)
    assert report.blocked
    assert report.messages == ["patients: rule patients.patient_id_unique (fail) broken by 2 rows"]
    assert report.tables["patients"].failures == {"patients.patient_id_unique": 2}
    assert report.tables["patients"].rows_quarantined == 0 and report.tables["patients"].rows_failed == 2
    _balanced(report)


def test_warn_counts_and_keeps(batch):
    alt = {"O0-crp": "mg/dL", "O1-crp": "mg/dL", "O2-wbc": "10*9/L", "O3-temperature": "[degF]"}
    for oid, unit in alt.items():
        batch["labs"] = set_rows(batch["labs"], "observation_id", [oid], source_unit=unit)
    report = validate_tables(batch, gx=False)
    labs = report.tables["labs"]
    assert labs.warnings == {"labs.source_unit_canonical": 4}
    assert labs.rows_quarantined == 0 and labs.rows_passed == batch["labs"].height and not report.blocked


def test_broken_schema_blocks_and_skips_the_other_rules(batch):
    batch["labs"] = batch["labs"].drop("value_type").with_columns(time=pl.lit(1))
    report = validate_tables(batch, gx=False)
    labs = report.tables["labs"]
    assert report.messages == ["labs: rule labs.schema (fail) broken by 2 columns (missing: value_type; dtype: time)"]
    assert all(o.skipped == "schema broken" for o in labs.rules if o.type != "schema")
    assert report.clean["labs"].height == 0 and labs.rows_failed == labs.rows_checked


def test_foreign_keys_quarantine_orphans_and_cascade_from_quarantined_parents(batch):
    batch["labs"] = set_rows(batch["labs"], "observation_id", ["O0-wbc"], patient_id="P-nobody")
    batch["labs"] = set_rows(batch["labs"], "observation_id", ["O0-crp"], encounter_id="E-none")
    batch["labs"] = set_rows(batch["labs"], "observation_id", ["O0-spo2"], encounter_id=None)  # allowed
    batch["patients"] = set_rows(batch["patients"], "patient_id", ["P2"], sex="robot")  # P2 quarantined
    report = validate_tables(batch, gx=False)
    assert report.tables["patients"].quarantine_reasons == {"patients.sex_known": 1}
    assert report.tables["encounters"].quarantine_reasons == {"encounters.patient_known": 1}  # E2 of P2
    # P2's seven labs (patient gone) and E2's ones are the same rows: quarantined once, under the patient rule
    assert report.tables["labs"].quarantine_reasons == {"labs.patient_known": 1 + 7, "labs.encounter_known": 1}
    assert report.tables["imaging"].quarantine_reasons == {"imaging.patient_known": 1}
    assert report.tables["cohort"].quarantine_reasons == {"cohort.patient_known": 1}
    assert not report.blocked
    _balanced(report)


def test_dates_before_birth_or_after_death_are_quarantined(batch):
    batch["labs"] = set_rows(batch["labs"], "observation_id", ["O1-wbc"], time="1950-05-01T00:00:00Z")
    batch["labs"] = set_rows(batch["labs"], "observation_id", ["O4-wbc", "O4-crp"], time="2022-06-02T08:00:00Z")
    batch["labs"] = set_rows(batch["labs"], "observation_id", ["O4-spo2"], time="2022-06-01T23:00:00Z")  # death day
    batch["encounters"] = set_rows(batch["encounters"], "encounter_id", ["E0"], start="1959-12-31T10:00:00Z")
    batch["patients"] = set_rows(batch["patients"], "patient_id", ["P3"], birth_date="1931")  # over 89: year only
    batch["labs"] = set_rows(batch["labs"], "observation_id", ["O3-wbc"], time="1931-02-01T00:00:00Z")
    report = validate_tables(batch, gx=False)
    assert report.tables["encounters"].quarantine_reasons == {"encounters.start_within_life": 1}
    # E0 is gone, so P0's seven labs name an unknown encounter: the cascade keeps curated tables whole
    assert report.tables["labs"].quarantine_reasons == {"labs.encounter_known": 7, "labs.time_within_life": 3}
    assert report.tables["patients"].rows_quarantined == 0


def test_a_death_before_birth_is_quarantined(batch):
    batch["patients"] = set_rows(batch["patients"], "patient_id", ["P4"], death_date="1950-01-01")
    report = validate_tables(batch, gx=False)
    assert report.tables["patients"].quarantine_reasons == {"patients.death_after_birth": 1}


def test_split_integrity_within_a_table_and_against_the_cohort(batch):
    split = {"P0": "train", "P1": "train", "P2": "train", "P3": "val", "P4": "test"}
    labs = batch["labs"].with_columns(split=pl.col("patient_id").replace_strict(split))
    labs = set_rows(labs, "observation_id", ["O1-crp"], split="test")  # P1 in train and test: all 7 rows leak
    labs = set_rows(labs, "patient_id", ["P3"], split="test")  # P3 consistent here, but the cohort says val
    batch["labs"] = labs
    report = validate_tables(batch, gx=False)
    assert report.blocked and report.tables["labs"].failures == {"labs.split_integrity": 7 + 7}
    assert report.messages == ["labs: rule labs.split_integrity (fail) broken by 14 rows"]
    # an explicit split map wins over the cohort's
    report = validate_tables(batch, gx=False, splits={**split, "P3": "test", "P1": "train"})
    assert report.tables["labs"].failures == {"labs.split_integrity": 7}


def test_the_cohort_itself_has_one_split_per_patient(batch):
    batch["cohort"] = pl.concat([batch["cohort"], batch["cohort"].head(1).with_columns(split=pl.lit("test"))])
    report = validate_tables(batch, gx=False)
    assert report.tables["cohort"].failures == {"cohort.patient_id_unique": 2, "cohort.split_integrity": 2}


def test_image_tensor_contract(batch):
    img = batch["imaging"]
    img = pl.concat([img, img.with_columns(series_id=pl.col("series_id") + "-bad")])
    img = set_rows(img, "series_id", ["S0-bad"], shape=[1, 16, 48, 47])  # wrong CT volume shape
    img = set_rows(img, "series_id", ["S1-bad"], value_max=5000.0)  # CT above 3071 HU
    img = set_rows(img, "series_id", ["S2-bad"], value_max=1e6)  # MR: no absolute range, passes
    img = set_rows(img, "series_id", ["S3-bad"], dtype="float64")  # DX not float32
    img = set_rows(img, "series_id", ["S4-bad"], shape=[3, 64, 32])  # CR images not 64x64
    img = set_rows(img, "series_id", ["S0"], spacing=[5.0, 6.0, 6.0])  # CT not resampled to 10 mm slices
    batch["imaging"] = img
    report = validate_tables(batch, gx=False)
    imaging = report.tables["imaging"]
    assert imaging.quarantine_reasons == {"imaging.tensor": 5}
    assert sorted(imaging.quarantine_frame["row_key"]) == ["S0", "S0-bad", "S1-bad", "S3-bad", "S4-bad"]
    assert not report.blocked
