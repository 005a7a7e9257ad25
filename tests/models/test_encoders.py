"""Each encoder alone: encode() shapes and masks, padding, missing values, lock()."""

from __future__ import annotations

import pytest
import torch

from models.factory import model_config
from models.model import ENCODERS
from tests.models.batch import B, make_batch

# modality -> tokens per sample in the tiny config
TOKENS = {"image_3d": 2 * 3 * 3, "image_2d": 4 * 4, "labs": 1 + 6, "notes": 12, "omics": 4}


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
    tokens, mask = enc.encode(labs)
    assert mask[0].tolist() == [True, True, True, True, True, False, False]  # summary, 4 rows, 2 padding
    changed = labs.clone()
    changed[0, 4:, 1:] = 1e4  # padding values differ: nothing valid changes
    tokens2, _ = enc.encode(changed)
    assert torch.allclose(tokens[0, :5], tokens2[0, :5], atol=1e-6)
    _, empty = enc.encode(torch.full((1, 3, 3), -1.0))
    assert not empty.any()


def test_notes_padding_is_masked():
    _, mask = encoder("notes").encode(make_batch()["notes"])
    assert mask[1].sum() == 8 and mask[0].all()


def test_omics_nan_genes_are_not_zeros():
    enc, x = encoder("omics"), make_batch()["omics"]
    x[0, :10] = float("nan")
    zeros = x.clone()
    zeros[0, :10] = 0.0
    tokens, mask = enc.encode(x)
    assert torch.isfinite(tokens).all() and mask[0].all()
    assert not torch.allclose(tokens[0], enc.encode(zeros)[0][0])  # NaN is "not measured", not 0
    x[1] = float("nan")
    assert not enc.encode(x)[1][1].any()  # no gene measured: no valid token


def test_image_normalisation_is_first():
    enc, x = encoder("image_2d"), make_batch()["image_2d"]
    assert torch.allclose(enc.encode(x)[0], enc.encode(x * 3 + 100)[0], atol=1e-4)  # intensity units do not matter
