"""A curated split held in memory as one padded batch, and deterministic batches drawn from it.

Why in memory: a cohort of thousands of patients at the model_io sizes is a few hundred MB at most, and training on
CPU spends its time in the model, not in the loader. Why `batch_at(step)`: the batch of a step is a function of
(seed, step) alone, so a resumed run or any DDP rank draws exactly the batches the uninterrupted single process would
(tasks.training.loop's resume contract) without a sampler state to checkpoint.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tasks.training.curated_dataset import MODALITIES, CuratedDataset, DatasetConfig, collate

META = ("patient_id", "site", "sex", "age_band", "split", "notes_text")
RISK_HORIZON_DAYS = 365.0  # the binary risk task: death within a year of the index discharge


@dataclass
class SplitData:
    """Tensors (B, ...) for every model input and target, plus per-patient metadata lists."""

    tensors: dict[str, torch.Tensor]
    meta: dict[str, list] = field(default_factory=dict)
    lab_codes: tuple[str, ...] | None = None  # the labs vocabulary the `labs` indices refer to (labs_vocab.py)

    def __len__(self) -> int:
        return int(self.tensors["mask"].shape[0])

    def take(self, index: np.ndarray | list[int] | torch.Tensor) -> SplitData:
        idx = torch.as_tensor(np.asarray(index, dtype=np.int64))
        return SplitData({k: v[idx] for k, v in self.tensors.items()},
                         {k: [vals[i] for i in idx.tolist()] for k, vals in self.meta.items()}, self.lab_codes)

    def without(self, modality: str) -> SplitData:
        """The same patients with one modality removed (its mask column cleared): the test-time ablation."""
        tensors = dict(self.tensors)
        mask = tensors["mask"].clone()
        mask[:, MODALITIES.index(modality)] = False
        tensors["mask"] = mask
        return SplitData(tensors, self.meta, self.lab_codes)

    def only(self, modality: str) -> SplitData:
        """The same patients seeing one modality only (a single-modality model's view)."""
        tensors = dict(self.tensors)
        keep = torch.tensor([m == modality for m in MODALITIES], dtype=torch.bool)
        tensors["mask"] = tensors["mask"] & keep
        return SplitData(tensors, self.meta, self.lab_codes)

    def batches(self, batch_size: int) -> Iterator[dict[str, torch.Tensor]]:
        """In order, for inference."""
        for start in range(0, len(self), batch_size):
            yield {k: v[start:start + batch_size] for k, v in self.tensors.items()}

    def counts(self) -> dict:
        """Patients by site, sex and age band, and how many have each modality: the model card's training data."""
        out: dict[str, Any] = {"patients": len(self)}
        for key in ("site", "sex", "age_band"):
            values = [v if v is not None else "unknown" for v in self.meta.get(key, [])]
            out[key] = {str(v): values.count(v) for v in sorted(set(values), key=str)}
        mask = self.tensors["mask"]
        out["modality"] = {m: int(mask[:, i].sum()) for i, m in enumerate(MODALITIES)}
        return out


def risk_labels(time: torch.Tensor, event: torch.Tensor, horizon: float = RISK_HORIZON_DAYS) -> torch.Tensor:
    """1 = died within the horizon, 0 = followed past it alive or dead later, NaN = censored before it (unknown)."""
    label = torch.full_like(time, float("nan"))
    label[event & (time <= horizon)] = 1.0
    label[time > horizon] = 0.0
    return label


def load_split(curated: Path, split: str | None, tokenizer: Any, cfg: DatasetConfig | None = None) -> SplitData:
    """Every patient of `split` as one padded batch (modalities no patient has are left out; mask says so)."""
    dataset = CuratedDataset(curated, split=split, text_tokenizer=tokenizer, cfg=cfg)
    items = [dataset[i] for i in range(len(dataset))]
    if not items:
        raise ValueError(f"{curated}: no patients in split {split!r}")
    batch = collate(items, tokenizer, dataset.cfg.max_text_length)
    tensors = {k: v for k, v in batch.items() if isinstance(v, torch.Tensor)}
    tensors["risk_label"] = risk_labels(tensors["time"], tensors["event"])
    return SplitData(tensors, {k: batch[k] for k in META}, dataset.labs_vocab.codes)


def label_fraction(data: SplitData, fraction: float, seed: int, target: str = "label") -> np.ndarray:
    """Indices of a stratified `fraction` of the labelled patients (at least one per class present)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"label fraction must be in (0, 1], got {fraction}")
    y = data.tensors[target].numpy()
    rng = np.random.default_rng(seed)
    known = ~np.isnan(y) if y.dtype.kind == "f" else y >= 0
    chosen = []
    for cls in np.unique(y[known]):
        members = np.flatnonzero(known & (y == cls))
        chosen.append(rng.permutation(members)[: max(1, math.ceil(fraction * len(members)))])
    return np.sort(np.concatenate(chosen)) if chosen else np.arange(0)


@dataclass
class EpochBatches:
    """`batches(step)`: the step's global batch from a permutation of the data per epoch, seeded by (seed, epoch)."""

    data: SplitData
    batch_size: int
    seed: int = 0

    def __call__(self, step: int) -> dict[str, torch.Tensor]:
        n = len(self.data)
        size = min(self.batch_size, n)
        per_epoch = max(1, n // size)
        epoch, pos = divmod(step, per_epoch)
        order = np.random.default_rng([self.seed, epoch]).permutation(n)
        idx = torch.as_tensor(order[pos * size:(pos + 1) * size])
        return {k: v[idx] for k, v in self.data.tensors.items()}
