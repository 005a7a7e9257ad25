"""Staged tables: de-identified rows in the curated schemas, one parquet part per extract, waiting for the
validate stage (data_contracts) to publish them as curated data.

    data/staged/<table>/<extract_id>.parquet   rows of one extract (written atomically, sorted: same input, same bytes)
    data/staged/images/shard-*.npz             image tensors (written by tasks/ingest/dicom.py)
    data/staged/cohort.parquet                 one row per patient: site and the modalities present

Reading a table concatenates its parts and drops what a later export withdrew (the `deletions` table).
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from data_contracts import table_schemas
from tasks.atomic import write_with

ID_COLUMN = {"patients": "patient_id", "encounters": "encounter_id", "labs": "observation_id",
             "conditions": "condition_id", "notes": "note_id", "imaging": "series_id", "omics": "sample_id",
             "events": "event_id", "objects": "object_id"}
TYPED_IDS = {"events"}  # ids written `<ResourceType>/<pseudonymous id>` (one table holds several types)
FLOAT32_TABLES = {"omics"}
MODALITY_TABLES = {"imaging": "imaging", "labs": "labs", "notes": "notes", "omics": "omics"}


def schema_of(table: str) -> dict[str, pl.DataType] | None:
    """The declared schema of a table as polars dtypes (tables.yaml names them: String, Float64, ...)."""
    spec = table_schemas().get(table)
    return {col: getattr(pl, dtype) for col, dtype in spec.items()} if spec else None


def _frame(table: str, rows: list[dict]) -> pl.DataFrame:
    schema = schema_of(table)
    if schema:
        frame = pl.DataFrame([{c: r.get(c) for c in schema} for r in rows], schema=schema, orient="row")
    else:
        frame = pl.DataFrame(rows, infer_schema_length=None)
        if table in FLOAT32_TABLES:  # model inputs: float32 is the precision the encoders use
            frame = frame.with_columns(pl.col(pl.Float64).cast(pl.Float32))
    key = ID_COLUMN.get(table)
    return frame.sort(key) if key in frame.columns else frame


def write_part(staged: Path, table: str, extract_id: str, rows: list[dict]) -> Path | None:
    """Write one extract's rows of `table`; nothing when there are none."""
    if not rows:
        return None
    path = staged / table / f"{extract_id}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_parquet(_frame(table, rows), path)
    return path


def _atomic_parquet(frame: pl.DataFrame, path: Path) -> None:
    """Write under a hidden temporary name, then rename: a kill leaves no torn part, and no stray file that a
    table's `*.parquet` glob, DVC's hash of data/staged or the ledger's tree hash would pick up (names starting
    with '.' are skipped by the tree hash; the rerun writes the same name and replaces it)."""
    write_with(path, frame.write_parquet)


def read_table(staged: Path, table: str) -> pl.DataFrame:
    """All parts of a staged table, minus withdrawn resources; an empty frame with the schema if none."""
    parts = sorted((staged / table).glob("*.parquet"))
    schema = schema_of(table)
    if not parts:
        return pl.DataFrame(schema=schema) if schema else pl.DataFrame()
    frame = pl.concat([pl.read_parquet(p) for p in parts], how="diagonal_relaxed")
    key = ID_COLUMN.get(table)
    deletions = sorted((staged / "deletions").glob("*.parquet"))
    if key and deletions:
        gone = pl.concat([pl.read_parquet(p) for p in deletions])
        gone = gone.select(pl.concat_str("resource_type", pl.lit("/"), "resource_id") if table in TYPED_IDS
                           else pl.col("resource_id")).to_series()
        frame = frame.filter(~pl.col(key).is_in(gone.implode()))
    return frame


def build_cohort(staged: Path) -> pl.DataFrame:
    """One row per patient: site and which modalities the staged data has for them; written to cohort.parquet."""
    patients = read_table(staged, "patients").select("patient_id", "site").unique("patient_id")
    for modality, table in MODALITY_TABLES.items():
        frame = read_table(staged, table)
        if table == "notes" and frame.height:
            frame = frame.filter(pl.col("kind") == "clinical_note")
        have = frame["patient_id"].unique() if "patient_id" in frame.columns else pl.Series([], dtype=pl.String)
        patients = patients.with_columns(pl.col("patient_id").is_in(have.implode()).alias(f"has_{modality}"))
    cohort = patients.sort("patient_id")
    staged.mkdir(parents=True, exist_ok=True)
    _atomic_parquet(cohort, staged / "cohort.parquet")
    return cohort
