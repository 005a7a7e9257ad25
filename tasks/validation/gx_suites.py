"""The two compilations of a contract rule, and the Great Expectations run that records them.

    compiled = compile_rule(expectation, position, scope)   # -> Compiled: parts, hidden joins/columns, or skipped
    part.fails                                              # polars: true on the rows this part counts as broken
    part.gx                                                 # ("ExpectColumnValuesToBeBetween", {kwargs}): same rows

A rule compiles to one or more parts because GX needs one expectation per group (a range per LOINC code is one
`ExpectColumnValuesToBeBetween` with a row condition per code) or per bound (a date after birth, before death).
Each polars part is written to count exactly what its GX expectation counts (nulls are GX's "missing": never broken
except by not_null), and tasks/validation/contracts.py compares the two counts part by part. Cross-table rules
join the parent
(clean rows) into hidden `__r<i>_...` columns first; both engines then read those columns. GX is imported lazily:
the polars fast path never pays for it.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path
from urllib.parse import unquote, urlparse

import polars as pl
from pandas.api.types import pandas_dtype

from data_contracts.contract import Contract, Expectation

ROW = "__row"
FLOATS = (pl.Float32, pl.Float64)
RESULT_FORMAT = {"result_format": "SUMMARY", "partial_unexpected_count": 0}  # counts only: results quote no values
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Part:
    fails: pl.Expr | None  # row-level part; None for a table-level part (schema)
    gx: tuple[str, dict] | None  # GX expectation class and kwargs; None: checked by polars only (said in `detail`)
    count: int | None = None  # table-level parts: how many columns break it


@dataclass(frozen=True)
class Compiled:
    rule: Expectation
    position: int
    parts: tuple[Part, ...] = ()
    joins: tuple[tuple[pl.DataFrame, str, str], ...] = ()  # (right frame, left_on, right_on), right columns hidden
    columns: dict[str, pl.Expr] = field(default_factory=dict)  # hidden columns computed after the joins
    skipped: str | None = None
    detail: str = ""

    def part_name(self, j: int) -> str:
        return f"__p{self.position}_{j}"

    def skip(self, why: str) -> Compiled:
        return replace(self, parts=(), joins=(), columns={}, skipped=why)


@dataclass
class Scope:
    """What a rule may look at besides its own table: clean parents so far, and the split map."""

    clean: dict[str, pl.DataFrame]
    splits: pl.DataFrame | None  # patient_id, split
    split_source: str | None  # the table the split map came from (its own check is the within-table one)
    table: str = ""
    schema: dict[str, pl.DataType] = field(default_factory=dict)
    columns: dict[str, str] = field(default_factory=dict)  # declared column -> dtype name
    required: tuple[str, ...] = ()
    extra_columns: str | None = None

    def for_table(self, table: str, frame: pl.DataFrame, contract: Contract) -> Scope:
        return replace(self, table=table, schema=dict(frame.schema), columns=contract.columns,
                       required=contract.required, extra_columns=contract.extra_columns)


def split_map(splits: dict[str, str] | pl.DataFrame | None, cohort: pl.DataFrame | None) -> pl.DataFrame | None:
    """patient_id -> split: given, or the cohort's own split column (first split of a patient: its contract reports
    a patient with two)."""
    if isinstance(splits, dict):
        return pl.DataFrame({"patient_id": list(splits), "split": list(splits.values())}, schema=[
            ("patient_id", pl.String), ("split", pl.String)])
    if splits is None and cohort is not None and "split" in cohort.columns and "patient_id" in cohort.columns:
        splits = cohort.select("patient_id", "split").drop_nulls()
    return None if splits is None else splits.unique("patient_id", keep="first", maintain_order=True)


def polars_dtype(name: str) -> pl.DataType:
    inner = re.fullmatch(r"List\((\w+)\)", name)
    return pl.List(getattr(pl, inner.group(1))) if inner else getattr(pl, name)


# ------------------------------------------------------------------------------------------------ compilers
def _part(fails: pl.Expr, kind: str, kwargs: dict, where: tuple[str, list] | None) -> Part:
    """A part, limited to the rows whose column `where[0]` is one of `where[1]` (GX: the same row condition)."""
    if where is None:
        return Part(fails, (kind, kwargs))
    return Part(pl.col(where[0]).is_in(where[1]) & fails, (kind, {**kwargs, "row_condition": where}))


def _outside(c: pl.Expr, lo: float | None, hi: float | None, is_float: bool) -> pl.Expr:
    """Broken by a range: not null and (NaN, below lo or above hi); GX's between counts NaN as outside too."""
    bad = c.is_nan() if is_float else pl.lit(False)
    if lo is not None:
        bad = bad | (c < lo)
    if hi is not None:
        bad = bad | (c > hi)
    return c.is_not_null() & bad


