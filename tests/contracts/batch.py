"""A small batch that keeps every contract: five patients, their encounters, notes and conditions, one lab per
catalogue code each, imaging series of each family, omics samples and panel, a cohort with splits; and a helper to
break it one fault at a time."""

from __future__ import annotations

from datetime import date

import polars as pl

from data_contracts import lab_catalog
from tasks.ingest.staged import schema_of

PATIENTS = [f"P{i}" for i in range(5)]
LAB_TIME = "2021-03-01T12:00:00Z"


def _patients() -> pl.DataFrame:
    rows = [{"patient_id": p, "site": "site-a", "sex": ["female", "male"][i % 2], "birth_date": f"196{i}-01-15",
             "deceased": i == 4, "death_date": "2022-06-01" if i == 4 else None, "source_sha256": "a" * 64}
            for i, p in enumerate(PATIENTS)]
    return pl.DataFrame(rows, schema=schema_of("patients"))


def _encounters() -> pl.DataFrame:
    rows = [{"encounter_id": f"E{i}", "patient_id": p, "site": "site-a", "class": "AMB", "type_code": "185389009",
             "start": "2021-03-01T10:00:00Z", "end": "2021-03-01T10:30:00Z", "source_sha256": "b" * 64}
            for i, p in enumerate(PATIENTS)]
    return pl.DataFrame(rows, schema=schema_of("encounters"))


def _labs() -> pl.DataFrame:
    rows = []
    for i, p in enumerate(PATIENTS):
        for lab in sorted((x for x in lab_catalog().values() if x.model_input), key=lambda x: x.loinc):
            lo, hi = lab.plausible
            rows.append({"observation_id": f"O{i}-{lab.key}", "patient_id": p, "site": "site-a",
                         "encounter_id": f"E{i}", "loinc": lab.loinc, "lab": lab.key, "category": lab.category,
                         "value_type": "quantity", "value": lo + (hi - lo) / 3, "unit": lab.canonical,
                         "source_unit": lab.canonical,
                         "time": LAB_TIME, "source_sha256": "c" * 64})
    return pl.DataFrame(rows, schema=schema_of("labs"))


def _imaging() -> pl.DataFrame:
    def row(i: int, modality: str, shape: list[int], spacing: list[float], lo: float, hi: float) -> dict:
        return {"patient_id": PATIENTS[i % 5], "site": "site-a", "study_id": f"ST{i}", "series_id": f"S{i}",
                "modality": modality, "n_instances": shape[0] if modality in ("DX", "CR") else 16, "shape": shape,
                "spacing": spacing, "dtype": "float32", "value_min": lo, "value_max": hi, "value_mean": (lo + hi) / 2,
                "shard": "data/staged/images/shard-0.npz", "study_date": "2021-03-01"}

    rows = [row(0, "CT", [1, 16, 48, 48], [10.0, 6.0, 6.0], -1024.0, 1500.0),
            row(1, "CT", [1, 16, 48, 48], [10.0, 6.0, 6.0], -1024.0, 2000.0),
            row(2, "MR", [1, 16, 48, 48], [10.0, 6.0, 6.0], 0.0, 9000.0),
            row(3, "DX", [1, 64, 64], [2.1, 2.1], 100.0, 2500.0),
            row(4, "CR", [2, 64, 64], [2.25, 2.25], 120.0, 2200.0)]
    return pl.DataFrame(rows, schema={"patient_id": pl.String, "site": pl.String, "study_id": pl.String,
                                      "series_id": pl.String, "modality": pl.String, "n_instances": pl.Int64,
                                      "shape": pl.List(pl.Int64), "spacing": pl.List(pl.Float64), "dtype": pl.String,
                                      "value_min": pl.Float64, "value_max": pl.Float64, "value_mean": pl.Float64,
                                      "shard": pl.String, "study_date": pl.String})


def _notes_and_conditions() -> tuple[pl.DataFrame, pl.DataFrame]:
    notes = [{"note_id": f"N{i}", "patient_id": p, "site": "site-a", "encounter_id": f"E{i}", "kind": "clinical_note",
              "loinc": "34117-2", "time": "2021-03-01T11:00:00Z", "text": "Patient seen.", "source_sha256": "d" * 64}
             for i, p in enumerate(PATIENTS)]
    conditions = [{"condition_id": f"C{i}", "patient_id": p, "site": "site-a", "encounter_id": f"E{i}",
                   "system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "I50.9", "display": "Heart failure",
                   "category": "encounter-diagnosis", "recorded": "2021-03-01T11:00:00Z", "source_sha256": "e" * 64}
                  for i, p in enumerate(PATIENTS)]
    return pl.DataFrame(notes, schema=schema_of("notes")), pl.DataFrame(conditions, schema=schema_of("conditions"))


def _omics() -> tuple[pl.DataFrame, pl.DataFrame]:
    genes = ["GENE0000", "GENE0001", "GENE0002"]
    omics = pl.DataFrame({"patient_id": PATIENTS, "site": ["site-a"] * 5, "sample_id": [f"X{i}" for i in range(5)],
                          "collection_date": [date(2021, 3, 1)] * 5, "specimen": ["whole blood"] * 5,
                          "assay": ["RNA-seq (log2 TPM)"] * 5,
                          **{g: pl.Series([7.5, 8.0, None, 6.25, 9.0], dtype=pl.Float32) for g in genes}})
    features = pl.DataFrame({"feature": genes, "index": [0, 1, 2], "dtype": ["float32"] * 3})
    return omics, features


def _cohort() -> pl.DataFrame:
    return pl.DataFrame({"patient_id": PATIENTS, "site": ["site-a"] * 5, "has_imaging": [True] * 5,
                         "has_labs": [True] * 5, "has_notes": [False] * 5, "has_omics": [False] * 5,
                         "split": ["train", "train", "train", "val", "test"]})


def make_batch() -> dict[str, pl.DataFrame]:
    notes, conditions = _notes_and_conditions()
    omics, features = _omics()
    return {"patients": _patients(), "encounters": _encounters(), "labs": _labs(), "imaging": _imaging(),
            "notes": notes, "conditions": conditions, "omics": omics, "omics_features": features, "cohort": _cohort()}


def set_rows(frame: pl.DataFrame, key: str, ids: list[str], **values) -> pl.DataFrame:
    """`frame` with columns set to `values` on the rows whose `key` is in `ids` (dtypes kept)."""
    hit = pl.col(key).is_in(ids)
    return frame.with_columns(**{c: pl.when(hit).then(pl.lit(v, dtype=frame.schema[c])).otherwise(pl.col(c))
                                 for c, v in values.items()})
