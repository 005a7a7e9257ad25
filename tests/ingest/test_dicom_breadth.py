"""DICOM breadth (issue 18 item 4) through the real ingest (scan -> batches -> staged parquet): enhanced multi-frame
images become volumes by their functional groups, cine/capture multi-frames become frames, MR/MG series are indexed
with their modality and allow-listed acquisition columns, and non-image objects (SR, RTSTRUCT, RTPLAN, RTDOSE, ECG)
are de-identified and catalogued in `objects` instead of quarantined. pydicom's own test files where they have what
a test needs (copied, with a PatientID where they lack one); built with pydicom where not (an enhanced CT, a US cine).
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from tasks.deid import Pseudonymizer
from tasks.deid.dicom_objects import scrub_content
from tasks.ingest.accounting import BatchResult
from tasks.ingest.dicom import ImagingConfig, batch_series, ingest_series_batch, scan_headers
from tasks.ingest.landing import land
from tasks.ingest.staged import write_part

SITE = "site-a"
KEYS = Pseudonymizer(b"k" * 32)
CFG = ImagingConfig(allow_burned_in=True)  # the US cine and SC captures pass to the OCR screen instead of quarantine
CANARIES = ("CANARYNAME", "CANARYMRN998877", "CANARYPERSON", "CANARYINSTITUTE", "CANARYACC", "CANARYDOCTOR")
Z_ORDER = (20.0, 0.0, 40.0, 10.0, 30.0)  # frames stored out of order: ingest must sort them along the normal


def _file(ds: Dataset, sop_class: str, modality: str) -> Dataset:
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientID, ds.PatientName, ds.Modality, ds.StudyDate = "MRN-BREADTH", "DOE^JANE", modality, "20210304"
    ds.InstanceNumber = 1
    return ds


def enhanced_ct() -> Dataset:
    """Enhanced CT, 5 frames of 32x32, geometry only in the functional groups; frame value = 10 * z (HU)."""
    ds = _file(Dataset(), "1.2.840.10008.5.1.4.1.1.2.1", "CT")
    ds.NumberOfFrames, ds.Rows, ds.Columns = len(Z_ORDER), 32, 32
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    shared = Dataset()
    shared.PixelMeasuresSequence = Sequence([Dataset()])
    shared.PixelMeasuresSequence[0].PixelSpacing, shared.PixelMeasuresSequence[0].SliceThickness = [2.0, 2.0], 10.0
    shared.PlaneOrientationSequence = Sequence([Dataset()])
    shared.PlaneOrientationSequence[0].ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    shared.PixelValueTransformationSequence = Sequence([Dataset()])
    shared.PixelValueTransformationSequence[0].RescaleSlope = 1
    shared.PixelValueTransformationSequence[0].RescaleIntercept = -1024
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    frames = []
    for z in Z_ORDER:
        item = Dataset()
        item.PlanePositionSequence = Sequence([Dataset()])
        item.PlanePositionSequence[0].ImagePositionPatient = [-32.0, -32.0, z]
        frames.append(item)
    ds.PerFrameFunctionalGroupsSequence = Sequence(frames)
    pixels = np.stack([np.full((32, 32), 1024 + 10 * z, dtype=np.uint16) for z in Z_ORDER])
    ds.PixelData = pixels.tobytes()
    return ds


def us_cine() -> Dataset:
    """An RGB ultrasound cine loop of 4 frames: no plane geometry at all."""
    ds = _file(Dataset(), "1.2.840.10008.5.1.4.1.1.3.1", "US")
    ds.NumberOfFrames, ds.Rows, ds.Columns = 4, 32, 32
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = (np.arange(4 * 32 * 32 * 3) % 7).astype(np.uint8).tobytes()
    return ds


def mammogram() -> Dataset:
    ds = _file(Dataset(), "1.2.840.10008.5.1.4.1.1.1.2", "MG")
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = 32, 32, 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.ViewPosition, ds.ImageLaterality, ds.ImagerPixelSpacing = "CC", "L", [0.1, 0.1]
    ds.SeriesDescription = "CANARYNAME left breast"  # free text: never staged
    ds.PixelData = np.full((32, 32), 100, dtype=np.uint16).tobytes()
    return ds


def sr_with_canaries() -> Dataset:
    """pydicom's comprehensive SR with PHI in the header and in its content tree (TEXT and PNAME items)."""
    ds = pydicom.dcmread(get_testdata_file("test-SR.dcm"))
    ds.PatientID, ds.PatientName, ds.InstitutionName = "CANARYMRN998877", "CANARYNAME^JANE", "CANARYINSTITUTE"
    ds.AccessionNumber, ds.ReferringPhysicianName = "CANARYACC", "CANARYDOCTOR^WHO"
    text, pname = Dataset(), Dataset()
    text.RelationshipType, text.ValueType = "CONTAINS", "TEXT"
    text.TextValue = "Seen CANARYNAME today, MRN CANARYMRN998877"
    pname.RelationshipType, pname.ValueType, pname.PersonName = "CONTAINS", "PNAME", "CANARYPERSON^ANN"
    ds.ContentSequence.extend([text, pname])
    return ds