def _between(column: str, lo, hi, s: Scope, where: tuple[str, list] | None = None) -> Part:
    fails = _outside(pl.col(column), lo, hi, s.schema.get(column) in FLOATS)
    return _part(fails, "ExpectColumnValuesToBeBetween", {"column": column, "min_value": lo, "max_value": hi}, where)


def _in_set(column: str, values: list, where: tuple[str, list] | None = None) -> Part:
    c = pl.col(column)
    fails = c.is_not_null() & ~c.is_in(pl.Series(values).implode())
    return _part(fails, "ExpectColumnValuesToBeInSet", {"column": column, "value_set": list(values)}, where)


def _regex(column: str, pattern: str, where: tuple[str, list] | None = None) -> Part:
    c = pl.col(column)
    fails = c.is_not_null() & ~c.str.contains(pattern)
    return _part(fails, "ExpectColumnValuesToMatchRegex", {"column": column, "regex": pattern}, where)


def _schema(e: Expectation, c: Compiled, s: Scope) -> Compiled:
    missing = [col for col in s.required if col not in s.schema]
    parts = [Part(None, ("ExpectTableColumnsToMatchSet", {"column_set": list(s.required), "exact_match": False}),
                  count=len(missing))]
    wrong = [col for col, t in s.columns.items() if col in s.schema and s.schema[col] != polars_dtype(t)]
    parts += [Part(None, ("ExpectColumnTypeToBe", {"column": col, "polars_dtype": t}), count=int(col in wrong))
              for col, t in s.columns.items() if col in s.schema]
    odd = []
    if s.extra_columns:
        want = polars_dtype(s.extra_columns)
        odd = [col for col, t in s.schema.items() if col not in s.columns and t != want]
        parts.append(Part(None, None, count=len(odd)))
    detail = "; ".join(x for x in (missing and f"missing: {', '.join(missing)}",
                                   wrong and f"dtype: {', '.join(wrong)}",
                                   odd and f"undeclared columns not {s.extra_columns}: {len(odd)}") if x)
    return replace(c, parts=tuple(parts), detail=detail)


def _unique(e: Expectation, c: Compiled, s: Scope) -> Compiled:
    cols = list(e.args["columns"])
    if len(cols) == 1:
        fails = pl.col(cols[0]).is_not_null() & pl.col(cols[0]).is_duplicated()
        return replace(c, parts=(Part(fails, ("ExpectColumnValuesToBeUnique", {"column": cols[0]})),))
    fails = ~pl.all_horizontal([pl.col(x).is_null() for x in cols]) & pl.struct(cols).is_duplicated()
    return replace(c, parts=(Part(fails, ("ExpectCompoundColumnsToBeUnique", {"column_list": cols})),))


def _in_set_rule(e: Expectation, c: Compiled, s: Scope) -> Compiled:
    a = e.args
    if "pattern" in a:
        return replace(c, parts=(_regex(a["column"], a["pattern"]),))
    if "values_by" in a:
        parts = [_in_set(a["column"], vals, (a["by"], [g])) for g, vals in sorted(a["values_by"].items())]
        return replace(c, parts=tuple(parts))
    return replace(c, parts=(_in_set(a["column"], a["values"]),))


def _between_rule(e: Expectation, c: Compiled, s: Scope) -> Compiled:
    a = e.args
    if "ranges_by" in a:
        parts = [_between(a["column"], lo, hi, s, (a["by"], [g])) for g, (lo, hi) in sorted(a["ranges_by"].items())]
        return replace(c, parts=tuple(parts))
    return replace(c, parts=(_between(a["column"], a.get("min"), a.get("max"), s),))


