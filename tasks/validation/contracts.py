"""Data contracts as a gate: each staged table against its contract (data_contracts/contracts/<table>.yaml).

    report = validate_tables({"patients": p, "labs": labs, ...}, context_dir=ws.reports / "gx")
    report.blocked              # a `fail` rule broke (or GX and polars disagree): publish nothing; .messages say why
    report.clean["labs"]        # rows that broke no quarantine/fail rule (warn rules only count)
    report.rejections(run_id)   # one Rejection per quarantined row, for tasks.ingest.quarantine.Quarantine

One rule set, two engines. Each expectation compiles to PARTS (tasks/validation/gx_suites.py): a polars boolean
expression that is true on the rows the part counts as broken, and the Great Expectations 1.x expectation that
counts the same rows. Polars is the fast path and decides the split; GX is the reporter of record (results JSON,
Data Docs) and its count for every part must equal polars' count, or the batch is blocked: the record and the
split would disagree. Both engines read one frame: cross-table rules first join what they need into hidden `__`
columns (the parent's keys, the patient's birth and death dates, the split map), so GX checks the same joined values.

Semantics both engines share (GX's): a null is broken only by not_null; NaN is a value, outside every range; unique
marks every copy of a repeated key (nothing says which copy is right, so none is kept); dates compare by day.
Foreign keys and dates are checked against the parent's CLEAN rows: a lab of a quarantined patient is quarantined
too, so curated tables stay referentially whole. A row breaking several quarantine rules is quarantined once, under
the first of them in contract order. A broken schema skips the table's other rules (nothing else can be judged).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from data_contracts.contract import Contract, ModelIO, TensorSpec, load_contracts, load_model_io
from tasks.ingest.quarantine import Rejection
from tasks.validation.gx_suites import ROW, Compiled, GxRun, Scope, compile_rule, split_map

__all__ = ["QuarantinedRow", "RuleOutcome", "TableReport", "ValidationReport", "check_model_inputs", "validate_tables"]
SOURCE_OF = {"imaging": "dicom", "objects": "dicom", "omics": "omics", "omics_features": "omics",
             "cohort": "staged"}  # else fhir
QUARANTINE_SCHEMA = {"table": pl.String, "row": pl.UInt32, "row_key": pl.String, "rule": pl.String,
                     "policy": pl.String, "contract_version": pl.String, "source_sha256": pl.String}


@dataclass(frozen=True)
class RuleOutcome:
    rule: str
    type: str
    policy: str
    failed: int  # rows breaking the rule (columns, for a schema rule), whatever other rules they break
    quarantined: int = 0  # rows quarantined under this rule (the first quarantine rule they break)
    gx_unexpected: int | None = None  # GX's count summed over the rule's parts (a row may break two parts)
    unit: str = "rows"
    skipped: str | None = None
    detail: str = ""


@dataclass(frozen=True)
class QuarantinedRow:
    row: int  # position in the validated frame
    key: str | None  # the contract's key columns joined with '|' (None if null): never the row's values
    rule: str  # the first quarantine rule the row broke, in contract order
    policy: str
    contract_version: str
    source_sha256: str | None  # the landed object the row came from, where the table records it

    @property
    def message(self) -> str:
        return f"broke contract rule {self.rule} ({self.policy})"


@dataclass
class TableReport:
    table: str
    contract_version: str
    key: tuple[str, ...]
    rows_checked: int
    rows_passed: int  # rows in the clean table
    rows_quarantined: int
    rows_failed: int  # rows that broke a fail rule and no quarantine rule (all rows when the schema is broken)
    rules: list[RuleOutcome]
    quarantine_frame: pl.DataFrame  # QUARANTINE_SCHEMA: one row per quarantined row (`quarantined` as records)
    gx: dict | None = None  # GX results JSON (None when GX was not run)
    problems: list[str] = field(default_factory=list)  # what blocks the table, one line each

    @property
    def failures(self) -> dict[str, int]:
        return {r.rule: r.failed for r in self.rules if r.policy == "fail" and r.failed}

    @property
    def warnings(self) -> dict[str, int]:
        return {r.rule: r.failed for r in self.rules if r.policy == "warn" and r.failed}

    @property
    def quarantine_reasons(self) -> dict[str, int]:
        return {r.rule: r.quarantined for r in self.rules if r.quarantined}

    @property
    def blocked(self) -> bool:
        return bool(self.problems)

    @property
    def quarantined(self) -> list[QuarantinedRow]:
        return [QuarantinedRow(r["row"], r["row_key"], r["rule"], r["policy"], r["contract_version"],
                               r["source_sha256"]) for r in self.quarantine_frame.iter_rows(named=True)]

    def outcome(self, rule: str) -> RuleOutcome:
        return next(r for r in self.rules if r.rule == rule)

    def summary(self) -> dict[str, Any]:
        """JSON-able counts of this table (the CLI's and the lineage ledger's view)."""
        return {"contract_version": self.contract_version, "rows_checked": self.rows_checked,
                "rows_passed": self.rows_passed, "rows_quarantined": self.rows_quarantined,
                "rows_failed": self.rows_failed, "failures": self.failures, "warnings": self.warnings,
                "quarantine_reasons": self.quarantine_reasons, "blocked": self.blocked,
                "skipped": {o.rule: o.skipped for o in self.rules if o.skipped}}


@dataclass
class ValidationReport:
    tables: dict[str, TableReport]
    clean: dict[str, pl.DataFrame]
    uncontracted: list[str] = field(default_factory=list)  # given without a contract: not validated, not clean
    absent: list[str] = field(default_factory=list)  # given with no columns at all (read_table of a table never staged)
    artifacts: dict[str, str] = field(default_factory=dict)  # GX results JSON per table, Data Docs index

    @property
    def blocked(self) -> bool:
        return any(t.blocked for t in self.tables.values())

    @property
    def messages(self) -> list[str]:
        return [m for t in self.tables.values() for m in t.problems]

    def rejections(self, run_id: str = "") -> list[Rejection]:
        """One quarantine record per quarantined row, named by its key (or position) and its landed source."""
        out = []
        for t in self.tables.values():
            for q in t.quarantined:
                where = f"{'+'.join(t.key)} {q.key}" if q.key is not None else f"row {q.row}"
                out.append(Rejection(source_uri=f"data/staged/{t.table}", sha256=q.source_sha256 or "",
                                     location=where, source=SOURCE_OF.get(t.table, "fhir"), stage="validate",
                                     rule=q.rule, message=q.message, run_id=run_id,
                                     contract_version=f"{t.table}@{q.contract_version}"))
        return out

    def summary(self) -> dict[str, Any]:
        """JSON-able: what the CLI prints and the lineage ledger records."""
        return {"blocked": self.blocked, "messages": self.messages, "uncontracted": self.uncontracted,
                "absent": self.absent, "artifacts": self.artifacts,
                "tables": {n: t.summary() for n, t in self.tables.items()}}


# ------------------------------------------------------------------------------------------------ order
def _parents(contract: Contract) -> set[str]:
    refs = {e.args["references"].split(".")[0] for e in contract.expectations if e.type == "foreign_key"}
    if any(e.type == "temporal" for e in contract.expectations):
        refs.add("patients")
    return refs - {contract.table}


def table_order(contracts: dict[str, Contract], tables: list[str]) -> list[str]:
    """Parents before children (patients, encounters, then the rest), so children check against clean parents."""
    todo, done = sorted(tables), []
    while todo:
        ready = [t for t in todo if not (_parents(contracts[t]) & set(todo))]
        if not ready:
            raise ValueError(f"contracts refer to each other in a cycle: {', '.join(todo)}")
        done += ready
        todo = [t for t in todo if t not in ready]
    return done


# ------------------------------------------------------------------------------------------------ the split
def _score(frame: pl.DataFrame, rules: list[Compiled]) -> pl.DataFrame:
    """The frame with its row index, every hidden column, and one boolean column per row-level part."""
    lf = frame.lazy().with_row_index(ROW)
    for c in rules:
        for right, left_on, right_on in c.joins:
            lf = lf.join(right.lazy(), left_on=left_on, right_on=right_on, how="left", maintain_order="left")
    hidden = {name: expr for c in rules for name, expr in c.columns.items()}
    parts = {c.part_name(j): p.fails.fill_null(False) for c in rules for j, p in enumerate(c.parts)
             if p.fails is not None}
    return lf.with_columns(**hidden).with_columns(**parts).collect()


def _verdicts(scored: pl.DataFrame, rules: list[Compiled]) -> pl.DataFrame:
    """Adds `__rule<i>` (any part broken), `__first_q` (first quarantine rule broken), `__failed`, `__drop`."""
    masks = {f"__rule{i}": pl.any_horizontal([c.part_name(j) for j, p in enumerate(c.parts) if p.fails is not None])
             for i, c in enumerate(rules) if any(p.fails is not None for p in c.parts)}
    q = [i for i, c in enumerate(rules) if f"__rule{i}" in masks and c.rule.policy == "quarantine"]
    f = [i for i, c in enumerate(rules) if f"__rule{i}" in masks and c.rule.policy == "fail"]
    first_q = pl.coalesce([pl.when(pl.col(f"__rule{i}")).then(pl.lit(i, pl.Int32)) for i in q]) if q \
        else pl.lit(None, pl.Int32)
    failed = pl.any_horizontal([f"__rule{i}" for i in f]) if f else pl.lit(False)
    return scored.with_columns(**masks).with_columns(__first_q=first_q, __failed=failed).with_columns(
        __drop=pl.col("__first_q").is_not_null() | pl.col("__failed"))


def _quarantine_rows(v: pl.DataFrame, table: str, contract: Contract, rules: list[Compiled]) -> pl.DataFrame:
    keyed = [k for k in contract.key if k in v.columns]
    row_key = pl.concat_str([pl.col(k).cast(pl.String) for k in keyed], separator="|") if keyed \
        else pl.lit(None, pl.String)
    sha = pl.col("source_sha256") if v.schema.get("source_sha256") == pl.String else pl.lit(None, pl.String)
    rows = v.filter(pl.col("__first_q").is_not_null()).select(
        table=pl.lit(table), row=pl.col(ROW), row_key=row_key,
        rule=pl.col("__first_q").replace_strict({i: c.rule.id for i, c in enumerate(rules)}, return_dtype=pl.String),
        policy=pl.lit("quarantine"), contract_version=pl.lit(contract.version), source_sha256=sha)
    return rows.cast(QUARANTINE_SCHEMA)  # type: ignore[arg-type]


def _outcomes(v: pl.DataFrame, rules: list[Compiled]) -> list[RuleOutcome]:
    names = [n for n in v.columns if n.startswith("__rule")]
    sums = v.select(pl.col(names).sum()).row(0, named=True) if names else {}
    firsts = dict(v["__first_q"].drop_nulls().value_counts().iter_rows())
    out = []
    for i, c in enumerate(rules):
        table_level = [p.count for p in c.parts if p.count is not None]
        failed = sum(table_level) if table_level else int(sums.get(f"__rule{i}") or 0)
        out.append(RuleOutcome(c.rule.id, c.rule.type, c.rule.policy, failed, quarantined=int(firsts.get(i, 0)),
                               unit="columns" if c.rule.type == "schema" else "rows", skipped=c.skipped,
                               detail=c.detail))
    return out


def _problems(table: str, outcomes: list[RuleOutcome]) -> list[str]:
    msgs = []
    for o in outcomes:
        if o.policy == "fail" and o.failed:
            unit = o.unit if o.failed != 1 else o.unit[:-1]
            detail = f" ({o.detail})" if o.detail else ""
            msgs.append(f"{table}: rule {o.rule} (fail) broken by {o.failed} {unit}{detail}")
    return msgs


@dataclass
class _Checked:
    report: TableReport
    clean: pl.DataFrame
    gx_frame: pl.DataFrame  # what GX reads: the table and its hidden columns
    part_counts: dict[str, int]  # polars' count per row-level part
    rules: list[Compiled]


def check_table(table: str, frame: pl.DataFrame, contract: Contract, scope: Scope) -> _Checked:
    """The polars half for one table: compile, score, split."""
    scope = scope.for_table(table, frame, contract)
    rules = [compile_rule(e, i, scope) for i, e in enumerate(contract.expectations)]
    broken = any(c.rule.type == "schema" and any(p.count for p in c.parts) for c in rules)
    if broken:  # nothing else can be judged on a frame without its columns or dtypes
        rules = [c if c.rule.type == "schema" else c.skip("schema broken") for c in rules]
    v = _verdicts(_score(frame, rules), rules)
    outcomes = _outcomes(v, rules)
    quarantined = _quarantine_rows(v, table, contract, rules)
    clean = frame.clear() if broken else v.filter(~pl.col("__drop")).select(frame.columns)
    failed = frame.height if broken else int((v["__failed"] & v["__first_q"].is_null()).sum())
    report = TableReport(table, contract.version, contract.key, frame.height, clean.height, quarantined.height,
                         failed, outcomes, quarantined, problems=_problems(table, outcomes))
    parts = [c.part_name(j) for c in rules for j, p in enumerate(c.parts) if p.fails is not None]
    counts = v.select(pl.col(parts).sum()).row(0, named=True) if parts else {}
    hidden = [n for n in v.columns if n.startswith("__r") and not n.startswith("__rule") and n != ROW]
    return _Checked(report, clean, v.select(*frame.columns, *hidden), {k: int(n) for k, n in counts.items()}, rules)


# ------------------------------------------------------------------------------------------------ GX record
def _record(runner, checked: _Checked) -> None:
    """Run GX on the same frame and compare its count for every part with polars'; a mismatch blocks."""
    r = checked.report
    outcomes, doc = runner.run(r.table, r.contract_version, checked.gx_frame, checked.rules)
    r.gx = doc
    rules = []
    for c, o in zip(checked.rules, r.rules, strict=True):
        total = None
        for j, p in enumerate(c.parts):
            gx = outcomes.get(c.part_name(j))
            if gx is None:
                continue
            if gx.error:
                r.problems.append(f"{r.table}: rule {c.rule.id}: GX could not evaluate part {j} ({gx.error})")
                continue
            ours = checked.part_counts.get(c.part_name(j)) if p.fails is not None else p.count
            agree = (gx.unexpected == ours) if p.fails is not None else (gx.success == (not ours))
            if not agree:
                said = gx.unexpected if p.fails is not None else ("passed" if gx.success else "failed")
                r.problems.append(f"{r.table}: rule {c.rule.id} part {j}: polars counts {ours}, GX {said} "
                                  "(the split and the record disagree)")
            if p.fails is not None:
                total = (total or 0) + int(gx.unexpected or 0)
        rules.append(replace(o, gx_unexpected=total))
    r.rules = rules


