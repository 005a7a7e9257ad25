"""Burned-in text found in the pixels (issue 17 (a)): text drawn into a CR that does not declare it is quarantined as
`dicom.burned_in_text`, the text never reaches a record; a screen capture filed as CR is judged by its file meta;
without Tesseract images at risk are quarantined (`dicom.ocr_unavailable`). Real pydicom files, real Tesseract;
the pixels are the synthetic generator's radiographs, the text PIL's default font."""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pydicom
import pytesseract
import pytest
from PIL import Image, ImageDraw, ImageFont
from pydicom import config as pydicom_config
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from data_contracts.deid import default_config
from tasks.deid import Pseudonymizer, burned_in_reasons, pixels
from tasks.ingest.accounting import BatchResult
from tasks.ingest.dicom import ImagingConfig, batch_series, ingest_series_batch, scan_headers
from tasks.ingest.landing import land
from tasks.ingest.publish import new_part, publish
from tasks.ingest.state import IngestState
from tasks.synth.dicom import SOP_CR, SOP_CT, SOP_SC, render_radiograph
from tasks.synth.generate import SynthConfig, make_record
from tasks.synth.model import biology
from tasks.synth.sites import make_sites
from tasks.workspace import Workspace

SITE = "site-a"
KEYS = Pseudonymizer(b"k" * 32)
WORDS = ("DOE", "JANE", "0012345")  # what is drawn: a name and a record number, on one line
TEXT = "DOE JANE 0012345"


def radiograph(size: int, index: int = 0) -> np.ndarray:
    """A PA chest radiograph of the synthetic generator, (size, size) uint16 in 0..4095."""
    cfg = SynthConfig(patients=4, sites=3, seed=7)
    return render_radiograph(make_record(cfg, make_sites(3), biology(), index), size)


def draw(image: np.ndarray, text: str, xy: tuple[int, int], value: int = 4095) -> np.ndarray:
    """`text` in PIL's default font, burned into a copy of `image` at `value`."""
    mask = Image.new("L", image.shape[::-1], 0)
    ImageDraw.Draw(mask).text(xy, text, fill=255, font=ImageFont.load_default())
    out = image.copy()
    out[np.asarray(mask) > 127] = value
    return out


def dicom(folder: Path, name: str, image: np.ndarray, *, modality: str = "CR", sop_class: str = SOP_CR,
          meta_class: str | None = None, photometric: str = "MONOCHROME2") -> Path:
    """A single-image series written with pydicom; no BurnedInAnnotation unless the caller adds it."""
    folder.mkdir(parents=True, exist_ok=True)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID, ds.SOPClassUID = meta_class or sop_class, sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.PatientID = generate_uid(), generate_uid(), f"MRN-{name}"
    with pydicom_config.disable_value_validation():  # a lower-case modality is what some writers send
        ds.Modality, ds.StudyDate, ds.InstanceNumber = modality, "20210304", 1
    ds.Rows, ds.Columns = image.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelSpacing = [0.5, 0.5]
    ds.PixelData = image.astype(np.uint16).tobytes()
    path = folder / f"{name}.dcm"
    ds.preamble = b"\x00" * 128
    ds.save_as(path, enforce_file_format=meta_class is None)  # enforcing would copy SOPClassUID into the file meta
    return path


def ingest(src: Path, ws: Workspace) -> BatchResult:
    extract = land(src, ws.landing, "dicom", SITE)
    groups, result = scan_headers(extract, ws.landing, SITE)
    for batch in batch_series(groups):
        result.merge(ingest_series_batch(batch, ws.landing, ws.staged, KEYS, SITE, ImagingConfig()))
    return result


def verdict(ds: Dataset, image: np.ndarray) -> pixels.PixelScreen:
    [out] = pixels.screen([pixels.request(ds, image)])
    return out


def header(modality: str = "CR", sop_class: str = SOP_CR, photometric: str = "MONOCHROME2") -> Dataset:
    ds = Dataset()
    ds.Modality, ds.SOPClassUID, ds.PhotometricInterpretation = modality, sop_class, photometric
    return ds


def test_text_drawn_into_a_cr_without_burned_in_annotation_is_quarantined_and_never_recorded(tmp_path,
                                                                                            pseudonym_key):
    ws = Workspace(tmp_path / "ws")
    src = tmp_path / "src"
    dicom(src, "text", draw(radiograph(128), TEXT, (4, 4)))
    extract = land(src, ws.landing, "dicom", SITE)
    result = ingest(src, ws)
    assert (result.received, result.ingested) == (1, 0)
    [rejection] = result.rejections
    assert (rejection.rule, rejection.stage) == ("dicom.burned_in_text", "deidentify")
    assert "frame 0" in rejection.message and "modality:CR" in rejection.message
    [flag] = result.deid.burned_in
    assert flag["reasons"] == ["ocr_text:frame=0"]  # distinct from the header's reasons
    part, _ = new_part(extract, IngestState(ws.state))
    summary = publish(ws, part, result, 0, this_run="run-1")
    assert summary["quarantine_reasons"] == {"dicom.burned_in_text": 1}
    out = [p for p in ws.root.rglob("*") if p.is_file() and "landing" not in p.relative_to(ws.root).parts]
    assert {p.suffix for p in out} >= {".parquet", ".json"}  # the quarantine record, the de-identification report
    written = b"".join(p.read_bytes() for p in out)
    said = json.dumps(asdict(rejection)) + json.dumps(summary) + result.deid.to_json()
    for word in WORDS:
        assert word not in said and word.encode() not in written