def _foreign_key(e: Expectation, c: Compiled, s: Scope) -> Compiled:
    parent, key = e.args["references"].split(".", 1)
    if parent not in s.clean:
        return c.skip(f"parent table {parent} not given")
    keys = s.clean[parent][key].drop_nulls().unique().sort()
    col = pl.col(e.args["column"])
    fails = col.is_not_null() & ~col.is_in(keys.implode())  # a semi-join: hash membership in the parent's keys
    return replace(c, parts=(Part(fails, ("ExpectColumnValuesToBeInSet", {"column": e.args["column"],
                                                                           "value_set": keys.to_list()})),))


def _day(column: str | pl.Expr, latest: bool = False) -> pl.Expr:
    """ISO day (YYYY-MM-DD) of a date or date-time; a partial FHIR date (YYYY, YYYY-MM) as its earliest day, or with
    `latest` as a string after every day it covers ('1931-99-99'), so plain string order compares days."""
    day = (pl.col(column) if isinstance(column, str) else column).cast(pl.String).str.slice(0, 10)
    if not latest:
        return day  # '1931' sorts before every '1931-..-..'
    n = day.str.len_chars()
    return pl.when(n == 4).then(day + "-99-99").when(n == 7).then(day + "-99").otherwise(day)


def _temporal(e: Expectation, c: Compiled, s: Scope) -> Compiled:
    h, col = f"__r{c.position}", e.args["column"]
    birth, death = e.args.get("birth", "birth_date"), e.args.get("death", "death_date")
    joins: tuple = ()
    if s.table == "patients":
        source = {f"{h}_birth": _day(birth), f"{h}_death": _day(death, latest=True)}
    elif "patients" not in s.clean:
        return c.skip("parent table patients not given")
    else:
        right = s.clean["patients"].select(pl.col("patient_id").alias(f"{h}_key"), _day(birth).alias(f"{h}_birth"),
                                           _day(death, latest=True).alias(f"{h}_death"))
        joins, source = ((right.unique(f"{h}_key", keep="first", maintain_order=True),
                          e.args.get("key", "patient_id"), f"{h}_key"),), {}
    day, b, d = pl.col(f"{h}_day"), pl.col(f"{h}_birth"), pl.col(f"{h}_death")
    pair = {"or_equal": True, "ignore_row_if": "either_value_is_missing"}
    parts = (Part(day.is_not_null() & b.is_not_null() & (day < b),
                  ("ExpectColumnPairValuesAToBeGreaterThanB", {"column_A": f"{h}_day", "column_B": f"{h}_birth",
                                                              **pair})),
             Part(day.is_not_null() & d.is_not_null() & (day > d),
                  ("ExpectColumnPairValuesAToBeGreaterThanB", {"column_A": f"{h}_death", "column_B": f"{h}_day",
                                                              **pair})))
    return replace(c, parts=parts, joins=joins, columns={**source, f"{h}_day": _day(col)})


def _split_integrity(e: Expectation, c: Compiled, s: Scope) -> Compiled:
    h, patient, split = f"__r{c.position}", e.args.get("patient", "patient_id"), e.args.get("split", "split")
    if split not in s.schema:
        return c.skip("table has no split column")
    n = f"{h}_splits"
    parts = [Part(pl.col(n) > 1, ("ExpectColumnValuesToBeBetween", {"column": n, "max_value": 1}))]
    columns = {n: pl.when(pl.col(patient).is_not_null()).then(pl.col(split).drop_nulls().n_unique().over(patient))}
    joins: tuple = ()
    if s.splits is not None and s.table != s.split_source:
        right = s.splits.select(pl.col("patient_id").alias(f"{h}_key"), pl.col("split").alias(f"{h}_mapped"))
        joins = ((right, patient, f"{h}_key"),)
        m = pl.col(f"{h}_mapped")
        parts.append(Part(pl.col(split).is_not_null() & m.is_not_null() & (pl.col(split) != m),
                          ("ExpectColumnPairValuesToBeEqual", {"column_A": split, "column_B": f"{h}_mapped",
                                                               "ignore_row_if": "either_value_is_missing"})))
    return replace(c, parts=tuple(parts), joins=joins, columns=columns)


