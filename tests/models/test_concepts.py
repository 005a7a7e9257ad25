"""The clinical-concept reader of the notes modality (NegEx-style lexicon) and its one-token encoder."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from models.encoders.concepts import (
    DEFAULT_LEXICON,
    LEXICON_FILE,
    ConceptEncoder,
    ConceptEncoderConfig,
    ConceptReader,
    is_concept_dir,
    parse_lexicon,
)
from tasks.synth.model import SYMPTOMS


@pytest.fixture(scope="module")
def reader() -> ConceptReader:
    return ConceptReader.from_lexicon()


# (text, the concepts it mentions: "present" | "negated"; every other concept reads "absent")
TEST_CASES = [
    # soap
    ("HPI: 64-year-old man presenting with productive cough and dyspnea on exertion for 3 days. "
     "Denies fever, leg swelling or hemoptysis.",
     {"cough": "present", "dyspnea": "present", "fever": "negated", "leg_swelling": "negated",
      "hemoptysis": "negated"}),
    ("Chief complaint: sharp chest pain worse on deep inspiration.\nHPI: ... No fever or orthopnea.",
     {"pleuritic_chest_pain": "present", "fever": "negated", "orthopnea": "negated"}),
    ("Negative for cough, shortness of breath or lower extremity edema.",
     {"cough": "negated", "dyspnea": "negated", "leg_swelling": "negated"}),
    # narrative
    ("She reports two-pillow orthopnea and swelling of both legs over the past 2 days. She denies cough.",
     {"orthopnea": "present", "leg_swelling": "present", "cough": "negated"}),
    ("He reports subjective fevers, coughing up blood and chest pain on deep breathing over the past 1 day.",
     {"fever": "present", "hemoptysis": "present", "pleuritic_chest_pain": "present"}),
    # terse
    ("71M pt c/o SOB, pleuritic CP, fevers x3d. neg for cough, LE edema.",
     {"dyspnea": "present", "pleuritic_chest_pain": "present", "fever": "present", "cough": "negated",
      "leg_swelling": "negated"}),
    ("58F pt c/o DOE, productive cough x2d. denies orthopnea, hemoptysis.",
     {"dyspnea": "present", "cough": "present", "orthopnea": "negated", "hemoptysis": "negated"}),
    # a negation ends with its sentence (".", ";", a line break) or at a scope breaker
    ("Denies fever. Cough for 2 days.", {"fever": "negated", "cough": "present"}),
    ("No cough; hemoptysis this morning", {"cough": "negated", "hemoptysis": "present"}),
    ("Denies fever\nOrthopnea since Monday", {"fever": "negated", "orthopnea": "present"}),
    ("Denies fever but reports cough.", {"fever": "negated", "cough": "present"}),
    ("No orthopnea, however has ankle swelling.", {"orthopnea": "negated", "leg_swelling": "present"}),
    # real-world synonyms and abbreviations; capitalised abbreviations match only as written
    ("BLE edema, PND, pleurisy, pyrexia.",
     {"leg_swelling": "present", "orthopnea": "present", "pleuritic_chest_pain": "present", "fever": "present"}),
    ("Seen with Jane Doe and Mr Lee; patient was sob and upset. RLE edema.", {"leg_swelling": "present"}),
    ("Afebrile. Breathless on stairs.", {"fever": "negated", "dyspnea": "present"}),
    # longest phrase wins: these are one concept each
    ("coughing up blood", {"hemoptysis": "present"}),
    ("paroxysmal nocturnal dyspnea", {"orthopnea": "present"}),
    # post-negation cues and pseudo-negations
    ("Fever: absent. Hemoptysis was ruled out.", {"fever": "negated", "hemoptysis": "negated"}),
    ("No change in cough.", {"cough": "present"}),
    # word boundaries: no match inside other words, and "NOK"/"nosocomial" are not "no"
    ("NOK: wife. Nosocomial risk. Antitussives. Feverfew tea. Coughdrop brand.", {}),
]


@pytest.mark.parametrize(("text", "mentioned"), TEST_CASES)
def test_reads_concepts_and_negations(reader, text, mentioned):
    assert reader.read(text) == {c: mentioned.get(c, "absent") for c in SYMPTOMS}


def test_lexicon_is_valid_yaml_read_alike_and_versioned():
    text = DEFAULT_LEXICON.read_text()
    lex = parse_lexicon(text)
    assert lex["version"] == "1.0.0" and tuple(lex["concepts"]) == SYMPTOMS
    assert {"no", "denies", "negative for", "neg for", "without"} <= set(lex["negation"]["pre"])
    assert {"but", "however"} <= set(lex["negation"]["terminators"])


@pytest.mark.parametrize(("bad", "message"), [
    ('version: "1"\nconcepts:\n  cough:\n    synonyms: [cough]\nnegation:\n  pre: [no]\n', "no words"),  # no = False
    ('version: "1"\nconcepts:\n  cough:\n    synonyms: [cough]\nnegation:\n  pre: [cough]\n', "two meanings"),
    ('version: "1"\nconcepts:\n  cough:\n    synonyms: [cough\n', "unclosed"),
    ('version: "1"\nconcepts: {}\n', "concept"),
    ('concepts:\n  cough:\n    synonyms: [cough]\n', "version"),
])
def test_bad_lexicon_is_refused(bad, message):
    with pytest.raises(ValueError, match=message):
        ConceptReader(bad)


def test_features_layout_empty_and_missing_notes(reader):
    x = reader.features(["", "Denies fever. Productive cough.", None])
    assert x.dtype == torch.float32 and x.shape == (3, reader.n_features) == (3, 2 * len(SYMPTOMS))
    assert reader.feature_names[:4] == ["cough:affirmed", "cough:negated", "fever:affirmed", "fever:negated"]
    assert torch.equal(x[0], torch.zeros(14))
    assert x[1].nonzero().flatten().tolist() == [0, 3]  # cough affirmed, fever negated
    assert torch.isnan(x[2]).all()  # no note at all: the encoder masks it
    assert reader.features([]).shape == (0, 14)
    assert reader.read("") == {c: "absent" for c in SYMPTOMS}
    both = reader.features(["Cough. Denies cough."])[0]  # affirmed somewhere, negated elsewhere: both flags
    assert both[:2].tolist() == [1.0, 1.0] and reader.read("Cough. Denies cough.")["cough"] == "present"


def test_save_load_round_trip_is_self_contained(tmp_path):
    text = DEFAULT_LEXICON.read_text().replace("tussis]", "tussis, barking]")
    custom = ConceptReader(text)
    assert not is_concept_dir(tmp_path / "reader")
    path = custom.save_pretrained(tmp_path / "reader")
    assert path == tmp_path / "reader" / LEXICON_FILE and path.read_text() == text and is_concept_dir(path.parent)
    loaded = ConceptReader.load(tmp_path / "reader")  # the saved lexicon, not the checkout's
    assert loaded.version == custom.version and loaded.concepts == custom.concepts
    notes = ["Barking since Monday, denies fever.", "pt c/o SOB x2d"]
    assert torch.equal(loaded.features(notes), custom.features(notes))
    assert loaded.read(notes[0])["cough"] == "present" != ConceptReader.from_lexicon().read(notes[0])["cough"]
    with pytest.raises(FileNotFoundError):
        ConceptReader.load(tmp_path / "nothing")


def test_a_1mb_adversarial_note_reads_in_linear_time(reader):
    parts = ["no " * 60_000, "." * 150_000, "sharp chest pain worse on deep " * 6_000, "a" * 150_000,
             "cannot be ruled " * 10_000, '"' * 50_000, "denies cough, SOB; pleuritic CP but fever\n" * 4_000]
    text = "".join(parts)[:1_000_000]
    assert len(text) == 1_000_000
    start = time.perf_counter()
    reader.features([text])
    assert time.perf_counter() - start < 1.0


def test_encoder_one_token_masks_missing_notes_and_locks():
    torch.manual_seed(0)
    enc = ConceptEncoder(ConceptEncoderConfig(n_features=14, width=8))
    x = torch.zeros(3, 14)
    x[0, 0] = 1.0
    x[2] = float("nan")
    tokens, mask = enc.encode(x)
    assert tokens.shape == (3, 1, 8) and mask.shape == (3, 1) and mask.dtype == torch.bool
    assert mask.flatten().tolist() == [True, True, False]
    assert torch.equal(tokens[2], torch.zeros(1, 8)) and torch.isfinite(tokens).all()
    assert not torch.allclose(tokens[0], tokens[1])
    tokens.sum().backward()
    assert enc.proj.weight.grad is not None and torch.isfinite(enc.proj.weight.grad).all()
    with pytest.raises(ValueError, match="concept flags"):
        enc.encode(torch.zeros(2, 13))
    enc.lock()
    assert not any(p.requires_grad for p in enc.parameters()) and not enc.training


def test_reader_matches_the_truth_on_generated_notes(reader):
    """On 300 generated patients (all three note styles) a flag is affirmed iff the symptom is present, and a
    negated flag only ever marks an absent symptom."""
    from tasks.synth.generate import SynthConfig, make_record
    from tasks.synth.model import biology
    from tasks.synth.notes import clinical_note
    from tasks.synth.sites import make_sites

    cfg = SynthConfig(patients=300, seed=7)
    bio, sites = biology(), make_sites(cfg.sites, cfg.shift)
    records = [make_record(cfg, sites, bio, i) for i in range(cfg.patients)]
    assert {r.site.note_style for r in records} == {"soap", "narrative", "terse"}
    x = reader.features([clinical_note(r) for r in records]).numpy().astype(bool)
    truth = np.stack([r.evidence.symptoms for r in records])  # (N, 7)
    assert (x[:, 0::2] == truth).mean() >= 0.99
    assert (x[:, 1::2] & truth).mean() <= 0.01
    assert x[:, 1::2].any()  # the notes do negate, and the reader sees it
