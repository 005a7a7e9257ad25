"""What of a DICOM header reaches data/staged/imaging (issue 17 (b)): coded values and keyed UIDs only. Canary
strings in Manufacturer, ManufacturerModelName and a free-text BodyPartExamined, and a private SOP Class UID, never
reach the staged parquet (nor any other output); allow-listed values do, so monitoring still sees the scanner."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
from pydicom import config as pydicom_config
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, RLELossless, generate_uid

from tasks.deid import Pseudonymizer
from tasks.deid.dicom import staged_fields
from tasks.ingest.dicom import ImagingConfig, batch_series, ingest_series_batch, scan_headers
from tasks.ingest.landing import land
from tasks.ingest.publish import new_part, publish
from tasks.ingest.state import IngestState
from tasks.synth.dicom import SOP_CR, render_radiograph
from tasks.synth.generate import SynthConfig, make_record
from tasks.synth.model import biology
from tasks.synth.sites import make_sites
from tasks.workspace import Workspace

SITE = "site-a"
KEYS = Pseudonymizer(b"k" * 32)
PRIVATE_CLASS = "1.3.6.1.4.1.99999.42.7.1"  # a vendor's own SOP class: not under 1.2.840.10008.
CANARIES = {"Manufacturer": "CANARYVENDOR Imaging", "ManufacturerModelName": "CANARYMODEL 9000",
            "BodyPartExamined": "CANARYBODYPART"}


def write(folder: Path, name: str, index: int, **attrs: str) -> None:
    """A one-image CR series written with pydicom, its header set from `attrs` (values as some writers send them)."""
    folder.mkdir(parents=True, exist_ok=True)
    sop_class = attrs.pop("SOPClassUID", SOP_CR)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.PatientID = generate_uid(), generate_uid(), f"MRN-{name}"
    ds.Modality, ds.StudyDate, ds.InstanceNumber = "CR", "20210304", 1
    with pydicom_config.disable_value_validation():
        for keyword, value in attrs.items():
            setattr(ds, keyword, value)
    record = make_record(SynthConfig(patients=4, sites=3, seed=7), make_sites(3), biology(), index)
    image = render_radiograph(record, 64)
    ds.Rows, ds.Columns = image.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelSpacing, ds.PixelData = [0.5, 0.5], image.tobytes()
    ds.preamble = b"\x00" * 128
    ds.save_as(folder / f"{name}.dcm", enforce_file_format=True)


@pytest.fixture(scope="module")
def staged(tmp_path_factory) -> tuple[Workspace, pl.DataFrame, dict]:
    """One extract: canaries twice (same vendor, two patients), an allow-listed vendor in odd case, a private SOP
    class; ingested and published like the flow does."""
    root = tmp_path_factory.mktemp("allowlist")
    src, ws = root / "src", Workspace(root / "ws")
    write(src, "canary1", 0, **CANARIES, SeriesDescription="CANARYSERIES")
    write(src, "canary2", 1, **CANARIES)
    write(src, "listed", 2, Manufacturer="Philips ", ManufacturerModelName="", BodyPartExamined="chest")
    write(src, "private", 3, SOPClassUID=PRIVATE_CLASS, Manufacturer="SIEMENS", BodyPartExamined="CHEST")
    extract = land(src, ws.landing, "dicom", SITE)
    groups, result = scan_headers(extract, ws.landing, SITE)
    for batch in batch_series(groups):
        result.merge(ingest_series_batch(batch, ws.landing, ws.staged, KEYS, SITE, ImagingConfig()))
    part, _ = new_part(extract, IngestState(ws.state))
    with pytest.MonkeyPatch.context() as mp:  # publish's lineage event needs a key in the environment
        mp.setenv("MMFM_PSEUDONYM_KEY", "test-key-" + "0" * 40)
        summary = publish(ws, part, result, 0, this_run="run-1")
    assert summary["ingested"] == 4 and summary["quarantined"] == 0, summary["quarantine_reasons"]
    return ws, pl.read_parquet(str(ws.staged / "imaging" / "*.parquet")), summary


def test_free_text_and_a_private_sop_class_never_reach_staged_tables(staged):
    ws, rows, _ = staged
    files = [p for p in ws.root.rglob("*") if p.is_file() and "landing" not in p.relative_to(ws.root).parts]
    assert any(p.suffix == ".parquet" and "imaging" in p.parts for p in files)
    written = b"".join(p.read_bytes() for p in files)
    for value in (*CANARIES.values(), "CANARY", PRIVATE_CLASS):
        assert value.encode() not in written, value
    assert rows.height == 4 and not [c for c in rows.columns if "description" in c.lower()]


def test_staged_values_are_coded_or_keyed(staged):
    _, rows, _ = staged
    by_vendor = rows.group_by("manufacturer").agg(pl.len(), pl.col("model").first(), pl.col("body_part").first())
    tokens = [m for m in rows["manufacturer"] if m.startswith("keyed-")]
    assert len(tokens) == 2 and len(set(tokens)) == 1  # one vendor, one token: a scanner change still shows
    assert set(rows["manufacturer"]) - set(tokens) == {"PHILIPS", "SIEMENS"}  # the listed spelling
    keyed = by_vendor.filter(pl.col("manufacturer") == tokens[0]).row(0, named=True)
    assert keyed["model"].startswith("keyed-") and keyed["body_part"] is None  # free text: keyed, or dropped
    assert set(rows["body_part"].drop_nulls()) == {"CHEST"}  # "chest" is a defined term once in upper case
    assert rows.filter(pl.col("manufacturer") == "PHILIPS")["model"].to_list() == [None]
    classes = set(rows["sop_class_uid"])
    assert SOP_CR in classes and len(classes) == 2
    private = (classes - {SOP_CR}).pop()
    assert private.startswith("2.25.") and private == KEYS.uid(PRIVATE_CLASS)


def test_staged_fields_keep_codes_only():
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = "1.3.6.1.4.1.99999.1"  # a private transfer syntax: not a code we know
    with pydicom_config.disable_value_validation():
        ds.Modality, ds.BodyPartExamined, ds.StudyDate = "ct", "LEFT LUNG ZONE", "20190102"
    out = staged_fields(ds, KEYS)
    assert (out["modality"], out["body_part"], out["transfer_syntax"], out["study_date"]) == (
        "CT", None, None, "2019-01-02")
    ds.Modality, ds.file_meta.TransferSyntaxUID = "NOTAMODALITY", RLELossless
    assert staged_fields(ds, KEYS)["modality"] == "OT" and staged_fields(ds, KEYS)["transfer_syntax"] == RLELossless
    assert staged_fields(Dataset(), KEYS)["manufacturer"] is None


def test_the_imaging_columns_monitoring_and_contracts_read_are_all_there(staged):
    _, rows, _ = staged
    contract = {"patient_id", "site", "study_id", "series_id", "modality", "n_instances", "shape", "spacing", "dtype",
                "value_min", "value_max", "value_mean", "shard", "study_date"}
    monitoring = {"manufacturer", "model"}  # tasks/monitoring/features.py: the scanner, as a category
    assert contract | monitoring <= set(rows.columns)
    assert set(rows["modality"]) == {"CR"} and np.all(rows["n_instances"].to_numpy() == 1)
