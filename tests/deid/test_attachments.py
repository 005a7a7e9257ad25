"""Text attachments in every encoding a site sends (issue 17 item 3): staged with their text, scrubbed, never empty;
an attachment that cannot be read is quarantined under deid.attachment_undecodable, not staged empty."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from tasks.deid import Pseudonymizer
from tasks.deid.errors import DeidError
from tasks.deid.fhir_attachment import decode_attachment, markup_to_text, media_type
from tasks.ingest.fhir import ingest_fhir
from tasks.ingest.landing import land

SITE = "site-a"
KEYS = Pseudonymizer(b"k" * 32)
MR = {"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]}}
PATIENT = {"resourceType": "Patient", "id": "p1", "identifier": [{**MR, "value": "MRN0001"}], "gender": "female",
           "birthDate": "1970-01-01", "name": [{"family": "Canaryfamily", "given": ["Canarygiven"]}]}
# the patient's own name (known to the scrubber) sits in every note: it must come out as [NAME]
CLINICAL = "Canarygiven Canaryfamily reports fever and cough; crackles at the right base."


def b64(raw: bytes, wrap: int = 0) -> str:
    text = base64.b64encode(raw).decode()
    return "\r\n".join(text[i:i + wrap] for i in range(0, len(text), wrap)) if wrap else text


def document(rid: str, content_type: str, data: str) -> dict:
    return {"resourceType": "DocumentReference", "id": rid, "status": "current",
            "subject": {"reference": "Patient/p1"}, "date": "2021-03-04T12:00:00Z",
            "content": [{"attachment": {"contentType": content_type, "data": data}}]}


def report(rid: str, content_type: str, data: str) -> dict:
    return {"resourceType": "DiagnosticReport", "id": rid, "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "36643-5"}]},
            "subject": {"reference": "Patient/p1"}, "effectiveDateTime": "2021-03-04",
            "presentedForm": [{"contentType": content_type, "data": data}]}


def ingest(tmp_path: Path, documents: list[dict], reports: list[dict] = ()):
    src = tmp_path / "src"
    src.mkdir()
    files = {"Patient.ndjson": [PATIENT], "DocumentReference.ndjson": documents,
             "DiagnosticReport.ndjson": list(reports)}
    for name, lines in files.items():
        (src / name).write_text("".join(json.dumps(x) + "\n" for x in lines))
    result = ingest_fhir(land(src, tmp_path / "landing", "fhir", SITE), tmp_path / "landing", KEYS, SITE)
    assert result.balanced()
    return result


# words the scrubber has no reason to touch (lower case, clinical), with the accents that each encoding must keep
LATIN1_BESIDE_UTF8 = ("première ligne en utf-8 : fièvre.\n".encode() + "zweite zeile latin-1: größe 3 cm.\n"
                      .encode("latin-1") + CLINICAL.encode())
CASES = {  # id -> (content type, data, words the staged text must hold)
    "mixed": ("text/plain", b64(LATIN1_BESIDE_UTF8), ["première ligne", "fièvre", "größe 3 cm", "crackles"]),
    "mime": ("text/plain; charset=utf-8", b64(("zeile " * 40 + CLINICAL).encode(), wrap=76), ["zeile", "crackles"]),
    "latin1": ("text/plain; charset=ISO-8859-1", b64(f"échographie: épanchement. {CLINICAL}".encode("latin-1")),
               ["échographie", "épanchement", "crackles"]),
    "html": ("text/html; charset=utf-8",
             b64(f"<html><head><style>p {{color: red}}</style><script>var x = 'Canaryfamily';</script></head>"
                 f"<body><h1>admission</h1><p>{CLINICAL}</p><p>plan:&nbsp;antibiotics &amp; fluids</p></body>"
                 "</html>".encode()), ["admission", "crackles", "antibiotics & fluids"]),
    "utf16": ("text/plain; charset=utf-16", b64(CLINICAL.encode("utf-16")), ["crackles"]),
}


def test_each_encoding_is_staged_with_its_text_scrubbed(tmp_path):
    docs = [document(rid, ctype, data) for rid, (ctype, data, _) in CASES.items()]
    result = ingest(tmp_path, docs, [report("r1", "text/plain; charset=ISO-8859-1", b64("opacité basale droite. "
                                                                                          "Canaryfamily".encode("latin-1")))])
    assert not result.rejections
    notes = {n["note_id"]: n["text"] for n in result.rows["notes"]}
    assert len(notes) == len(CASES) + 1 and all(notes.values())  # before: empty text for all but utf16
    by_case = {KEYS.resource_id(SITE, "DocumentReference", rid): case for rid, case in CASES.items()}
    for note_id, text in notes.items():
        if note_id in by_case:
            for word in by_case[note_id][2]:
                assert word in text, (note_id, word)
        assert "[NAME]" in text and "Canary" not in text  # scrubbed
    html = notes[KEYS.resource_id(SITE, "DocumentReference", "html")]
    assert "<" not in html and "color" not in html and "var x" not in html
    assert "opacité basale droite" in notes[KEYS.resource_id(SITE, "DiagnosticReport", "r1")]


@pytest.mark.parametrize("content_type, data, rule", [
    ("text/plain", "this is not base64 !!!", "fhir.structure"),  # R4 validation already refuses it
    ("text/plain; charset=x-klingon", b64(b"qapla"), "deid.attachment_undecodable"),
    ("text/plain", b64(b"binary \x00\x01\x02 content"), "deid.attachment_undecodable"),
    ("text/plain; charset=us-ascii", b64("J\x00o\x00h\x00n\x00".encode("latin-1")),  # UTF-16 without a BOM
     "deid.attachment_undecodable"),
])
def test_an_undecodable_attachment_is_quarantined_not_staged_empty(tmp_path, content_type, data, rule):
    result = ingest(tmp_path, [document("bad", content_type, data), document("good", "text/plain", b64(b"fine"))])
    assert [(r.rule, r.location) for r in result.rejections] == [(rule, "line 1")]
    assert "DocumentReference.content" in result.rejections[0].message
    assert "qapla" not in result.rejections[0].message and "klingon" not in result.rejections[0].message
    assert [n["text"] for n in result.rows["notes"]] == ["fine"]


def test_undecodable_without_structure_validation(tmp_path):
    """The same refusal in de-identification itself, when R4 validation is switched off."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "Patient.ndjson").write_text(json.dumps(PATIENT) + "\n")
    (src / "DocumentReference.ndjson").write_text(json.dumps(document("bad", "text/plain", "not base64 !")) + "\n")
    result = ingest_fhir(land(src, tmp_path / "l", "fhir", SITE), tmp_path / "l", KEYS, SITE, validate_structure=False)
    assert [(r.rule, r.stage) for r in result.rejections] == [("deid.attachment_undecodable", "deidentify")]


def test_decoding_rules():
    assert media_type('text/plain; Charset="ISO-8859-1"') == ("text/plain", "iso-8859-1")
    assert decode_attachment("text/plain", b64("BOM".encode("utf-8-sig")), "x") == "BOM"
    assert markup_to_text("<p>a</p><p>b<br>c</p>") == "a\n\nb\nc"
    with pytest.raises(DeidError) as info:
        decode_attachment("text/plain", 42, "Somewhere.data")
    assert info.value.rule == "attachment_undecodable" and "42" not in str(info.value)
