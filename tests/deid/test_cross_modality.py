"""One patient, three modalities: the same pseudonym and the same date offset everywhere, intervals intact."""

from __future__ import annotations

from datetime import date

from tasks.deid import deidentify_dataset, deidentify_resource, known_identifiers, patient_index, scrub_text
from tests.deid.canaries import MRN, SITE, planted_ct
from tests.deid.test_fhir import ENCOUNTER, PATIENT


def test_same_offset_and_pseudonym_for_dicom_fhir_and_text(keys):
    ds = planted_ct()
    ds.StudyDate = "20210304"
    dicom = deidentify_dataset(ds, keys, SITE)
    index = patient_index([PATIENT], SITE)
    fhir = deidentify_resource(ENCOUNTER, keys, site=SITE, patients=index)
    note, _ = scrub_text("CT on 2021-03-04, admitted 2021-03-04T08:30", known_identifiers(PATIENT),
                         fhir.date_offset_days)
    assert dicom.patient_pseudonym == fhir.patient_pseudonym == keys.patient(SITE, MRN)
    assert dicom.date_offset_days == fhir.date_offset_days
    study_date = dicom.dataset.StudyDate
    shifted = date(int(study_date[:4]), int(study_date[4:6]), int(study_date[6:]))
    assert fhir.resource["period"]["start"][:10] == shifted.isoformat()
    assert note == f"CT on {shifted.isoformat()}, admitted {shifted.isoformat()}T08:30"