@pytest.mark.parametrize("size", [128, 512])  # the generator's size, and a bigger plate
def test_drawn_text_is_read_and_a_clean_generator_image_is_not(size):
    image = radiograph(size, index=1)
    clean, marker = verdict(header(), image), verdict(header(), draw(image, "R", (size - 12, 4)))
    assert clean.rule is None and clean.reason is None
    assert marker.rule is None  # a one-letter side marker is not text that names anyone
    text = verdict(header(), draw(image, TEXT, (4, 4)))
    over_the_lungs = verdict(header(), draw(image, "PORTABLE", (size // 3, size // 2)))
    assert (text.rule, text.frame, text.reason) == ("burned_in_text", 0, "ocr_text:frame=0")
    assert over_the_lungs.rule == "burned_in_text"


def test_text_a_real_ultrasound_burned_in_is_read():
    """pydicom's palette ultrasound carries its scanner's text overlay in the pixels (frequency, gain, a date)."""
    ds = pydicom.dcmread(get_testdata_file("examples_palette.dcm"))
    assert verdict(ds, ds.pixel_array).rule == "burned_in_text"


def test_monochrome1_text_is_read_and_frames_are_bounded():
    stored_low = 4095 - draw(radiograph(128), TEXT, (4, 4))  # MONOCHROME1: what shows white is stored low
    assert verdict(header(photometric="MONOCHROME1"), stored_low).rule == "burned_in_text"
    frames = np.stack([radiograph(128)] * 9 + [draw(radiograph(128), TEXT, (4, 4))])
    req = pixels.request(header(), frames)
    assert sorted(req.pages) == [0, 4, 9]  # max_frames 3: first, middle, last
    assert pixels.screen([req])[0].frame == 9
    assert pixels.request(header("CT", SOP_CT), frames) is None  # not at risk: never read


def test_a_screen_capture_filed_as_cr_is_judged_by_its_file_meta(tmp_path):
    """Before: the dataset's SOP class (CR) hid the file meta's (Secondary Capture); 'cr' missed upper-case rules."""
    path = dicom(tmp_path / "src", "sc", radiograph(64), modality="cr", meta_class=SOP_SC)
    ds = pydicom.dcmread(path)
    assert "sop_class:secondary_capture" in burned_in_reasons(ds)
    with pydicom_config.disable_value_validation():
        ds.file_meta.MediaStorageSOPClassUID, ds.SOPClassUID, ds.Modality = SOP_CR, SOP_SC, "ot"
        assert set(burned_in_reasons(ds)) == {"sop_class:secondary_capture", "modality:OT"}
        ds.Modality, ds.ConversionType, ds.BurnedInAnnotation = "cr", "wsd", "yes"
        assert {"conversion_type:WSD", "BurnedInAnnotation=YES"} <= set(burned_in_reasons(ds))
    result = ingest(tmp_path / "src", Workspace(tmp_path / "ws"))
    assert [(r.rule, r.stage) for r in result.rejections] == [("dicom.burned_in", "deidentify")]
    assert "sop_class:secondary_capture" in result.rejections[0].message


def test_without_tesseract_images_at_risk_are_quarantined_not_passed(tmp_path, monkeypatch):
    monkeypatch.setattr(pytesseract.pytesseract, "tesseract_cmd", str(tmp_path / "no-such-tesseract"))
    src = tmp_path / "src"
    dicom(src, "clean", radiograph(64))
    dicom(src, "dx", radiograph(64, index=2), modality="DX", sop_class="1.2.840.10008.5.1.4.1.1.1.1")
    result = ingest(src, Workspace(tmp_path / "ws"))
    assert result.ingested == 0 and [r.rule for r in result.rejections] == ["dicom.ocr_unavailable"] * 2
    assert all("not installed" in r.message for r in result.rejections)
    assert all(b["reasons"] == ["ocr_unavailable"] for b in result.deid.burned_in)


def test_a_failing_or_slow_tesseract_fails_closed(monkeypatch):
    def timeout(*args, **kwargs):
        raise RuntimeError("Tesseract process timeout")

    monkeypatch.setattr(pytesseract, "image_to_data", timeout)
    out = verdict(header(), radiograph(64))
    assert out.rule == "ocr_unavailable" and "timeout_s" in out.detail
    cfg = replace(default_config(), burned_in=replace(default_config().burned_in, ocr=replace(
        default_config().burned_in.ocr, modalities=frozenset(), sop_classes={})))
    assert pixels.request(header(), radiograph(64), cfg) is None  # the at-risk lists are configuration