def _copy(name: str, folder: Path, **attrs) -> Path:
    ds = pydicom.dcmread(get_testdata_file(name), force=True)
    for keyword, value in attrs.items():
        setattr(ds, keyword, value)
    if "TransferSyntaxUID" not in getattr(ds, "file_meta", Dataset()):
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian
    path = folder / name
    ds.save_as(path, enforce_file_format=True)
    return path


def ingest(src: Path, ws: Path) -> BatchResult:
    extract = land(src, ws / "data" / "landing", "dicom", SITE)
    groups, result = scan_headers(extract, ws / "data" / "landing", SITE)
    for batch in batch_series(groups):
        result.merge(ingest_series_batch(batch, ws / "data" / "landing", ws / "data" / "staged", KEYS, SITE, CFG))
    return result


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[Path, Path, BatchResult]:
    root = tmp_path_factory.mktemp("breadth")
    src, ws = root / "src", root / "ws"
    src.mkdir()
    for name, ds in (("enhanced_ct.dcm", enhanced_ct()), ("us_cine.dcm", us_cine()), ("mg.dcm", mammogram()),
                     ("sr.dcm", sr_with_canaries())):
        ds.save_as(src / name, enforce_file_format=True)
    _copy("MR_small.dcm", src, MagneticFieldStrength=1.5, MRAcquisitionType="2D", SequenceName="CANARYNAME")
    _copy("SC_rgb_rle_2frame.dcm", src)
    _copy("rtstruct.dcm", src)
    _copy("rtplan.dcm", src)
    _copy("rtdose.dcm", src)
    _copy("waveform_ecg.dcm", src)
    result = ingest(src, ws)
    for table in ("imaging", "objects"):
        write_part(ws / "data" / "staged", table, "extract-1", result.rows.get(table, []))
    return src, ws, result


def _imaging(result: BatchResult) -> dict[str, dict]:
    return {r["modality"]: r for r in result.rows["imaging"]}


def test_every_file_is_ingested_or_quarantined_once(run):
    src, _, result = run
    files = sorted(src.iterdir())
    assert result.received == len(files) and result.balanced()
    assert result.ingested + result.quarantined == len(files)
    ingested = [s for r in result.rows["imaging"] for s in r["source_sha256s"]]
    ingested += [r["source_sha256"] for r in result.rows["objects"]]
    rejected = [r.sha256 for r in result.rejections]
    assert sorted(ingested + rejected) == sorted(hashlib.sha256(p.read_bytes()).hexdigest() for p in files)
    assert not result.rejections, [(r.rule, r.message) for r in result.rejections]


