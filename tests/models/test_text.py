"""Tokenizer training and the notes encoder save and load from a local folder, with the hub switched off."""

from __future__ import annotations

import torch

from models.encoders.text import TextEncoder, TextEncoderConfig, load_tokenizer, train_tokenizer

CORPUS = ["Patient reports cough and fever for three days.", "Denies orthopnea; mild leg swelling noted.",
          "Pleuritic chest pain, no hemoptysis. Dyspnea on exertion."] * 10


def test_tokenizer_and_encoder_round_trip_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    tok = train_tokenizer(CORPUS, vocab_size=200, max_length=32)
    assert tok.pad_token_id == 0 and len(tok) <= 200
    ids = tok(["cough and fever", "no hemoptysis, dyspnea"], padding=True, return_tensors="pt")["input_ids"]
    assert ids[0, 0] == tok.cls_token_id and (ids[0] == 0).any()  # [CLS] first, shorter note padded

    tok.save_pretrained(tmp_path / "tokenizer")
    again = load_tokenizer(tmp_path / "tokenizer")
    assert torch.equal(again(["cough and fever", "no hemoptysis, dyspnea"], padding=True,
                             return_tensors="pt")["input_ids"], ids)

    torch.manual_seed(0)
    config = TextEncoderConfig(vocab_size=len(tok), max_length=32)
    enc = TextEncoder(config).eval()
    tokens, mask = enc.encode(ids)
    assert tokens.shape == (2, ids.shape[1], config.width) and torch.equal(mask, ids != 0)
    enc.save(tmp_path / "notes")
    loaded = TextEncoder.load(tmp_path / "notes", config).eval()
    assert torch.allclose(loaded.encode(ids)[0], tokens, atol=1e-6)


def test_tokenizer_training_is_deterministic():
    """The same notes give the same vocabulary every time, so two nodes of a multi-node run (each training its own)
    and a resumed run tokenize alike; tokenizers' trainer alone gave 30 vocabularies in 30 trainings of a corpus
    like this one (ties between merges broken in hash-map order). The `##` pieces stay ordinary vocabulary."""
    import random

    rng = random.Random(0)
    words = ["pneumonia", "effusion", "cardiomegaly", "bilateral", "opacity", "consolidation", "edema", "embolism",
             "pulmonary", "dyspnea", "chest", "pain", "fever", "cough", "hypertension", "troponin", "tachycardia"]
    notes = [" ".join(rng.choice(words) + rng.choice(["", "s", "ed", "ing", "al"]) for _ in range(12)) + "."
             for _ in range(400)]
    vocabs = {tuple(sorted(train_tokenizer(notes, vocab_size=200).get_vocab().items())) for _ in range(10)}
    assert len(vocabs) == 1
    tok = train_tokenizer(notes, vocab_size=200)
    assert tok.pad_token_id == 0 and "##s" in tok.get_vocab() and "##s" not in tok.all_special_tokens
    tokens = tok.convert_ids_to_tokens(tok("Coughing. Edemas")["input_ids"])
    assert tokens[0] == "[CLS]" and tokens[-1] == "[SEP]" and "[UNK]" not in tokens
    assert tok.decode(tok("coughing edemas")["input_ids"], skip_special_tokens=True) == "coughing edemas"
