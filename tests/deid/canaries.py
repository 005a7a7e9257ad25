"""PHI canaries: unique marker strings planted wherever PHI can hide, then searched for in raw output bytes.

Every text canary starts with CANARY, so one search for b"CANARY" catches them all; dates and UIDs get their own
unique values (a date 1901-02-03 cannot be produced by shifting a real date back 1 to 10 years from today).
"""

from __future__ import annotations

import io

import pydicom
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

MARK = b"CANARY"
SITE = "site01"
MRN = "CANARYMRN1"
UID_ROOT = "1.2.826.0.1.3680043.8.498.777"
STUDY_UID, SERIES_UID, SOP_UID, FOR_UID = (f"{UID_ROOT}.{i}" for i in (1, 2, 3, 4))
DEEP_UID, OTHER_SOP_UID = f"{UID_ROOT}.5", f"{UID_ROOT}.6"
CANARY_UIDS = (STUDY_UID, SERIES_UID, SOP_UID, FOR_UID, DEEP_UID, OTHER_SOP_UID)  # the table lists their tags
CANARY_DATES = (b"19010203", b"19010204", b"19010205", b"19010206", b"19010207", b"19010208")


def item(**attributes: object) -> Dataset:
    ds = Dataset()
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    return ds


def planted_ct() -> Dataset:
    """CT_small.dcm (real pixels, real vendor private tags) with a canary in every place PHI can hide."""
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.preamble = b"CANARYPREAMBLE".ljust(128, b"\x00")
    ds.file_meta.SourceApplicationEntityTitle = "CANARYAE"
    ds.file_meta.MediaStorageSOPInstanceUID = SOP_UID
    ds.PatientName = "CANARYFAMILY1^CANARYGIVEN1"
    ds.PatientID = MRN
    ds.OtherPatientNames = "CANARYOTHERNAME1"
    ds.OtherPatientIDsSequence = Sequence([item(PatientID="CANARYOTHERID1", IssuerOfPatientID="CANARYISSUER1")])
    ds.PatientBirthDate = "19010203"
    ds.PatientAge = "095Y"
    ds.PatientAddress = "CANARYADDRESS1"
    ds.PatientTelephoneNumbers = "CANARYPHONE1"
    ds.StudyDate, ds.SeriesDate, ds.ContentDate = "19010204", "19010204", "19010207"
    ds.AcquisitionDateTime = "19010205101010.123456+0100"
    ds.InstitutionName, ds.InstitutionAddress = "CANARYINSTITUTION1", "CANARYINSTADDRESS1"
    ds.ReferringPhysicianName = "CANARYREFDOC1"
    ds.PerformingPhysicianName = "CANARYPERFDOC1"
    ds.OperatorsName = "CANARYOPERATOR1"
    ds.StudyDescription = "CANARY free text about CANARYFAMILY1"
    ds.SeriesDescription = "CANARYSERIESDESC1"
    ds.AccessionNumber = "CANARYACC1"
    ds.StationName = "CANARYSTATION1"
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = STUDY_UID, SERIES_UID, SOP_UID
    ds.FrameOfReferenceUID = FOR_UID
    ds.ReferencedImageSequence = Sequence([item(ReferencedSOPClassUID=ds.SOPClassUID,
                                                ReferencedSOPInstanceUID=OTHER_SOP_UID)])
    ds.add_new(0x00091001, "LO", "CANARYPRIVATE1")  # CT_small already has GE's creator in (0009,0010)
    ds.add_new(0x00190010, "LO", "CANARYCREATOR")
    ds.add_new(0x00191001, "LO", "CANARYPRIVATE2")
    ds.add_new(0x60003000, "OW", b"CANARYOVERLAY1")
    ds.add_new(0x60004000, "LT", "CANARYOVERLAYCOMMENT1")
    ds.add_new(0x00189FFE, "UN", b"CANARYUNKNOWN1")  # a public tag this pydicom does not know
    ds.ReferencedSeriesSequence = Sequence([_deep_item()])  # not in Table E.1-1: walked, 3+ levels
    return ds


def _deep_item() -> Dataset:
    """Three sequence levels down, PHI the table lists and PHI it does not (caught by VR)."""
    level3 = item(PersonName="CANARYDEEPNAME1", CodeValue="121320", CodingSchemeDesignator="DCM",
                  CodeMeaning="Uncompressed predecessor", SecondaryReviewerName="CANARYREVIEWER1",
                  SecondaryReviewDate="19010206", StudyUpdateDateTime="19010208120000",
                  ReferencedSOPInstanceUID=DEEP_UID, VolumeFrameOfReferenceUID=FOR_UID)  # the latter: not in table
    level3.add_new(0x00290010, "LO", "CANARYDEEPCREATOR")
    level3.add_new(0x00291001, "LO", "CANARYDEEPPRIVATE1")
    level2 = item(ReferencedSOPClassUID="1.2.840.10008.5.1.4.1.1.2", ReferencedSOPInstanceUID=OTHER_SOP_UID,
                  PurposeOfReferenceCodeSequence=Sequence([level3]))
    return item(SeriesInstanceUID=SERIES_UID, ReferencedInstanceSequence=Sequence([level2]))


def to_bytes(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds)
    return buf.getvalue()
