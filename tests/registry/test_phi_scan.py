from __future__ import annotations

import hashlib
import json

import pytest
from PIL import Image, PngImagePlugin

from tasks.registry.phi_scan import Finding, scan_artifacts

KINDS = [
    ("known_identifier", "Reviewed case of jane DOE-SMITH today", ["Jane Doe-Smith"]),
    ("known_identifier", "study 1.2.840.113619.2.55.3.604688119", ["1.2.840.113619.2.55.3.604688119"]),
    ("ssn", "ssn 123-45-6789 on file", []),
    ("phone", "call (201) 555-0134 after 5pm", []),
    ("email", "contact: jdoe@example-hospital.org", []),
    ("mrn_label", "MRN: 12345678", []),
    ("date_of_birth", "DOB: 03/04/1951", []),
    ("date_of_birth", '{"birthDate": "1951-03-04"}', []),
    ("date_of_birth", "date of birth March 4, 1951", []),
]


@pytest.mark.parametrize(("kind", "line", "known"), KINDS, ids=[f"{k}-{i}" for i, (k, _, _) in enumerate(KINDS)])
def test_each_kind_is_found_without_its_text(tmp_path, kind, line, known):
    (tmp_path / "notes.txt").write_text("header\n" + line + "\n")
    findings = scan_artifacts(tmp_path, known)
    assert Finding("notes.txt", 2, kind) in findings
    rendered = repr(findings) + str(findings) + json.dumps([f.__dict__ for f in findings])
    for secret in [*known, line]:
        assert secret.lower() not in rendered.lower()


def test_hashes_timestamps_and_metrics_are_not_flagged(tmp_path):
    digest = hashlib.sha256(b"x").hexdigest()
    record = {"sha256": digest, "created": "2024-05-01T12:34:56.789012+00:00", "auroc_macro": 0.8512,
              "run_id": "0123456789abcdef0123456789abcdef", "uuid": "123e4567-e89b-12d3-a456-426614174000",
              "dataset_version": "2024-05-01", "n": 1234567, "ci": [0.812, 0.871]}
    (tmp_path / "metrics.json").write_text(json.dumps(record, indent=2))
    (tmp_path / "MLmodel").write_text(f"utc_time_created: '2024-05-01 12:34:56.789012'\nmodel_uuid: {digest[:32]}\n")
    (tmp_path / "card.md").write_text("Scrubbed note: MRN: [MRN], DOB: [DATE], call [PHONE]\n")
    assert scan_artifacts(tmp_path, ["1234"]) == []


def test_binary_files_are_skipped_but_png_text_chunks_are_read(tmp_path):
    (tmp_path / "model.pt").write_bytes(b"\x80\x02jdoe@example.org 123-45-6789\x00")
    (tmp_path / "weights").write_bytes(b"\x00\x01\x02 123-45-6789")
    meta = PngImagePlugin.PngInfo()
    meta.add_text("Software", "matplotlib")
    meta.add_text("Title", "ROC for patient Jane Doe")
    Image.new("RGB", (2, 2)).save(tmp_path / "roc.png", pnginfo=meta)
    Image.new("RGB", (2, 2)).save(tmp_path / "clean.png")
    assert scan_artifacts(tmp_path, ["Jane Doe"]) == [Finding("roc.png", 2, "known_identifier")]


def test_extensionless_text_and_nested_paths(tmp_path):
    (tmp_path / "model" / "data").mkdir(parents=True)
    (tmp_path / "model" / "MLmodel").write_text("signature: ok\nauthor: jdoe@example.org\n")
    (tmp_path / "model" / "data" / "config.yaml").write_text("x: 1\npatient_ssn: 123-45-6789\n")
    assert scan_artifacts(tmp_path) == [Finding("model/MLmodel", 2, "email"),
                                        Finding("model/data/config.yaml", 2, "ssn")]


def test_known_identifiers_match_whole_tokens_only(tmp_path):
    (tmp_path / "a.txt").write_text("checksum ab123456cd\nMRN 123456 in text\n")
    assert scan_artifacts(tmp_path, ["123456", "  ", ""]) == [Finding("a.txt", 2, "known_identifier"),
                                                             Finding("a.txt", 2, "mrn_label")]
