"""DICOM de-identification on real files (pydicom's bundled test data) with PHI canaries planted everywhere."""

from __future__ import annotations

import io
import logging
import traceback
import warnings
from dataclasses import replace
from datetime import date
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset

from data_contracts.deid import PrivateSafeEntry, default_config
from tasks.deid import DeidError, deidentify_dataset
from tasks.deid import dicom_actions as act
from tests.deid.canaries import (
    CANARY_DATES,
    CANARY_UIDS,
    DEEP_UID,
    MARK,
    MRN,
    OTHER_SOP_UID,
    SITE,
    SOP_UID,
    STUDY_UID,
    planted_ct,
    to_bytes,
)

TEST_FILES = Path(pydicom.data.__file__).parent / "test_files"  # local files only: *.dcm globbing downloads


def da(value: str) -> date:
    return date(int(value[:4]), int(value[4:6]), int(value[6:8]))


def test_canaries_absent_from_written_bytes(keys, caplog):
    caplog.set_level(logging.DEBUG)
    result = deidentify_dataset(planted_ct(), keys, SITE)
    raw = to_bytes(result.dataset)
    assert MARK not in raw
    for value in CANARY_DATES:
        assert value not in raw
    for uid in CANARY_UIDS:
        assert uid.encode() not in raw
    assert MARK.decode() not in caplog.text and MARK.decode() not in repr(result)


def test_required_deid_attributes(keys):
    out = deidentify_dataset(planted_ct(), keys, SITE).dataset
    assert out.PatientIdentityRemoved == "YES"
    assert out.LongitudinalTemporalInformationModified == "MODIFIED"
    assert [i.CodeValue for i in out.DeidentificationMethodCodeSequence] == ["113100", "113107"]
    assert {i.CodingSchemeDesignator for i in out.DeidentificationMethodCodeSequence} == {"DCM"}
    assert all(len(v) <= 64 for v in out.DeidentificationMethod)
    assert out.PatientName == out.PatientID == keys.patient(SITE, MRN)
    assert out.PatientAge == "090Y"
    assert out.preamble == b"\x00" * 128
    assert out.filename is None


def test_input_dataset_not_modified(keys):
    ds = planted_ct()
    deidentify_dataset(ds, keys, SITE)
    assert ds.PatientID == MRN and ds.StudyInstanceUID == STUDY_UID


def test_private_tags_removed_unless_safe_listed(keys):
    out = deidentify_dataset(planted_ct(), keys, SITE).dataset
    assert not [e for e in out.iterall() if e.tag.is_private]
    safe = replace(default_config(), private_safe_list=(PrivateSafeEntry(0x0019, "CANARYCREATOR", 0x01),))
    kept = deidentify_dataset(planted_ct(), keys, SITE, config=safe).dataset
    assert kept[0x00191001].value == "CANARYPRIVATE2" and kept[0x00190010].value == "CANARYCREATOR"
    assert 0x00091001 not in kept


def test_dates_shifted_by_patient_offset_and_intervals_kept(keys):
    ds = planted_ct()
    ds.SeriesDate, ds.StudyDate = "20210301", "20210304"
    result = deidentify_dataset(ds, keys, SITE)
    out = result.dataset
    assert result.date_offset_days == keys.date_offset_days(keys.patient(SITE, MRN))
    assert -3650 <= result.date_offset_days <= -365
    assert (da(out.StudyDate) - da(out.SeriesDate)).days == 3
    assert (da("20210304") - da(out.StudyDate)).days == -result.date_offset_days
    assert out.AcquisitionDateTime.endswith("101010.123456+0100")  # time, fraction and zone kept
    assert out.StudyTime == ds.StudyTime  # whole-day shifts leave times alone
    assert out.PatientBirthDate == ""  # Z in the table: birth dates are not retained by the dates option
    deep = out.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0].PurposeOfReferenceCodeSequence[0]
    assert (da(deep.SecondaryReviewDate) - da("19010206")).days == result.date_offset_days  # not in the table
    assert deep.SecondaryReviewerName == "" and "PersonName" in deep and deep.CodeValue == "121320"


