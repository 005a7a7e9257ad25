"""Each encoder alone: encode() shapes and masks, padding, missing values, lock()."""

from __future__ import annotations

import pytest
import torch

from models.factory import model_config
from models.model import ENCODERS
from tests.models.batch import B, make_batch

# modality -> tokens per sample in the tiny config
TOKENS = {"image_3d": 2 * 3 * 3, "image_2d": 4 * 4, "labs": 1 + 7, "notes": 2, "omics": 2}  # cnn grids, codes


def encoder(m: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return ENCODERS[m](getattr(model_config("tiny"), m)).eval()


@pytest.mark.parametrize("modality", list(TOKENS))
def test_encode_shapes(modality):
    enc = encoder(modality)
    tokens, mask = enc.encode(make_batch()[modality])
    assert tokens.shape == (B, TOKENS[modality], enc.config.width)
    assert mask.shape == (B, TOKENS[modality]) and mask.dtype == torch.bool
    assert torch.isfinite(tokens).all()


@pytest.mark.parametrize("modality", list(TOKENS))
def test_lock_freezes(modality):
    enc = encoder(modality)
    enc.train()
    enc.lock()
    assert not any(p.requires_grad for p in enc.parameters()) and not enc.training


def test_labs_padding_rows_are_masked_and_ignored():
    enc, labs = encoder("labs"), make_batch()["labs"]
    labs[0, :4, 0] = torch.tensor([0.0, 0.0, 2.0, 5.0])  # patient 0: codes 0 (twice), 2, 5, then 2 padding rows
    tokens, mask = enc.encode(labs)
    assert mask[0].tolist() == [True, True, False, True, False, False, True, False]  # summary, one per code seen
    changed = labs.clone()
    changed[0, 4:, 1:] = 1e4  # padding values differ: nothing changes
    tokens2, _ = enc.encode(changed)
    assert torch.allclose(tokens[0], tokens2[0], atol=1e-6)
    _, empty = enc.encode(torch.full((1, 3, 3), -1.0))
    assert not empty.any()


def test_notes_padding_is_masked():
    enc, notes = encoder("notes"), make_batch()["notes"]
    tokens, mask = enc.encode(notes)
    assert mask.all()
    changed = notes.clone()
    changed[1, 8:] = 0  # already [PAD]: padding after the words changes nothing
    changed[2, 10:] = 0
    assert torch.allclose(enc.encode(changed)[0][1], tokens[1], atol=1e-6)
    assert not torch.allclose(enc.encode(changed)[0][2], tokens[2], atol=1e-6)
    assert not enc.encode(torch.zeros(1, 12, dtype=torch.long))[1].any()  # an empty note has no valid token