# ------------------------------------------------------------------------------------------------ the gate
def validate_tables(tables: dict[str, pl.DataFrame], contracts_dir: Path | str | None = None,
                    context_dir: Path | str | None = None, *, splits: dict[str, str] | pl.DataFrame | None = None,
                    gx: bool = True) -> ValidationReport:
    """Check every table that has a contract; split its rows into clean and quarantined; say what blocks.

    `splits` is the split map (patient_id -> split); by default the cohort table's `split` column when it has one.
    `context_dir` keeps GX artifacts there: a file-backed GX context, results JSON per table, Data Docs HTML.
    `gx=False` runs the polars fast path alone (no record of record: for benchmarks and quick looks).
    A frame without columns is a table never staged: listed in `absent`, not validated. A rule whose parent table
    is not given is skipped and says so (`RuleOutcome.skipped`, `summary()["tables"][t]["skipped"]`).
    """
    contracts = load_contracts(contracts_dir)
    absent = sorted(t for t, f in tables.items() if f.width == 0)
    tables = {t: f for t, f in tables.items() if f.width}
    scope = Scope(clean={}, splits=split_map(splits, tables.get("cohort")),
                  split_source="cohort" if splits is None else None)
    runner = None
    if gx:
        runner = GxRun(context_dir)
    reports: dict[str, TableReport] = {}
    for table in table_order(contracts, [t for t in tables if t in contracts]):
        checked = check_table(table, tables[table], contracts[table], scope)
        if runner is not None:
            _record(runner, checked)
        reports[table] = checked.report
        scope.clean[table] = checked.clean
    artifacts = {} if runner is None else runner.finish({t: r.summary() for t, r in reports.items()})
    return ValidationReport(tables=reports, clean=dict(scope.clean), absent=absent,
                            uncontracted=sorted(t for t in tables if t not in contracts), artifacts=artifacts)


