"""The run report: aggregates, JSON round trip, and never any PHI."""

from __future__ import annotations

import hashlib
import json
from collections import Counter

import pydicom
import pytest
from pydicom.data import get_testdata_file

from tasks.deid import DeidError, DeidReport, deidentify_dataset, deidentify_resource, patient_index, scrub_text
from tests.deid.canaries import SITE, planted_ct
from tests.deid.test_fhir import PATIENT, REPORT


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def test_report_aggregates_without_phi(keys):
    report = DeidReport()
    ct = deidentify_dataset(planted_ct(), keys, SITE)
    ct.dataset.BurnedInAnnotation = "YES"
    report.add_dicom(ct, sha("ct"))
    sc = deidentify_dataset(pydicom.dcmread(get_testdata_file("SC_rgb_rle.dcm")), keys, SITE, mrn="m")
    report.add_dicom(sc, sha("sc"))
    index = patient_index([PATIENT], SITE)
    for resource in (PATIENT, REPORT):
        report.add_fhir(deidentify_resource(resource, keys, site=SITE, patients=index))
    report.add_text(scrub_text("John Canaryman seen 2021-03-04", None, -3)[1])
    text = report.to_json()
    assert "CANARY" not in text.upper() and "1901" not in text and "1.2.826.0.1.3680043.8.498.777" not in text
    raw = json.loads(text)
    # one scrub_text call, plus the two resources' own scrubbed strings (the FHIR walk counts what it scrubs)
    assert raw["dicom_files"] == 2 and raw["fhir_resources"] == 2 and raw["text_fields"] == 3
    assert raw["text_replacements"]["NAME"] >= 5
    assert raw["actions"]["dicom"]["U"] >= 10 and raw["attributes"]["dicom"]["PatientName"] == 2
    assert [b["sha256"] for b in raw["burned_in"]] == [sha("sc")]
    assert raw["burned_in"][0]["reasons"] == sorted(sc.burned_in_reasons)
    assert raw["profile"].startswith("mmfm deid v2")
    assert DeidReport.from_dict(raw).to_json() == text
    assert report.merge(report).dicom_files == 4


def test_report_refuses_paths_and_odd_labels(keys):
    report = DeidReport()
    result = deidentify_dataset(planted_ct(), keys, SITE)
    with pytest.raises(DeidError) as info:
        report.add_dicom(result, "/landing/CANARYFAMILY1/img.dcm")
    assert "CANARY" not in str(info.value)
    with pytest.raises(DeidError):
        report.add_text(Counter({"CANARY\nJohn's": 1}))
