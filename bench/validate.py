"""Contract validation throughput: our polars split against a hand-written polars filter and against GX alone.

    python bench/validate.py [--labs 1000000] [--patients 20000] [--encounters 50000] [--seed 0] [--repeat 3]

Data: a synthetic labs table (values drawn inside each LOINC's plausible range, ~3% of rows broken on purpose:
out of range, unknown patient/LOINC/unit, null value, dated before birth, repeated id) with the patients and
encounters tables its foreign keys and dates refer to. Three timings over the same three tables:
  ours   validate_tables(..., gx=False): every rule of the three contracts, rows split into clean and quarantined,
         each quarantined row attributed to its first rule, counts per rule and per GX part
  plain  the same rules written by hand as one polars filter per table (clean/quarantined, no attribution)
  gx     Great Expectations 1.x alone on pandas (Arrow-backed) with the suites our contracts compile to: the
         reporter of record, counting only (GX does not split rows)
Prints rows/s and the time ratios (ours/plain: what the rule engine costs over hand-written polars; gx/ours).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import polars as pl

from data_contracts import lab_catalog
from data_contracts.contract import load_contracts
from tasks.validation.contracts import check_table, table_order, validate_tables
from tasks.validation.gx_suites import GxRun, Scope

SEXES = ["female", "male", "other", "unknown"]
SITE = r"^[a-z0-9][a-z0-9_-]*$"


def _days(rng: np.random.Generator, n: int, start: str, end: str) -> pl.Series:
    lo, hi = np.datetime64(start, "D").astype(int), np.datetime64(end, "D").astype(int)
    return pl.Series(rng.integers(lo, hi, n).astype("datetime64[D]")).cast(pl.String)


def _ids(prefix: str, n: int, width: int) -> pl.Expr:
    return pl.lit(prefix) + pl.int_range(n).cast(pl.String).str.zfill(width)


def make_tables(n_labs: int, n_patients: int, n_encounters: int, seed: int) -> dict[str, pl.DataFrame]:
    rng = np.random.default_rng(seed)
    patients = pl.select(patient_id=_ids("P", n_patients, 8)).with_columns(
        site=pl.Series(rng.choice(["site-a", "site-b", "site-c"], n_patients)),
        sex=pl.Series(rng.choice(SEXES[:2], n_patients)), birth_date=_days(rng, n_patients, "1930-01-01", "2000-01-01"),
        deceased=pl.Series(rng.random(n_patients) < 0.1))
    patients = patients.with_columns(death_date=pl.when("deceased").then(
        _days(rng, n_patients, "2023-06-01", "2024-01-01")), source_sha256=pl.lit("0" * 64))
    encounters = pl.select(encounter_id=_ids("E", n_encounters, 8)).with_columns(
        patient_id=patients["patient_id"].gather(rng.integers(0, n_patients, n_encounters)),
        site=pl.lit("site-a"), **{"class": pl.lit("AMB")}, type_code=pl.lit("185389009"),
        start=_days(rng, n_encounters, "2010-01-01", "2023-01-01") + "T10:00:00Z", end=pl.lit(None, pl.String),
        source_sha256=pl.lit("0" * 64))
    return {"patients": patients, "encounters": encounters, "labs": _labs(rng, n_labs, patients, encounters)}


def _labs(rng: np.random.Generator, n: int, patients: pl.DataFrame, encounters: pl.DataFrame) -> pl.DataFrame:
    labs = sorted(lab_catalog().values(), key=lambda lab: lab.loinc)
    which = rng.integers(0, len(labs), n)
    lo, hi = np.array([lab.plausible[0] for lab in labs])[which], np.array([lab.plausible[1] for lab in labs])[which]
    value = lo + (hi - lo) * rng.beta(2, 5, n)
    canonical = np.array([lab.canonical for lab in labs])[which]
    other = np.array([(lab.units[1:] or (lab.canonical,))[0] for lab in labs])[which]
    frame = pl.select(observation_id=_ids("O", n, 9)).with_columns(
        patient_id=patients["patient_id"].gather(rng.integers(0, patients.height, n)), site=pl.lit("site-a"),
        encounter_id=encounters["encounter_id"].gather(rng.integers(0, encounters.height, n)),
        loinc=pl.Series(np.array([lab.loinc for lab in labs])[which]), lab=pl.lit("x"), category=pl.lit("laboratory"),
        value=pl.Series(value), unit=pl.Series(canonical),
        source_unit=pl.Series(np.where(rng.random(n) < 0.05, other, canonical)),
        time=_days(rng, n, "2010-01-01", "2023-01-01") + "T12:00:00Z", source_sha256=pl.lit("0" * 64))
    return _break(frame, rng, hi)


def _break(frame: pl.DataFrame, rng: np.random.Generator, hi: np.ndarray) -> pl.DataFrame:
    """About 3% of rows broken, each by one fault (disjoint row sets)."""
    n = frame.height
    kind = np.full(n, -1)
    shares = [0.010, 0.005, 0.003, 0.003, 0.003, 0.003, 0.002, 0.001]
    picked = rng.permutation(n)[: int(sum(shares) * n)]
    edges = np.cumsum([0] + [int(s * n) for s in shares])
    for k in range(len(shares)):
        kind[picked[edges[k]:edges[k + 1]]] = k
    k = pl.Series(kind)
    prev_id = frame["observation_id"].shift(1)
    return frame.with_columns(
        value=pl.when(k == 0).then(pl.Series(hi * 2 + 1)).when(k == 3).then(None).otherwise("value"),
        patient_id=pl.when(k == 1).then(pl.lit("P-unknown")).when(k == 7).then(None).otherwise("patient_id"),
        loinc=pl.when(k == 2).then(pl.lit("9999-9")).otherwise("loinc"),
        unit=pl.when(k == 4).then(pl.lit("mmol/L")).otherwise("unit"),
        time=pl.when(k == 5).then(pl.lit("1900-01-01T00:00:00Z")).otherwise("time"),
        observation_id=pl.when(k == 6).then(prev_id).otherwise("observation_id"))


# ------------------------------------------------------------------------------------------------ plain baseline
def plain_split(t: dict[str, pl.DataFrame]) -> dict[str, tuple[pl.DataFrame, pl.DataFrame]]:
    """The three contracts' rules by hand: one boolean per table, filter and anti-filter."""
    labs_cat = pl.DataFrame([{"loinc": x.loinc, "canon": x.canonical, "lo": x.plausible[0], "hi": x.plausible[1]}
                             for x in lab_catalog().values()])
    p = t["patients"]
    pid = pl.col("patient_id")
    ok_p = (pid.is_not_null() & ~pid.is_duplicated() & pl.col("site").str.contains(SITE)
            & pl.col("sex").is_in(SEXES) & pl.col("birth_date").str.contains(r"^\d{4}(?:-\d{2}(?:-\d{2})?)?$")
            & (pl.col("death_date").is_null() | (pl.col("death_date") >= pl.col("birth_date"))))
    out = {"patients": (p.filter(ok_p), p.filter(~ok_p))}
    life = out["patients"][0].select("patient_id", birth=pl.col("birth_date").str.slice(0, 10),
                                     death=pl.col("death_date").str.slice(0, 10))
    keys = life["patient_id"].implode()

    def within(col: str) -> pl.Expr:
        day = pl.col(col).str.slice(0, 10)
        return (pl.col("birth").is_null() | (day >= pl.col("birth"))) & (pl.col("death").is_null()
                                                                        | (day <= pl.col("death")))

    e = t["encounters"].join(life, on="patient_id", how="left", maintain_order="left")
    eid = pl.col("encounter_id")
    ok_e = (eid.is_not_null() & ~eid.is_duplicated() & pid.is_in(keys)
            & pl.col("start").str.contains(r"^\d{4}-\d{2}-\d{2}") & within("start"))
    out["encounters"] = (e.filter(ok_e).drop("birth", "death"), e.filter(~ok_e).drop("birth", "death"))
    lab = t["labs"].join(life, on="patient_id", how="left", maintain_order="left").join(
        labs_cat, on="loinc", how="left", maintain_order="left")
    oid = pl.col("observation_id")
    ok_l = (oid.is_not_null() & ~oid.is_duplicated() & pid.is_not_null() & pid.is_in(keys)
            & (eid.is_null() | eid.is_in(out["encounters"][0]["encounter_id"].implode()))
            & pl.col("site").str.contains(SITE) & pl.col("canon").is_not_null() & (pl.col("unit") == pl.col("canon"))
            & pl.col("value").is_between(pl.col("lo"), pl.col("hi")) & ~pl.col("value").is_nan()
            & pl.col("time").str.contains(r"^\d{4}-\d{2}-\d{2}") & within("time"))
    lab = lab.with_columns(ok=ok_l.fill_null(False))
    extra = ["birth", "death", "canon", "lo", "hi", "ok"]
    out["labs"] = (lab.filter("ok").drop(extra), lab.filter(~pl.col("ok")).drop(extra))
    return out


