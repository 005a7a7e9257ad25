"""Contracts load, say what they must (semver, schema, rules with ids, types and policies), refuse malformed
declarations with a message naming the file and rule, and every rule of every contract compiles."""

from __future__ import annotations

import polars as pl
import pytest

from data_contracts.contract import POLICIES, TYPES, ContractError, load_contracts, load_model_io, parse_contract
from tasks.validation.contracts import validate_tables
from tasks.validation.gx_suites import Scope, compile_rule

STAGED = ("patients", "encounters", "labs", "conditions", "notes", "imaging", "omics", "omics_features", "cohort",
          "events")


def test_every_staged_table_has_a_contract():
    contracts = load_contracts()
    assert set(STAGED) <= set(contracts)
    for c in contracts.values():
        assert c.version.count(".") == 2 and c.required and c.key
        assert c.expectations[0].type == "schema" and c.expectations[0].policy == "fail"
        assert all(e.id.startswith(f"{c.table}.") and e.policy in POLICIES for e in c.expectations)


def test_every_type_and_policy_is_used():
    used = [e for c in load_contracts().values() for e in c.expectations]
    assert {e.type for e in used} == set(TYPES)
    assert {e.policy for e in used} == set(POLICIES)


def test_catalogue_references_are_resolved_at_load():
    labs = load_contracts()["labs"]
    assert labs.expectation("labs.loinc_known").args["pattern"] == r"^\d{1,7}-\d$"  # any LOINC code, by grammar
    assert "2345-7" in labs.expectation("labs.unit_canonical").args["values_by"]  # catalogue's more_labs too
    assert labs.expectation("labs.value_in_physiologic_range").args["ranges_by"]["8867-4"] == [20.0, 250.0]
    assert labs.expectation("labs.unit_canonical").args["values_by"]["1988-5"] == ["mg/L"]
    tensor = load_contracts()["imaging"].expectation("imaging.tensor").args["families"]
    assert tensor == {name: spec for name, spec in load_model_io().images().items()}


def test_every_rule_compiles_and_runs_on_a_batch_that_keeps_them(batch):
    split = dict(batch["cohort"].select("patient_id", "split").iter_rows())
    tables = {n: f.with_columns(split=pl.col("patient_id").replace_strict(split)) if n not in ("cohort",
              "omics_features") else f for n, f in batch.items()}
    report = validate_tables(tables, gx=False)
    assert not report.blocked and report.uncontracted == []
    assert all(o.skipped is None and o.failed == 0 for t in report.tables.values() for o in t.rules)
    assert {o.type for t in report.tables.values() for o in t.rules} == set(TYPES)


def test_a_rule_whose_column_or_parent_is_absent_is_skipped_with_the_reason(batch):
    contract = load_contracts()["labs"]
    scope = Scope(clean={}, splits=None, split_source=None).for_table("labs", batch["labs"].drop("encounter_id"),
                                                                       contract)
    skipped = {e.id: compile_rule(e, i, scope).skipped for i, e in enumerate(contract.expectations)}
    assert skipped["labs.encounter_known"] == "column(s) absent: encounter_id"
    assert skipped["labs.patient_known"] == "parent table patients not given"
    assert skipped["labs.split_integrity"] == "table has no split column"


GOOD = {"table": "t", "version": "1.0.0", "key": ["id"], "columns": {"id": "String"}, "required": ["id"],
        "expectations": [{"id": "t.schema", "type": "schema", "policy": "fail"}]}


@pytest.mark.parametrize(("change", "message"), [
    ({"version": 1}, "version must be a semver"),
    ({"columns": {"id": "Text"}}, "unknown dtype"),
    ({"required": ["id", "other"]}, "required columns must be declared"),
    ({"expectations": [{"id": "t.x", "type": "sometimes", "policy": "warn"}]}, "rule t.x: type must be one of"),
    ({"expectations": [{"id": "t.x", "type": "not_null", "column": "id", "policy": "maybe"}]}, "policy must be"),
    ({"expectations": [{"id": "t.x", "type": "schema", "policy": "warn"}]}, "a schema rule's policy is fail"),
    ({"expectations": [{"id": "t.x", "type": "between", "policy": "warn"}]}, "missing argument(s) column"),
    ({"expectations": [{"id": "t.x", "type": "in_set", "column": "id", "values_from": "labs.colour",
                        "policy": "warn"}]}, "unknown reference"),
    ({"expectations": [{"id": "t.x", "type": "not_null", "column": "id", "policy": "warn"}] * 2}, "unique"),
])
def test_malformed_contracts_are_refused(change, message):
    with pytest.raises(ContractError, match="t.yaml") as err:
        parse_contract({**GOOD, **change}, where="t.yaml")
    assert message in str(err.value)
    parse_contract(GOOD, where="t.yaml")  # the unchanged one loads


def test_contract_schemas_agree_with_tables_yaml():
    """tables.yaml is what ingest writes; a contract may add columns (split) but never retype one."""
    from data_contracts import table_schemas

    for table, declared in table_schemas().items():
        if table in load_contracts():
            columns = load_contracts()[table].columns
            assert {c: t for c, t in columns.items() if c in declared} == {c: declared[c] for c in columns
                                                                              if c in declared}, table


def test_a_table_never_staged_is_absent_not_blocked(batch):
    report = validate_tables({"patients": batch["patients"], "omics": pl.DataFrame()}, gx=False)
    assert report.absent == ["omics"] and not report.blocked and "omics" not in report.tables
