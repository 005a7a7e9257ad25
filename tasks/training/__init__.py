"""Training data: curated tables to model batches (data_contracts/model_io.yaml)."""

from __future__ import annotations

from tasks.training.curated_dataset import CuratedDataset, DatasetConfig, collate, model_inputs

__all__ = ["CuratedDataset", "DatasetConfig", "collate", "model_inputs"]
