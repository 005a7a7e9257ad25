"""The de-identification boundary: pure functions that turn landed DICOM, FHIR and notes into pseudonymised
records. PHI never leaves here, not even in an error message or a report (see errors.py and report.py).

    keys = Pseudonymizer(key_from_settings())                 # refuses a missing or short MMFM_PSEUDONYM_KEY
    result = deidentify_dataset(ds, keys, site="site01")      # DICOM: PS3.15 basic profile + modified dates
    index = patient_index(patient_resources, site="site01")   # FHIR Patient id -> (site, MRN)
    fhir = deidentify_resource(resource, keys, site="site01", patients=index, known=known_identifiers(patient))
    text, counts = scrub_text(note, known, fhir.date_offset_days)
"""

from __future__ import annotations

from tasks.deid.dicom import DicomDeidResult, burned_in_reasons, deidentify_dataset
from tasks.deid.errors import DeidError, PseudonymKeyError
from tasks.deid.fhir import FhirDeidResult, deidentify_resource, known_identifiers, patient_index
from tasks.deid.pseudonym import KEY_ENV, Pseudonymizer, key_from_settings
from tasks.deid.report import DeidReport
from tasks.deid.text import KnownIdentifiers, scrub_text

__all__ = [
    "KEY_ENV", "DeidError", "DeidReport", "DicomDeidResult", "FhirDeidResult", "KnownIdentifiers",
    "PseudonymKeyError", "Pseudonymizer", "burned_in_reasons", "deidentify_dataset", "deidentify_resource",
    "key_from_settings", "known_identifiers", "patient_index", "scrub_text",
]