# ------------------------------------------------------------------------------------------------ model I/O
def _as_array(value: Any) -> tuple[np.ndarray, str]:
    """numpy view of a torch tensor or array-like, and its dtype name as the contract writes it (float32, bool)."""
    if hasattr(value, "detach"):  # torch, without importing it
        dtype = str(value.dtype).removeprefix("torch.")
        t = value.detach().cpu()
        return (t.float() if dtype == "bfloat16" else t).numpy(), dtype
    arr = np.asarray(value)
    return arr, arr.dtype.name


def _check_tensor(name: str, arr: np.ndarray, dtype: str, spec: TensorSpec, modality: list | None) -> list[str]:
    out = []
    allowed = (spec.dtype, *spec.extra.get("alt_dtypes", ()))
    if dtype not in allowed:
        out.append(f"{name}: dtype {dtype}, contract says {' or '.join(allowed)}")
    want = (None, *spec.shape)  # B first
    if arr.ndim != len(want) or any(w is not None and w != n for w, n in zip(want, arr.shape, strict=False)):
        said = ", ".join(["B", *("*" if w is None else str(w) for w in spec.shape)])
        return [*out, f"{name}: shape {tuple(arr.shape)}, contract says ({said})"]
    if spec.extra.get("finite") and arr.dtype.kind == "f" and not np.isfinite(arr).all():
        out.append(f"{name}: {int((~np.isfinite(arr)).sum())} values are not finite")
    for i in range(arr.shape[0]) if arr.size else ():
        key = modality[i] if modality is not None else "*"
        lo, hi = spec.value_range.get(key, spec.value_range.get("*", (None, None)))
        sample = arr[i]
        if (lo is not None and (sample < lo).any()) or (hi is not None and (sample > hi).any()):
            out.append(f"{name}: sample {i} outside [{lo}, {hi}]")
    return out


