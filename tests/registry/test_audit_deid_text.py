"""Free-text de-identification is counted where it happens: a note scrubbed while a FHIR resource is
de-identified adds its replacements (by kind, never a value) to the run's DeidReport, which the audit report shows.
"""

from __future__ import annotations

from tasks.deid import DeidReport, deidentify_resource, known_identifiers, patient_index
from tasks.deid.pseudonym import Pseudonymizer
from tests.deid.canaries import SITE
from tests.deid.test_fhir import DOCUMENT, ENCOUNTER, PATIENT


def test_a_note_with_names_counts_its_replacements_into_the_report():
    keys, index, known = Pseudonymizer(b"k" * 32), patient_index([PATIENT], SITE), known_identifiers(PATIENT)
    report = DeidReport()
    report.add_fhir(deidentify_resource(ENCOUNTER, keys, site=SITE, patients=index, known=known))
    before = report.text_replacements.total()
    report.add_fhir(deidentify_resource(DOCUMENT, keys, site=SITE, patients=index, known=known))
    raw = report.to_dict()
    assert raw["fhir_resources"] == 2 and raw["text_fields"] >= 1
    assert raw["text_replacements"]["NAME"] >= 2 and report.text_replacements.total() > before
    assert {"PHONE", "SSN"} <= set(raw["text_replacements"])
    text = report.to_json().upper()
    assert "CANARY" not in text and "555-0134" not in text
    merged = report.merge(report)
    assert merged.text_fields == 2 * report.text_fields
    assert merged.text_replacements["NAME"] == 2 * raw["text_replacements"]["NAME"]
