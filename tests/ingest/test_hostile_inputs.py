"""Hostile inputs are bounded (issue 17 item 6): what an adversarial tester sent no longer fails a run or escapes the
accounting. Each input goes to quarantine under a named rule and the rest of the extract ingests; tiny real files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from tasks.deid import Pseudonymizer
from tasks.ingest.accounting import BatchResult
from tasks.ingest.dicom import ImagingConfig, batch_series, ingest_series_batch, scan_headers
from tasks.ingest.fhir import ingest_fhir
from tasks.ingest.landing import land

SITE = "site-a"
KEYS = Pseudonymizer(b"k" * 32)
MR = {"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]}}


def patient(pid: str, mrn: str) -> dict:
    return {"resourceType": "Patient", "id": pid, "identifier": [{**MR, "value": mrn}], "gender": "female",
            "birthDate": "1970-01-01"}


def condition(cid: str, pid: str) -> dict:
    return {"resourceType": "Condition", "id": cid, "subject": {"reference": f"Patient/{pid}"},
            "code": {"coding": [{"system": "http://snomed.info/sct", "code": "59282003"}]}}


def write_ndjson(folder: Path, files: dict[str, list]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, lines in files.items():
        (folder / name).write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return folder


def ingest_folder(src: Path, tmp_path: Path) -> BatchResult:
    landing = tmp_path / "landing"
    result = ingest_fhir(land(src, landing, "fhir", SITE), landing, KEYS, SITE)
    assert result.balanced(), (result.received, result.ingested, result.quarantined)
    return result


def rules(result: BatchResult) -> list[tuple[str, str]]:
    return sorted((r.rule, r.location) for r in result.rejections)


# ---- 3: resource types outside the curated six ------------------------------------------------------------------

def test_an_unsupported_resource_type_is_quarantined_per_line_not_a_failed_run(tmp_path):
    """Before: a MedicationRequest with a subject reached no table and no quarantine: 'accounting broke'. (It is an
    event now, tests/ingest/test_fhir_events.py; a Basic resource, whatever a site puts in it, is still not staged.)"""
    medication = {"resourceType": "Basic", "id": "m1", "code": {"text": "aspirin"},
                  "subject": {"reference": "Patient/p1"}}
    src = write_ndjson(tmp_path / "src", {
        "Patient.ndjson": [patient("p1", "MRN0001")], "Condition.ndjson": [condition("c1", "p1")],
        "Basic.ndjson": [medication, {**medication, "id": "m2"}],
        "Practitioner.ndjson": [{"resourceType": "Practitioner", "id": "dr1"}]})
    result = ingest_folder(src, tmp_path)
    assert (result.received, result.ingested) == (5, 2)
    assert rules(result) == [("fhir.unsupported_type", "line 1")] * 2 + [("fhir.unsupported_type", "line 2")]
    assert all("aspirin" not in r.message for r in result.rejections)


# ---- 4: malformed Bundle entries ------------------------------------------------------------------------------------

def test_malformed_bundle_entries_are_quarantined_and_counted(tmp_path):
    """Before: an entry that is a string failed the run (AttributeError), one without a resource was not counted."""
    bundle = {"resourceType": "Bundle", "id": "b1", "type": "collection", "entry": [
        "a string", {"resource": patient("p1", "MRN0001")}, {"fullUrl": "urn:uuid:no-resource"},
        {"resource": {"resourceType": "Condition", "subject": {"reference": "Patient/p1"}}},  # no id
        {"resource": {"resourceType": "Condition", "id": {"not": "a string"}}}, 7, {"resource": "a string"},
        {"resource": condition("c1", "p1")}]}
    not_a_list = {"resourceType": "Bundle", "id": "b2", "type": "collection", "entry": "a string"}
    result = ingest_folder(write_ndjson(tmp_path / "src", {"bundles.json": [bundle, not_a_list]}), tmp_path)
    assert (result.received, result.ingested) == (9, 2)
    assert rules(result) == [("fhir.bundle_entry", "line 1 entry 1"), ("fhir.bundle_entry", "line 1 entry 3"),
                             ("fhir.bundle_entry", "line 1 entry 6"), ("fhir.bundle_entry", "line 1 entry 7"),
                             ("fhir.bundle_entry", "line 2"), ("fhir.type", "line 1 entry 4"),
                             ("fhir.type", "line 1 entry 5")]


def test_bundle_entries_are_located_by_entry_in_later_rules(tmp_path):
    """Two resources on one Bundle line: a later rule (duplicate, reference) says which entry it means."""
    bundle = {"resourceType": "Bundle", "id": "b1", "type": "collection", "entry": [
        {"resource": patient("p1", "MRN0001")}, {"resource": condition("c1", "p1")},
        {"resource": condition("c1", "p1")}, {"resource": condition("c2", "nobody")}]}
    result = ingest_folder(write_ndjson(tmp_path / "src", {"bundle.json": [bundle]}), tmp_path)
    assert rules(result) == [("fhir.duplicate", "line 1 entry 3"), ("ref.patient", "line 1 entry 4")]


def test_odd_json_values_where_a_resource_belongs(tmp_path):
    """A line that is a list, a number, a resourceType that is not a string: fhir.type, counted, no crash."""
    src = write_ndjson(tmp_path / "src", {"odd.json": ["[1, 2]", "42", '{"resourceType": ["Patient"], "id": "x"}',
                                                       '{"resourceType": "Patient", "id": 5}']})
    result = ingest_folder(src, tmp_path)
    assert rules(result) == [("fhir.type", f"line {n}") for n in (1, 2, 3, 4)]


# ---- 2: DICOM geometry limits ---------------------------------------------------------------------------------------

CT_CLASS = "1.2.840.10008.5.1.4.1.1.2"


def ct_series(folder: Path, patient_id: str, spacing: float, n: int = 3, size: int = 8, claimed: int = 0):
    """A tiny axial CT series, written with pydicom: n slices of size x size, 5 mm apart (headers claiming a
    `claimed` x `claimed` matrix, if given)."""
    folder.mkdir(parents=True, exist_ok=True)
    series, study = generate_uid(), generate_uid()
    for i in range(n):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = CT_CLASS
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.PatientID, ds.Modality = study, series, patient_id, "CT"
        ds.StudyDate, ds.InstanceNumber, ds.ImageType = "20210304", i + 1, ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ImagePositionPatient, ds.ImageOrientationPatient = [0.0, 0.0, 5.0 * i], [1.0, 0, 0, 0, 1.0, 0]
        ds.PixelSpacing, ds.SliceThickness = [spacing, spacing], 5.0
        ds.Rows = ds.Columns = claimed or size
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
        ds.PixelData = np.full((size, size), 1000 + i, dtype=np.int16).tobytes()
        ds.save_as(folder / f"{patient_id}-{i}.dcm", enforce_file_format=True)


def ingest_dicom(src: Path, ws: Path, cfg: ImagingConfig) -> BatchResult:
    landing = ws / "data" / "landing"
    groups, result = scan_headers(land(src, landing, "dicom", SITE), landing, SITE)
    for batch in batch_series(groups):
        result.merge(ingest_series_batch(batch, landing, ws / "data" / "staged", KEYS, SITE, cfg))
    assert result.balanced()
    return result


@pytest.mark.parametrize(("spacing", "cfg"), [
    (1e7, ImagingConfig()),  # before: MONAI asked for petabytes and the whole batch (the extract) failed
    (1e-5, ImagingConfig()),
    (90.0, ImagingConfig(max_series_mb=1)),  # plausible spacing, but a resampled grid over the budget
])
def test_a_series_with_absurd_geometry_is_quarantined_and_the_rest_ingests(tmp_path, spacing, cfg):
    src = tmp_path / "src"
    ct_series(src, "P1", 0.7)
    ct_series(src, "P2", spacing, size=16)
    result = ingest_dicom(src, tmp_path / "ws", cfg)
    assert (result.received, result.ingested) == (6, 3)
    assert {r.rule for r in result.rejections} == {"dicom.geometry_limits"} and result.quarantined == 3
    assert len(result.rows["imaging"]) == 1


def test_an_item_claiming_a_huge_matrix_is_refused_before_decoding(tmp_path):
    src = tmp_path / "src"
    ct_series(src, "P1", 0.7)
    ct_series(src, "P2", 0.7, n=1, claimed=65535)  # Rows x Columns over MAX_PIXELS_PER_ITEM
    result = ingest_dicom(src, tmp_path / "ws", ImagingConfig())
    assert [r.rule for r in result.rejections] == ["dicom.geometry_limits"] and result.ingested == 3


def test_the_memory_budget_must_be_positive():
    with pytest.raises(ValueError):
        ImagingConfig(max_series_mb=0)


# ---- 5: landing: dotfiles, links, loops ------------------------------------------------------------------------------

def hostile_folder(tmp_path: Path) -> tuple[Path, Path]:
    """An extract with one Patient file, two hidden files, links leaving it, aliasing a file, looping, dangling."""
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "secret.ndjson").write_text(json.dumps(patient("p9", "MRN-OUTSIDE")) + "\n")
    src = write_ndjson(tmp_path / "src", {"Patient.ndjson": [patient("p1", "MRN0001")]})
    (src / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (src / ".cache").mkdir()
    (src / ".cache" / "Condition.ndjson").write_text(json.dumps(condition("c1", "p1")) + "\n")
    (src / "stolen.ndjson").symlink_to(outside / "secret.ndjson")
    (src / "elsewhere").symlink_to(outside, target_is_directory=True)
    (src / "again.ndjson").symlink_to(src / "Patient.ndjson")
    (src / "loop").symlink_to(src, target_is_directory=True)
    (src / "gone.ndjson").symlink_to(tmp_path / "nothing-here")
    return src, outside


def test_landing_receives_every_entry_and_reads_nothing_outside(tmp_path):
    """Before: dotfiles vanished, a file link leaving the extract was followed and ingested, a linked folder skipped."""
    src, outside = hostile_folder(tmp_path)
    extract = land(src, tmp_path / "landing", "fhir", SITE)
    assert [f.rel_path for f in extract.files] == ["Patient.ndjson"]
    assert [(r.rel_path, r.rule) for r in extract.refused] == [
        (".DS_Store", "landing.hidden_file"), (".cache/Condition.ndjson", "landing.hidden_file"),
        ("again.ndjson", "landing.symlink_alias"), ("elsewhere", "landing.symlink_outside"),
        ("gone.ndjson", "landing.symlink_broken"), ("loop", "landing.symlink_alias"),
        ("stolen.ndjson", "landing.symlink_outside")]
    stored = {p.name for p in (tmp_path / "landing" / "objects").rglob("*") if p.is_file()}
    from tasks.lineage.hashing import sha256_file
    assert sha256_file(outside / "secret.ndjson") not in stored  # never read, never landed
    assert {r.sha256 for r in extract.refused if r.sha256} <= stored  # hidden files are kept for review


def test_refused_entries_are_quarantined_and_counted_once_at_publish(tmp_path, pseudonym_key):
    from tasks.ingest.publish import has_new, new_part, publish
    from tasks.ingest.quarantine import read_quarantine
    from tasks.ingest.state import IngestState
    from tasks.workspace import Workspace

    src, _ = hostile_folder(tmp_path)
    ws = Workspace(tmp_path / "ws")
    extract = land(src, ws.landing, "fhir", SITE)
    part, _ = new_part(extract, IngestState(ws.state))
    summary = publish(ws, part, ingest_fhir(part, ws.landing, KEYS, SITE), 0, this_run="run-1")
    assert (summary["received"], summary["ingested"], summary["quarantined"]) == (8, 1, 7)
    assert summary["quarantine_reasons"] == {"landing.hidden_file": 2, "landing.symlink_alias": 2,
                                             "landing.symlink_broken": 1, "landing.symlink_outside": 2}
    records = read_quarantine(ws.quarantine)
    assert records.height == 7
    said = json.dumps(records.select("source_uri", "location", "message").rows())
    assert not [name for name in ("ndjson", "DS_Store", "cache", "loop", "elsewhere", "gone") if name in said]
    again, _ = new_part(land(src, ws.landing, "fhir", SITE), IngestState(ws.state))
    assert not has_new(again, metadata=("manifest.json",))  # a rerun counts nothing twice