def test_enhanced_ct_becomes_a_volume_sorted_along_the_normal(run):
    _, ws, result = run
    row = _imaging(result)["CT"]
    assert (row["n_instances"], row["n_frames"]) == (1, len(Z_ORDER))
    assert row["original_shape"] == [1, 5, 32, 32] and row["original_spacing"] == [10.0, 2.0, 2.0]
    assert row["shape"] == [1, *CFG.ct_shape] and row["shard"]
    with np.load(ws / row["shard"]) as npz:
        volume = npz[row["key"]]
    centre = volume[0, :, CFG.ct_shape[1] // 2, CFG.ct_shape[2] // 2]
    body = centre[centre > -1000]
    assert len(body) >= 4 and np.all(np.diff(body) > 0)  # feet to head: HU 0, 100, ..., 400 in order
    assert body.min() == pytest.approx(0, abs=1) and body.max() == pytest.approx(400, abs=1)


def test_cine_and_capture_multi_frames_become_frames_without_a_shard(run):
    _, _, result = run
    rows = _imaging(result)
    us, sc = rows["US"], rows["OT"]
    assert us["original_shape"] == [4, 32, 32] and us["shape"] == [4, *CFG.image_size] and us["n_frames"] == 4
    assert sc["original_shape"][0] == 2 and sc["n_frames"] == 2
    assert us["shard"] is None and sc["shard"] is None  # no encoder for US / OT: indexed, kept for later


def test_mr_and_mg_are_indexed_with_allow_listed_acquisition_columns(run):
    _, _, result = run
    rows = _imaging(result)
    mr, mg = rows["MR"], rows["MG"]
    source = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    assert mr["shard"] and mr["shape"] == [1, *CFG.ct_shape]
    assert mr["field_strength_t"] == 1.5 and mr["mr_acquisition_type"] == "2D"
    assert mr["repetition_time_ms"] == pytest.approx(float(source.RepetitionTime))
    assert mr["echo_time_ms"] == pytest.approx(float(source.EchoTime))
    assert (mg["view_position"], mg["laterality"], mg["shard"], mg["original_shape"]) == ("CC", "L", None,
                                                                                           [1, 32, 32])
    assert mg["field_strength_t"] is None and "sequence_name" not in mr


def test_non_image_objects_are_catalogued_not_quarantined(run):
    _, ws, result = run
    kinds = sorted(r["kind"] for r in result.rows["objects"])
    assert kinds == ["ecg", "rtdose", "rtplan", "rtstruct", "sr"]
    for row in result.rows["objects"]:
        assert row["object_id"].startswith("2.25.") and row["patient_id"] and row["site"] == SITE
        assert row["stored"] and (ws / row["file"]).is_file() and row["not_stored_reason"] is None
        assert row["sop_class"].startswith("1.2.840.10008.5.1.4.1.1.")
    rtstruct = next(r for r in result.rows["objects"] if r["kind"] == "rtstruct")
    assert rtstruct["referenced_series"] and all(u.startswith("2.25.") for u in rtstruct["referenced_series"].split())
    table = pl.read_parquet(ws / "data" / "staged" / "objects" / "extract-1.parquet")
    assert table.height == 5 and table["object_id"].is_unique().all()


def test_sr_canaries_survive_nowhere(run):
    _, ws, result = run
    sr = next(r for r in result.rows["objects"] if r["kind"] == "sr")
    stored = pydicom.dcmread(ws / sr["file"])
    assert stored.PatientIdentityRemoved == "YES" and stored.PatientID == sr["patient_id"]
    written = b"".join(p.read_bytes() for p in (ws / "data" / "staged").rglob("*") if p.is_file())
    messages = " ".join(r.message for r in result.rejections)
    for canary in CANARIES:
        assert canary.encode() not in written, canary
        assert canary not in messages and canary not in repr(result.rows)


def test_scrub_reaches_content_trees_the_profile_does_not_list():
    """Belt and braces: a content tree inside some other sequence keeps no text and no name."""
    ds, inner = Dataset(), Dataset()
    inner.ValueType, inner.TextValue, inner.PersonName = "TEXT", "CANARYNAME", "CANARYPERSON"
    inner.ConceptNameCodeSequence = Sequence([Dataset()])
    inner.ConceptNameCodeSequence[0].CodeValue = "121071"
    ds.ReferencedSeriesSequence = Sequence([Dataset()])
    ds.ReferencedSeriesSequence[0].ContentSequence = Sequence([inner])
    assert scrub_content(ds) == 2
    item = ds.ReferencedSeriesSequence[0].ContentSequence[0]
    assert not item.TextValue and not item.PersonName and item.ConceptNameCodeSequence[0].CodeValue == "121071"


def test_encapsulated_pdf_is_catalogued_but_its_bytes_are_not_kept(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    ds = _file(Dataset(), "1.2.840.10008.5.1.4.1.1.104.1", "DOC")
    ds.MIMETypeOfEncapsulatedDocument, ds.DocumentTitle = "application/pdf", "CANARYNAME report"
    ds.EncapsulatedDocument = b"%PDF-1.4 CANARYNAME CANARYMRN998877\n%%EOF\n"
    ds.save_as(src / "doc.dcm", enforce_file_format=True)
    result = ingest(src, tmp_path / "ws")
    [row] = result.rows["objects"]
    assert (row["kind"], row["stored"], row["file"]) == ("pdf", False, None) and row["not_stored_reason"]
    assert result.ingested == 1 and not result.rejections
    staged = tmp_path / "ws" / "data" / "staged"
    assert not staged.exists() or not any(p.is_file() for p in staged.rglob("*"))


def test_a_private_non_image_class_is_still_not_an_image(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    ds = _file(Dataset(), "1.2.840.10008.5.1.4.1.1.9.4.1", "AU")  # Basic Voice Audio: a voice is PHI
    ds.save_as(src / "audio.dcm", enforce_file_format=True)
    result = ingest(src, tmp_path / "ws")
    assert [r.rule for r in result.rejections] == ["dicom.not_image"] and result.balanced()
    shutil.rmtree(tmp_path / "ws")


def test_staged_objects_and_imaging_pass_their_contracts(run):
    """objects.yaml and imaging.yaml (a null shard is fine for MG/US/OT, required for CT/MR) on the staged parts."""
    from tasks.ingest.staged import read_table, schema_of
    from tasks.validation.contracts import validate_tables

    _, ws, result = run
    staged = ws / "data" / "staged"
    ids = sorted({r["patient_id"] for t in ("imaging", "objects") for r in result.rows[t]})
    patients = pl.DataFrame([{"patient_id": p, "site": SITE, "sex": "female", "birth_date": "1900-01-01",
                              "deceased": False, "source_sha256": "0" * 64} for p in ids], schema=schema_of("patients"))
    tables = {"patients": patients, "objects": read_table(staged, "objects"), "imaging": read_table(staged, "imaging")}
    report = validate_tables(tables, gx=False, splits={p: "train" for p in ids})
    objects, imaging = report.tables["objects"], report.tables["imaging"]
    assert objects.rows_quarantined == 0 and not objects.failures, objects.quarantine_reasons
    assert report.clean["objects"].height == 5
    assert imaging.quarantine_reasons.get("imaging.shard_not_null", 0) == 0, imaging.summary()