def _joined(values: list, kind: type) -> str:
    """How polars writes a list cast to strings and joined with 'x' (the hidden column the regex reads)."""
    return pl.Series([[kind(v) for v in values]]).cast(pl.List(pl.String)).list.join("x")[0]


def _tensor(e: Expectation, c: Compiled, s: Scope) -> Compiled:
    h, parts = f"__r{c.position}", []
    columns = {f"{h}_shape": pl.col("shape").cast(pl.List(pl.String)).list.join("x")}  # [1, 16, 48, 48] -> "1x16x48x48"
    for family in e.args["families"].values():
        mods = list(family["modalities"])
        dims = ["\\d+" if d is None else _joined([d], int) for d in family["index_shape"]]
        parts.append(_regex(f"{h}_shape", "^" + "x".join(dims) + "$", ("modality", mods)))
        if family.get("spacing") and "spacing" in s.schema:
            columns[f"{h}_spacing"] = pl.col("spacing").cast(pl.List(pl.String)).list.join("x")
            want = re.escape(_joined(family["spacing"], float))
            parts.append(_regex(f"{h}_spacing", f"^{want}$", ("modality", mods)))
        parts.append(_in_set("dtype", [family["dtype"]], ("modality", mods)))
        for modality, (lo, hi) in sorted(family["value_range"].items()):
            parts += [_between(stat, lo, hi, s, ("modality", [modality])) for stat in ("value_min", "value_max")]
    return replace(c, parts=tuple(parts), columns=columns)


def _not_null(e: Expectation, c: Compiled, s: Scope) -> Compiled:
    """Optionally only where column `by` is one of `values` (imaging: a shard only for modalities the model reads)."""
    col, where = e.args["column"], (e.args["by"], list(e.args["values"])) if "by" in e.args else None
    return replace(c, parts=(_part(pl.col(col).is_null(), "ExpectColumnValuesToNotBeNull", {"column": col}, where),))


COMPILERS = {"schema": _schema, "not_null": _not_null, "in_set": _in_set_rule, "between": _between_rule,
             "unique": _unique, "foreign_key": _foreign_key, "temporal": _temporal,
             "split_integrity": _split_integrity, "tensor": _tensor}


def _columns_used(e: Expectation, table: str) -> list[str]:
    a = e.args
    cols = [a[k] for k in ("column", "by") if k in a] + list(a.get("columns", []))
    if e.type == "temporal":
        cols += [a.get("birth", "birth_date"), a.get("death", "death_date")] if table == "patients" else \
            [a.get("key", "patient_id")]
    if e.type == "tensor":
        cols += ["modality", "shape", "dtype", "value_min", "value_max"]
    if e.type == "split_integrity":
        cols.append(a.get("patient", "patient_id"))
    return cols


def compile_rule(e: Expectation, position: int, s: Scope) -> Compiled:
    """One expectation -> its parts for this table; skipped (with the reason) when a column or parent is absent."""
    c = Compiled(rule=e, position=position)
    if e.type != "schema" and e.type != "split_integrity":
        absent = [col for col in _columns_used(e, s.table) if col not in s.schema]
        if absent:
            return c.skip(f"column(s) absent: {', '.join(absent)}")
    return COMPILERS[e.type](e, c, s)


# ------------------------------------------------------------------------------------------------ GX
@dataclass(frozen=True)
class GxOutcome:
    success: bool
    unexpected: int | None
    error: str | None = None


@cache
def _pandas_dtype_name(polars_name: str) -> str | None:
    """The pandas dtype our conversion gives a column declared `polars_name`; None if pandas cannot parse its name
    (nested types): GX's ExpectColumnTypeToBe cannot say it, so polars alone checks that column's dtype."""
    frame = pl.DataFrame(schema={"c": polars_dtype(polars_name)}).to_pandas(use_pyarrow_extension_array=True)
    name = str(frame.dtypes["c"])
    try:
        pandas_dtype(name)
    except Exception:  # noqa: BLE001 - whatever pandas raises, the name is not one GX can compare against
        return None
    return name