def _check_mask(batch: dict, io: ModelIO, arrays: dict[str, np.ndarray]) -> list[str]:
    present = [m for m in io.modalities if m in arrays]
    if "mask" not in arrays:
        return ["mask: missing; every batch says which modalities each sample has"] if present else []
    mask = arrays["mask"]
    if mask.ndim != 2 or mask.shape[1] != len(io.modalities):
        return [f"mask: shape {tuple(mask.shape)}, contract says (B, {len(io.modalities)})"]
    out = []
    for j, m in enumerate(io.modalities):
        if m not in arrays:
            if mask[:, j].any():
                out.append(f"mask: {m} marked present for {int(mask[:, j].sum())} samples, but the batch has no {m}")
            continue
        x = arrays[m]
        if io.inputs[m].extra.get("zeros_allowed") and x.dtype.kind == "f":
            continue  # e.g. concept flags: a note that mentions no concept reads as zeros
        zeros = [i for i in range(min(len(x), len(mask))) if mask[i, j] and x[i].size and not np.any(x[i])]
        if zeros:
            out.append(f"{m}: {len(zeros)} samples marked present are all zeros (imputed, not masked?)")
    return out


def _check_outputs(arrays: dict[str, np.ndarray], io: ModelIO) -> list[str]:
    spec = io.outputs.get("class_probs")
    if spec is None or "class_probs" not in arrays or arrays["class_probs"].ndim != 2:
        return []
    sums = arrays["class_probs"].astype(np.float64).sum(axis=1)
    bad = int((np.abs(sums - spec.extra.get("sum_to", 1.0)) > spec.extra.get("atol", 1e-4)).sum())
    return [f"class_probs: {bad} rows do not sum to {spec.extra.get('sum_to', 1.0)}"] if bad else []


