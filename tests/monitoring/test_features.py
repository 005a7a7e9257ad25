"""Acquisition features: the scanner and intensity of the series the model reads, per patient and image kind."""

from __future__ import annotations

import pandas as pd
import polars as pl

from tasks.monitoring.features import ACQUISITION, acquisition


def _series(patient, modality, model, mean, date, shard="s0"):
    return {"patient_id": patient, "modality": modality, "manufacturer": "ACME", "model": model,
            "value_mean": mean, "study_date": date, "shard": shard}


def test_first_series_by_study_date_of_each_kind_and_missing_kinds_are_null(tmp_path):
    pl.DataFrame([
        _series("P1", "CR", "X2", 900.0, "2024-02-01"),
        _series("P1", "DX", "X1", 800.0, "2024-01-01"),  # earlier: this is the radiograph the model reads
        _series("P1", "CT", "C1", -600.0, "2024-03-01"),
        _series("P2", "CR", "X1", 850.0, "2024-01-05"),
        _series("P2", "CT", "C9", -500.0, "2023-12-01", shard=None),  # no pixels stored: the model never reads it
    ]).write_parquet(tmp_path / "imaging.parquet")
    frame = acquisition(tmp_path)
    assert list(frame.columns) == ACQUISITION
    assert frame.loc["P1"].to_dict() == {"scanner_2d": "ACME X1", "intensity_2d": 800.0,
                                         "scanner_3d": "ACME C1", "intensity_3d": -600.0}
    assert frame.loc["P2", "scanner_2d"] == "ACME X1"
    assert pd.isna(frame.loc["P2", "scanner_3d"]) and pd.isna(frame.loc["P2", "intensity_3d"])


def test_a_curated_folder_without_imaging_gives_no_rows(tmp_path):
    assert acquisition(tmp_path).empty
