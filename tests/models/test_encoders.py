"""Each encoder alone: encode() shapes and masks, padding, missing values, lock()."""

from __future__ import annotations

import pytest
import torch

from models.encoders.omics import OmicsEncoder, OmicsEncoderConfig
from models.encoders.text import TextEncoder, TextEncoderConfig
from models.factory import model_config
from models.model import _encoder
from tests.models.batch import B, make_batch

# input -> tokens per sample in the tiny config: cnn grids, a summary + one per lab code, one token otherwise
TOKENS = {"image_3d": 2 * 3 * 3, "image_2d": 4 * 4, "labs": 1 + 7, "notes": 1, "omics": 1, "demographics": 1}


def encoder(m: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return _encoder(m, model_config("tiny").encoder_config(m)).eval()


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
    torch.manual_seed(0)
    enc = TextEncoder(TextEncoderConfig(arch="gru", max_length=320)).eval()  # the token reader (fusion configs)
    notes = make_batch(notes_tokens=True)["notes"]
    tokens, mask = enc.encode(notes)
    assert mask.all()
    changed = notes.clone()
    changed[1, 8:] = 0  # already [PAD]: padding after the words changes nothing
    changed[2, 10:] = 0
    assert torch.allclose(enc.encode(changed)[0][1], tokens[1], atol=1e-6)
    assert not torch.allclose(enc.encode(changed)[0][2], tokens[2], atol=1e-6)
    assert not enc.encode(torch.zeros(1, 12, dtype=torch.long))[1].any()  # an empty note has no valid token


def test_lowrank_omics_basis_recovers_modules_and_masks_missing_profiles():
    """The PCA basis fitted without labels finds a planted gene module: the first score tracks the module."""
    g = torch.Generator().manual_seed(0)
    module = torch.randn(300, 1, generator=g)
    genes = torch.randn(300, 60, generator=g) * 0.5 + 8.0
    genes[:, :15] += module * 1.5  # one module of 15 co-regulated genes
    enc = OmicsEncoder(OmicsEncoderConfig(n_features=60, width=8, arch="lowrank", rank=4))
    fitted = enc.fit_basis(genes)
    assert fitted["profiles"] == 300 and 0 < fitted["explained_variance_ratio"] < 1
    z, _ = enc.standardise(genes)
    first = (z - enc.basis_mean) @ enc.basis[0]
    assert abs(torch.corrcoef(torch.stack([first, module[:, 0]]))[0, 1]) > 0.9
    genes[1] = float("nan")  # no gene measured: no valid token
    tokens, mask = enc.encode(genes[:3])
    assert tokens.shape == (3, 1, 8) and mask[:, 0].tolist() == [True, False, True]
