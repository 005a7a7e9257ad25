"""Contract-shaped random batches that depend only on (seed, step), so a resumed run sees the same data.

Shapes follow data_contracts/model_io.yaml; `label` (B,) int64 is the class target of the supervised objective.
Used by tests and by `python -m tasks.training.ddp` when no real dataset is wired in (open_clip's synthetic mode).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from models.model import MODALITIES


@dataclass
class SyntheticBatches:
    """`batches(step)` -> the global batch for that step; `fixed=True` returns the step-0 batch every time."""

    batch_size: int = 8
    seed: int = 0
    n_classes: int = 4
    labs_len: int = 6
    notes_len: int = 12
    n_omics: int = 200
    vocab_size: int = 512
    concepts: int | None = 14  # notes as concept flags (B, concepts), as the tiny config reads them; None: token ids
    fixed: bool = False

    def __call__(self, step: int) -> dict[str, torch.Tensor]:
        # a private generator per step: no dependence on global RNG state or on which steps were drawn before
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + (0 if self.fixed else step))
        b = self.batch_size
        labs = torch.stack([torch.randint(0, 7, (b, self.labs_len), generator=g).float(),
                            torch.rand(b, self.labs_len, generator=g) * 100,
                            -torch.rand(b, self.labs_len, generator=g) * 30], -1)  # (B, T, 3)
        return {
            "image_3d": torch.rand(b, 1, 16, 48, 48, generator=g) * 2000 - 1000,  # HU
            "image_2d": torch.rand(b, 1, 64, 64, generator=g) * 4000,
            "labs": labs,
            "notes": (torch.randint(5, self.vocab_size, (b, self.notes_len), generator=g) if self.concepts is None
                      else (torch.rand(b, self.concepts, generator=g) < 0.3).float()),
            "omics": torch.randn(b, self.n_omics, generator=g) + 8.0,
            "demographics": torch.stack([torch.rand(b, generator=g) * 60 + 30,
                                         (torch.rand(b, generator=g) < 0.5).float()], -1),
            "mask": torch.ones(b, len(MODALITIES), dtype=torch.bool),
            "label": torch.randint(0, self.n_classes, (b,), generator=g),
            # report-finding levels (image pre-training targets): heart/arteries and lungs, 4 levels each
            "findings_image_2d": torch.randint(0, 4, (b, 2), generator=g),
            "findings_image_3d": torch.randint(0, 4, (b, 2), generator=g),
        }