def test_uids_consistent_across_files_and_references(keys):
    first = planted_ct()
    second = planted_ct()
    second.SOPInstanceUID = second.file_meta.MediaStorageSOPInstanceUID = OTHER_SOP_UID
    a = deidentify_dataset(first, keys, SITE).dataset
    b = deidentify_dataset(second, keys, SITE).dataset
    assert a.StudyInstanceUID == b.StudyInstanceUID != STUDY_UID
    assert a.ReferencedImageSequence[0].ReferencedSOPInstanceUID == b.SOPInstanceUID
    assert a.file_meta.MediaStorageSOPInstanceUID == a.SOPInstanceUID == keys.uid(SOP_UID)
    deep = a.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0]
    assert deep.ReferencedSOPInstanceUID == b.SOPInstanceUID
    assert deep.PurposeOfReferenceCodeSequence[0].ReferencedSOPInstanceUID == keys.uid(DEEP_UID)
    assert deep.PurposeOfReferenceCodeSequence[0].VolumeFrameOfReferenceUID == a.FrameOfReferenceUID  # by VR
    assert a.SOPClassUID == first.SOPClassUID and deep.ReferencedSOPClassUID == "1.2.840.10008.5.1.4.1.1.2"
    assert a.file_meta.TransferSyntaxUID == first.file_meta.TransferSyntaxUID
    for uid in (a.StudyInstanceUID, a.SeriesInstanceUID, a.SOPInstanceUID, a.FrameOfReferenceUID):
        assert uid.startswith("2.25.") and len(uid) <= 64


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm", "MR_small_RLE.dcm", "JPEG2000.dcm",
                                  "SC_rgb_rle_2frame.dcm"])
def test_written_file_rereads_with_identical_pixels(keys, name):
    ds = pydicom.dcmread(get_testdata_file(name))
    result = deidentify_dataset(ds, keys, SITE, mrn="any")
    back = pydicom.dcmread(io.BytesIO(to_bytes(result.dataset)))
    np.testing.assert_array_equal(back.pixel_array, ds.pixel_array)
    assert back.file_meta.TransferSyntaxUID == ds.file_meta.TransferSyntaxUID


def test_burned_in_flags(keys):
    plain = deidentify_dataset(pydicom.dcmread(get_testdata_file("CT_small.dcm")), keys, SITE)
    assert plain.burned_in_risk is False and plain.burned_in_reasons == ()
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.BurnedInAnnotation = "YES"
    assert deidentify_dataset(ds, keys, SITE).burned_in_reasons == ("BurnedInAnnotation=YES",)
    sc = deidentify_dataset(pydicom.dcmread(get_testdata_file("SC_rgb_rle.dcm")), keys, SITE, mrn="m")
    assert sc.burned_in_risk and "sop_class:secondary_capture" in sc.burned_in_reasons
    us = deidentify_dataset(pydicom.dcmread(get_testdata_file("examples_palette.dcm")), keys, SITE, mrn="m")
    assert "sop_class:ultrasound" in us.burned_in_reasons
    ds.ConversionType = "WSD"
    assert "conversion_type:WSD" in deidentify_dataset(ds, keys, SITE).burned_in_reasons


def test_dummy_sequence_keeps_one_empty_item(keys):
    """D on a sequence (SR ContentSequence: the report's text, names and dates) leaves one empty item."""
    ds = pydicom.dcmread(get_testdata_file("test-SR.dcm"))
    out = deidentify_dataset(ds, keys, SITE, mrn="m").dataset
    assert len(out.ContentSequence) == 1 and len(out.ContentSequence[0]) == 0
    assert pydicom.dcmread(io.BytesIO(to_bytes(out))).ContentSequence[0] == Dataset()