# ------------------------------------------------------------------------------------------------ GX alone
def gx_alone(tables: dict[str, pl.DataFrame]) -> tuple[float, float, int]:
    """Seconds of GX runs (Arrow-backed to_pandas included), seconds of to_pandas alone, parts whose counts differ."""
    contracts, runner = load_contracts(), GxRun()
    scope, seconds, convert, disagree = Scope(clean={}, splits=None, split_source=None), 0.0, 0.0, 0
    for name in table_order(contracts, list(tables)):
        checked = check_table(name, tables[name], contracts[name], scope)
        scope.clean[name] = checked.clean
        t0 = time.perf_counter()
        checked.gx_frame.to_pandas(use_pyarrow_extension_array=True)
        convert += time.perf_counter() - t0
        t0 = time.perf_counter()
        outcomes, _ = runner.run(name, contracts[name].version, checked.gx_frame, checked.rules)
        seconds += time.perf_counter() - t0
        disagree += sum(1 for part, n in checked.part_counts.items() if outcomes[part].unexpected != n)
    return seconds, convert, disagree


def _best(fn, repeat: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--labs", type=int, default=1_000_000)
    ap.add_argument("--patients", type=int, default=20_000)
    ap.add_argument("--encounters", type=int, default=50_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    tables = make_tables(args.labs, args.patients, args.encounters, args.seed)
    rows = sum(f.height for f in tables.values())
    ours_s, report = _best(lambda: validate_tables(tables, gx=False), args.repeat)
    plain_s, plain = _best(lambda: plain_split(tables), args.repeat)
    labs = report.tables["labs"]
    print(f"tables: {', '.join(f'{n} {f.height:,}' for n, f in tables.items())} rows ({rows:,} in all)")
    print(f"labs: {labs.rows_passed:,} clean, {labs.rows_quarantined:,} quarantined, warnings {labs.warnings}; "
          f"plain filter: {plain['labs'][0].height:,} clean, {plain['labs'][1].height:,} quarantined")
    print(f"ours  (polars split, {sum(len(c.expectations) for c in load_contracts().values() if c.table in tables)}"
          f" rules): {ours_s:6.2f} s  {rows / ours_s:12,.0f} rows/s")
    print(f"plain (hand-written filter):     {plain_s:6.2f} s  {rows / plain_s:12,.0f} rows/s   "
          f"ours/plain time ratio {ours_s / plain_s:.2f}")
    gx_s, convert_s, disagree = gx_alone(tables)
    print(f"gx    (GX 1.x on pandas):        {gx_s:6.2f} s  {rows / gx_s:12,.0f} rows/s   "
          f"gx/ours time ratio {gx_s / ours_s:.1f}  (to_pandas {convert_s:.2f} s; parts disagreeing: {disagree})")


if __name__ == "__main__":
    main()
