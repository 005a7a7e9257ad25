"""A tiny random batch that follows data_contracts/model_io.yaml, for the model tests."""

from __future__ import annotations

import torch

from models.model import MODALITIES

B = 4


def make_batch(modalities=MODALITIES, b: int = B, seed: int = 0, notes_tokens: bool = False,
               demographics: bool = True) -> dict:
    """Inputs for `modalities` only; `mask` (b, 5) marks exactly those as present (padding rows in labs/notes).
    Notes are concept flags (b, 14), as the tiny config reads them, or token ids with `notes_tokens`; demographics
    (age, sex) ride along unless `demographics` is False (every curated patient has them)."""
    g = torch.Generator().manual_seed(seed)
    labs = torch.stack([torch.randint(0, 7, (b, 6), generator=g).float(),
                        torch.rand(b, 6, generator=g) * 100, -torch.rand(b, 6, generator=g) * 30], -1)  # (b, 6, 3)
    labs[0, 4:] = torch.tensor([-1.0, 0.0, 0.0])  # patient 0 has four lab rows, then padding
    if notes_tokens:
        notes = torch.randint(5, 512, (b, 12), generator=g)
        notes[1, 8:] = 0  # [PAD]
    else:
        notes = (torch.rand(b, 14, generator=g) < 0.3).float()
    full = {"image_3d": torch.rand(b, 1, 16, 48, 48, generator=g) * 2000 - 1000,
            "image_2d": torch.rand(b, 1, 64, 64, generator=g) * 4000,
            "labs": labs, "notes": notes,
            "omics": torch.randn(b, 200, generator=g) + 8.0}
    batch = {m: full[m] for m in modalities}
    batch["mask"] = torch.tensor([[m in modalities for m in MODALITIES]] * b)
    if demographics:
        batch["demographics"] = torch.stack([torch.rand(b, generator=g) * 60 + 30,
                                             (torch.rand(b, generator=g) < 0.5).float()], -1)
    return batch