@pytest.mark.parametrize(("age", "expected"), [("095Y", "090Y"), ("090Y", "090Y"), ("089Y", "089Y"),
                                               ("006M", "006M"), ("bad", "")])
def test_age_cap(keys, age, expected):
    ds = planted_ct()
    ds.PatientAge = age
    assert deidentify_dataset(ds, keys, SITE).dataset.PatientAge == expected


def test_counts_name_actions_and_keywords(keys):
    result = deidentify_dataset(planted_ct(), keys, SITE)
    assert result.attributes["InstitutionName"] == 1 and result.attributes["StudyInstanceUID"] == 1
    assert result.actions["U"] >= 5 and result.actions["C"] >= 4 and result.actions["X"] > 0
    assert result.attributes["(0019,1001)"] == 1  # private tags counted by tag, never by value


def test_missing_patient_id_is_refused_without_values(keys):
    ds = planted_ct()
    ds.PatientID = ""
    with pytest.raises(DeidError, match="patient_id_missing"):
        deidentify_dataset(ds, keys, SITE)


def test_element_failure_names_tag_not_value(keys, monkeypatch):
    def boom(elem, offset):
        raise ValueError(f"bad value {elem.value!r}")

    monkeypatch.setattr(act, "shift_dates", boom)
    with pytest.raises(DeidError) as info:
        deidentify_dataset(planted_ct(), keys, SITE)
    text = "".join(traceback.format_exception(info.value))
    assert "dicom_element" in text and "1901" not in text and "CANARY" not in text


def test_every_bundled_test_file(keys, caplog):
    """All readable files of pydicom's wheel survive de-identification, write and re-read; no instance UID stays;
    pydicom's value warnings (which quote values) stay silent while we work."""
    done = 0
    caplog.set_level(logging.DEBUG)
    for path in sorted(TEST_FILES.glob("*.dcm")):
        try:
            ds = pydicom.dcmread(path)
        except Exception:  # deliberately broken or meta-less files: the caller quarantines those
            continue
        caplog.clear()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = deidentify_dataset(ds, keys, SITE, mrn="m")
        assert not [w for w in caught if "Invalid value" in str(w.message)], path.name
        assert "Invalid value" not in caplog.text, path.name
        raw = to_bytes(result.dataset)
        pydicom.dcmread(io.BytesIO(raw))
        for uid in ("SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID"):
            value = str(ds.get(uid, "") or "")
            assert not value or value.encode() not in raw, (path.name, uid)
        done += 1
    assert done > 60


def test_deidentify_dataset_without_file_meta(keys):
    ds = Dataset()
    ds.PatientID, ds.PatientName, ds.StudyInstanceUID = "CANARYMRN2", "CANARYNAME2", "1.2.3.999"
    out = deidentify_dataset(ds, keys, SITE).dataset
    assert out.PatientID == keys.patient(SITE, "CANARYMRN2") and out.StudyInstanceUID == keys.uid("1.2.3.999")


def test_private_class_uids_get_keyed_replacements_standard_ones_stay(keys):
    """A vendor's own SOP class UID (not under 1.2.840.10008.) names the vendor's product: replaced like any UID, in
    the data set, its sequences and the file meta; the transfer syntax stays (a reader needs it)."""
    private, referenced = "1.3.6.1.4.1.99999.42.7.1", "1.3.6.1.4.1.99999.42.7.2"
    ds = planted_ct()
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = private
    ds.ReferencedImageSequence[0].ReferencedSOPClassUID = referenced
    out = deidentify_dataset(ds, keys, SITE).dataset
    assert out.SOPClassUID == out.file_meta.MediaStorageSOPClassUID == keys.uid(private)
    assert out.ReferencedImageSequence[0].ReferencedSOPClassUID == keys.uid(referenced)
    assert out.file_meta.TransferSyntaxUID == ds.file_meta.TransferSyntaxUID
    assert b"99999" not in to_bytes(out)
