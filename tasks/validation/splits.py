"""Train/validation/test splits by patient, never by row: a patient's rows all land in one split.

The split is a pure function of the patient pseudonym (a keyed hash is already uniform), so adding patients never
moves existing ones between splits and every table agrees without a lookup service.
"""

from __future__ import annotations

import hashlib

import polars as pl


def split_of(patient_id: str, fractions: dict[str, float]) -> str:
    """Deterministic split for one patient; `fractions` in order, summing to 1 (e.g. train 0.7, val 0.15, test 0.15)."""
    u = int(hashlib.sha256(f"split:{patient_id}".encode()).hexdigest()[:12], 16) / float(16**12)
    edge = 0.0
    for name, fraction in fractions.items():
        edge += fraction
        if u < edge:
            return name
    return list(fractions)[-1]


def assign_splits(cohort: pl.DataFrame, fractions: dict[str, float]) -> pl.DataFrame:
    total = sum(fractions.values())
    if abs(total - 1.0) > 1e-6 or any(f < 0 for f in fractions.values()):
        raise ValueError(f"validate.splits must be non-negative fractions summing to 1, not {fractions}")
    return cohort.with_columns(pl.col("patient_id").map_elements(lambda p: split_of(p, fractions),
                                                                 return_dtype=pl.String).alias("split"))