def gx_expectation(kind: str, kwargs: dict, meta: dict):
    """Build one GX 1.x expectation from a part's spec (row conditions as GX Condition objects); None if the spec
    cannot be said in GX."""
    import great_expectations.expectations as gxe  # lazy: GX (~4 s) only when a suite is built or run
    from great_expectations.expectations.row_conditions import Column

    kw = dict(kwargs)
    if "row_condition" in kw:
        column, values = kw.pop("row_condition")
        kw["row_condition"] = Column(column) == values[0] if len(values) == 1 else Column(column).is_in(values)
    if "polars_dtype" in kw:
        name = _pandas_dtype_name(kw.pop("polars_dtype"))
        if name is None:
            return None
        kw["type_"] = name
    return getattr(gxe, kind)(**kw, meta=meta)


class GxRun:
    """One GX context per validation: ephemeral, or file-backed under `context_dir` (results JSON + Data Docs)."""

    def __init__(self, context_dir: Path | str | None = None):
        import great_expectations as gx  # lazy: GX (~4 s) only when a suite is run; flows.validate imports this
        from great_expectations.data_context.types.base import ProgressBarsConfig

        logging.getLogger("great_expectations").setLevel(logging.WARNING)
        self.dir = Path(context_dir) if context_dir is not None else None
        if self.dir is None:
            self.ctx = gx.get_context(mode="ephemeral")
        else:
            self.dir.mkdir(parents=True, exist_ok=True)
            self.ctx = gx.get_context(mode="file", project_root_dir=str(self.dir))
        self.ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
        self.source = self.ctx.data_sources.add_or_update_pandas("mmfm_staged")
        self.artifacts: dict[str, str] = {}

    def _validation(self, table: str, version: str, expectations: list):
        import great_expectations as gx  # lazy: GX (~4 s), as in __init__

        try:
            asset = self.source.get_asset(table)
        except LookupError:
            asset = self.source.add_dataframe_asset(name=table)
        batch = next((b for b in asset.batch_definitions if b.name == "whole"), None) \
            or asset.add_batch_definition_whole_dataframe("whole")
        suite = gx.ExpectationSuite(name=table, meta={"contract_version": version})
        for x in expectations:
            suite.add_expectation(x)
        suite = self.ctx.suites.add_or_update(suite)
        return self.ctx.validation_definitions.add_or_update(gx.ValidationDefinition(name=table, data=batch,
                                                                                     suite=suite))

    def run(self, table: str, version: str, frame: pl.DataFrame, rules: list[Compiled]
            ) -> tuple[dict[str, GxOutcome], dict]:
        """GX's outcome per part name, and the results JSON."""
        expectations = []
        for c in rules:
            for j, p in enumerate(c.parts):
                meta = {"rule": c.rule.id, "policy": c.rule.policy, "part": c.part_name(j), "contract": table,
                        "contract_version": version}
                x = gx_expectation(*p.gx, meta) if p.gx is not None else None
                if x is not None:
                    expectations.append(x)
        if not expectations:
            return {}, {}
        pdf = frame.to_pandas(use_pyarrow_extension_array=True)  # Arrow-backed: no copy of strings
        result = self._validation(table, version, expectations).run(batch_parameters={"dataframe": pdf},
                                                                    result_format=RESULT_FORMAT)
        outcomes = {}
        for r in result.results:
            info = r.exception_info or {}
            error = info.get("exception_message") if info.get("raised_exception") else None
            outcomes[r.expectation_config.meta["part"]] = GxOutcome(bool(r.success), r.result.get("unexpected_count"),
                                                                     error)
        doc = result.to_json_dict()
        if self.dir is not None:
            path = self.dir / "results" / f"{table}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(doc, indent=1, sort_keys=True, default=str))
            self.artifacts[f"gx_results/{table}"] = str(path)
        return outcomes, doc

    def finish(self, summaries: dict[str, dict] | None = None) -> dict[str, str]:
        """Build the Data Docs and make them offline pages that say mmfm's verdict (tasks/validation/data_docs.py);
        `summaries`: table -> TableReport.summary() (without them, each table's verdict reads "not judged")."""
        if self.dir is not None:
            from tasks.validation.data_docs import make_offline

            for site, url in self.ctx.build_data_docs().items():
                self.artifacts[f"data_docs/{site}"] = url
                index = Path(unquote(urlparse(url).path))
                if index.is_file():
                    make_offline(index.parent, summaries or {})
        return dict(self.artifacts)