def check_model_inputs(batch: dict[str, Any], model_io: ModelIO | None = None) -> list[str]:
    """Violations of data_contracts/model_io.yaml in one batch; [] when it conforms.

    Keys are input names (image_3d, image_2d, labs, notes, omics), `mask` (B, len(modalities)) and, to check a head's
    output with the same call, output names (class_probs, risk). `<input>_modality` (one DICOM modality per sample)
    selects per-modality image ranges; without it an image family is range-checked only where one range covers
    every sample (the `*` entry). A sample marked present but all zeros is reported: missing means masked.
    """
    io = model_io or load_model_io()
    arrays, out, sizes = {}, [], set()
    for name, value in batch.items():
        if name.endswith("_modality"):
            continue
        spec = io.inputs.get(name) or io.outputs.get(name)
        if spec is None:
            out.append(f"{name}: not in model_io.yaml")
            continue
        arr, dtype = _as_array(value)
        arrays[name] = arr
        sizes.add(arr.shape[0] if arr.ndim else None)
        out += _check_tensor(name, arr, dtype, spec, batch.get(f"{name}_modality"))
    if len(sizes) > 1:
        out.append(f"batch: tensors disagree on the batch size ({sorted(map(str, sizes))})")
    return out + _check_mask(batch, io, arrays) + _check_outputs(arrays, io)
