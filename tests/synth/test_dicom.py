"""DICOM renderer: valid files, both transfer syntaxes, PHI where de-identification will look, faithful pixels.

Fidelity is measured the way a reader would: from the decoded pixels of the written files, with simple image
measurements (no access to the renderer's masks), correlated with the latent findings across a small cohort.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.encaps import generate_frames
from pydicom.uid import ExplicitVRLittleEndian, RLELossless
from scipy.stats import pearsonr, spearmanr

from tasks.synth import dicom
from tasks.synth.model import biology, sample_evidence
from tasks.synth.record import PatientRecord, make_identity
from tasks.synth.sites import make_sites

N_PATIENTS = 40
SITES = make_sites(3)  # site-a DX native, site-b CR RLE, site-c CR native
_BIO = biology()


def make_record(i: int, missing_rate: float = 0.0) -> PatientRecord:
    ev = sample_evidence(np.random.default_rng([7, i]), _BIO, missing_rate=missing_rate)
    identity = make_identity(np.random.default_rng([7, i, 99]), i % 3, i, ev)
    return PatientRecord(seed=7, index=i, site=SITES[i % 3], identity=identity, evidence=ev)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> list[tuple[PatientRecord, list[Path]]]:
    root = tmp_path_factory.mktemp("dicom")
    records = [make_record(i) for i in range(N_PATIENTS)]
    return [(rec, dicom.write_imaging(rec, root)) for rec in records]


def _read(path: Path) -> pydicom.Dataset:
    return pydicom.dcmread(path)


def _ct_paths(paths: list[Path]) -> list[Path]:
    return [p for p in paths if p.parts[-3] == "ST02"]


def _hu(paths: list[Path]) -> np.ndarray:
    """CT volume in HU, (slices, rows, cols), in instance order."""
    slices = sorted((_read(p) for p in paths), key=lambda ds: int(ds.InstanceNumber))
    return np.stack([ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept) for ds in slices])


def _px(x: float, n: int) -> int:
    """Coordinate in -1..1 across an image of n pixels -> pixel index."""
    return int(round((x + 1.0) / 2.0 * n))


def _run_through(mask: np.ndarray, centre: int) -> int:
    """Length of the run of True in a 1-D mask that contains `centre`."""
    if not mask[centre]:
        return 0
    edges = np.flatnonzero(~mask)
    left, right = edges[edges < centre], edges[edges > centre]
    return int((right[0] if right.size else mask.size) - (left[-1] + 1 if left.size else 0))


def _radiograph_measures(img: np.ndarray) -> tuple[float, float]:
    """(heart width / thorax width, lung brightness as a fraction of soft tissue above air) from one radiograph.

    Intensities are normalised by air (a corner) and soft tissue (below the right hemidiaphragm) so the site's
    gain and offset cancel. The heart is the bright run through the lower mediastinum; the thorax the widest body row.
    """
    img, n = img.astype(float), img.shape[0]
    air = np.median(img[: n // 16, : n // 16])
    soft = np.median(img[_px(0.58, n): _px(0.66, n), _px(-0.35, n): _px(-0.15, n)])
    norm = (img - air) / (soft - air)
    thorax = (norm > 0.25).sum(axis=1).max()
    band = norm[_px(0.30, n) - 3: _px(0.30, n) + 4].mean(axis=0)
    heart = _run_through(band > 1.12, _px(0.06, n))
    lungs = [norm[_px(-0.45, n): _px(0.0, n), _px(a, n): _px(b, n)] for a, b in ((-0.55, -0.25), (0.25, 0.55))]
    return heart / thorax, float(np.mean([lung.mean() for lung in lungs]))


def _defect_measure(hu: np.ndarray) -> float:
    """Largest drop of the pulmonary artery's mean HU along z, as a fraction of its enhancement over soft tissue.

    The artery is the 9 brightest pixels of the z-median image in the anterior mediastinum.
    """
    n = hu.shape[1]
    window = hu[:, _px(-0.6, n): _px(-0.15, n), _px(-0.15, n): _px(0.25, n)].reshape(hu.shape[0], -1)
    core = np.argsort(np.median(window, axis=0))[-9:]
    per_slice = window[:, core].mean(axis=1)
    soft = np.median(hu[:, _px(0.38, n): _px(0.48, n), _px(-0.08, n): _px(0.08, n)])
    base = np.median(per_slice)
    return float((base - per_slice.min()) / (base - soft))


# ------------------------------------------------------------------------------------------------ files
def test_every_file_is_part10_dicom_that_decodes(cohort):
    syntaxes, modalities = set(), set()
    for rec, paths in cohort:
        for path in paths:
            ds = _read(path)
            meta = ds.file_meta
            assert ds.preamble == b"\x00" * 128
            assert meta.MediaStorageSOPClassUID == ds.SOPClassUID
            assert meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
            assert meta.TransferSyntaxUID == rec.site.transfer_syntax
            assert meta.ImplementationClassUID == dicom.IMPLEMENTATION_UID
            assert ds.pixel_array.shape == (ds.Rows, ds.Columns)
            syntaxes.add(meta.TransferSyntaxUID)
            modalities.add((ds.Modality, ds.SOPClassUID))
    assert syntaxes == {ExplicitVRLittleEndian, RLELossless}
    assert {("DX", dicom.SOP_DX), ("CR", dicom.SOP_CR), ("CT", dicom.SOP_CT)} <= modalities


def test_bytes_are_what_pydicom_would_write(cohort):
    """The series writer splices per-instance elements into a pre-encoded header: re-encoding must not change a byte."""
    checked = set()
    for rec, paths in cohort:
        for path in paths[:2]:
            key = (rec.site.transfer_syntax, path.parts[-3])
            if key in checked:
                continue
            buf = io.BytesIO()
            pydicom.dcmwrite(buf, _read(path), enforce_file_format=True)
            assert buf.getvalue() == path.read_bytes(), path
            checked.add(key)
    assert len(checked) == 4  # radiograph and CT, native and RLE


@pytest.mark.parametrize("arr", [
    np.random.default_rng(0).integers(0, 4096, (3, 9, 20)).astype(np.uint16),  # noise: literals
    np.repeat(np.random.default_rng(1).integers(-3, 3, (2, 4, 30)), 9, axis=2).astype(np.int16),  # runs
    np.zeros((1, 3, 300), dtype=np.uint8),  # replicate runs longer than 128
    np.random.default_rng(2).integers(0, 256, (2, 5, 131)).astype(np.uint8),  # literal runs longer than 128
], ids=["noise", "runs", "long-replicate", "long-literal"])
def test_rle_frames_match_pydicom_encoder(arr):
    ds = pydicom.Dataset()
    ds.Rows, ds.Columns, ds.NumberOfFrames, ds.SamplesPerPixel = arr.shape[1], arr.shape[2], arr.shape[0], 1
    ds.BitsAllocated = ds.BitsStored = arr.itemsize * 8
    ds.HighBit, ds.PixelRepresentation = arr.itemsize * 8 - 1, int(arr.dtype.kind == "i")
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.compress(RLELossless, arr if arr.shape[0] > 1 else arr[0], generate_instance_uid=False)
    reference = list(generate_frames(ds.PixelData, number_of_frames=arr.shape[0]))
    assert dicom._rle_frames(arr) == reference


def test_layout_has_no_phi_and_returns_sorted_paths(cohort):
    for rec, paths in cohort:
        for path in paths:
            rel = path.relative_to(path.parents[3]).as_posix()
            assert re.fullmatch(rf"PA{rec.index:06d}/ST0[12]/SE0[12]/IM\d{{4}}\.dcm", rel)
            assert rec.identity.mrn not in str(path) and rec.identity.family not in str(path)
        assert paths == sorted(paths)
        assert len(_ct_paths(paths)) == (16 if rec.evidence.has_ct else 0)


def test_nothing_written_without_imaging(tmp_path):
    rec = next(r for r in (make_record(i, missing_rate=0.5) for i in range(100)) if not r.evidence.present["imaging"])
    assert dicom.write_imaging(rec, tmp_path) == []
    assert list(tmp_path.iterdir()) == []


def test_same_record_gives_identical_bytes(tmp_path):
    rec = next(r for r in (make_record(i) for i in range(1, 30, 3)) if r.evidence.has_ct)  # an RLE site with CT
    first, second = dicom.write_imaging(rec, tmp_path / "a"), dicom.write_imaging(rec, tmp_path / "b")
    assert [p.relative_to(tmp_path / "a") for p in first] == [p.relative_to(tmp_path / "b") for p in second]
    assert all(a.read_bytes() == b.read_bytes() for a, b in zip(first, second, strict=True))


def test_uids_are_unique_across_the_cohort(cohort):
    instances, studies = set(), {}
    for _, paths in cohort:
        for path in paths:
            ds = _read(path)
            assert ds.SOPInstanceUID not in instances
            instances.add(ds.SOPInstanceUID)
            studies.setdefault(ds.StudyInstanceUID, set()).add(path.parts[-4:-2])
    assert all(len(folders) == 1 for folders in studies.values())  # one study UID per study folder


def test_custom_sizes(tmp_path):
    rec = next(r for r in (make_record(i) for i in range(30)) if r.evidence.has_ct)
    paths = dicom.write_imaging(rec, tmp_path, cxr_size=64, ct_shape=(5, 32, 48))
    assert _read(paths[0]).pixel_array.shape == (64, 64)
    assert _hu(_ct_paths(paths)).shape == (5, 32, 48)


# ------------------------------------------------------------------------------------------------ CT geometry
def test_ct_series_loads_with_monai(cohort):
    from monai.transforms import LoadImage

    loader = LoadImage(image_only=True, reader="PydicomReader")
    done = set()
    for rec, paths in cohort:
        if not rec.evidence.has_ct or rec.site.transfer_syntax in done:
            continue
        image = loader(str(_ct_paths(paths)[0].parent))
        assert sorted(image.shape) == [16, 64, 64]
        assert image.shape[-1] == 16  # slices stacked last
        spacing = [float(s) for s in image.meta["spacing"]]
        assert spacing == pytest.approx([rec.site.ct_spacing, rec.site.ct_spacing, rec.site.ct_thickness])
        assert -1400 < float(image.min()) and float(image.max()) <= 3071
        done.add(rec.site.transfer_syntax)
    assert done == {ExplicitVRLittleEndian, RLELossless}


def test_ct_positions_step_down_by_slice_thickness(cohort):
    rec, paths = next((r, p) for r, p in cohort if r.evidence.has_ct)
    slices = [_read(p) for p in _ct_paths(paths)]
    z = [float(ds.ImagePositionPatient[2]) for ds in slices]
    assert [int(ds.InstanceNumber) for ds in slices] == list(range(1, 17))
    assert np.diff(z) == pytest.approx(-rec.site.ct_thickness)
    assert [float(v) for v in slices[0].ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
    assert float(slices[0].SliceThickness) == float(slices[0].SpacingBetweenSlices) == rec.site.ct_thickness
    assert slices[0].RescaleType == "HU" and float(slices[0].RescaleIntercept) == -1024.0


def test_ct_values_are_plausible_hounsfield_units(cohort):
    for rec, paths in cohort:
        if not rec.evidence.has_ct:
            continue
        hu, n = _hu(_ct_paths(paths)), 64
        air = np.median(hu[:, :4, :4])
        soft = np.median(hu[:, _px(0.38, n): _px(0.48, n), _px(-0.08, n): _px(0.08, n)])
        vessel = np.median(hu, axis=0)[_px(-0.6, n): _px(-0.15, n), _px(-0.15, n): _px(0.25, n)].max()
        assert -1200 < air < -750, rec.site.key
        assert -50 < soft < 150
        assert 200 < vessel < 450


# ------------------------------------------------------------------------------------------------ fidelity
def test_radiograph_heart_and_lungs_track_the_findings(cohort):
    rows = [(rec.evidence, _radiograph_measures(_read(paths[0]).pixel_array)) for rec, paths in cohort if paths]
    ctr = np.array([ev.ctr for ev, _ in rows])
    log_opacity = np.array([ev.log_opacity for ev, _ in rows])
    heart_ratio = np.array([m[0] for _, m in rows])
    lung = np.array([m[1] for _, m in rows])
    base = dicom.CXR_LEVELS
    clear_lung = (base["lung"] - base["air"]) / (base["soft"] - base["air"])
    assert pearsonr(ctr, heart_ratio).statistic > 0.9
    assert np.abs(heart_ratio - ctr).mean() < 0.05  # read as a cardiothoracic ratio, not just monotone in it
    assert pearsonr(log_opacity, np.log(np.clip(lung - clear_lung, 1e-3, None))).statistic > 0.9


def test_ct_defect_separates_patients_by_log_defect(cohort):
    rows = [(rec.evidence.log_defect, _defect_measure(_hu(_ct_paths(paths)))) for rec, paths in cohort
            if rec.evidence.has_ct]
    log_defect, measured = np.array(rows).T
    assert len(rows) >= 12
    assert spearmanr(log_defect, measured).statistic > 0.85
    deep = log_defect > np.median(log_defect)
    assert measured[deep].min() > np.median(measured[~deep])


# ------------------------------------------------------------------------------------------------ PHI
def _nested_person_and_date(ds: pydicom.Dataset, depth: int = 0) -> set[tuple[str, int]]:
    """(VR, sequence depth) of every PN and DA value found inside sequences."""
    found = set()
    for elem in ds:
        if elem.VR == "SQ":
            for item in elem.value:
                found |= _nested_person_and_date(item, depth + 1)
        elif elem.VR in ("PN", "DA") and depth and elem.value:
            found.add((elem.VR, depth))
    return found


def test_phi_is_where_real_files_carry_it(cohort):
    rec, paths = next((r, p) for r, p in cohort if r.evidence.has_ct)
    who = rec.identity
    for ds in (_read(paths[0]), _read(_ct_paths(paths)[0])):
        assert ds.PatientName == f"{who.family}^{who.given}" and ds.PatientID == who.mrn
        assert ds.IssuerOfPatientID and ds.OtherPatientIDsSequence[0].PatientID == who.ssn
        assert ds.PatientBirthDate == who.birth_date.strftime("%Y%m%d") and ds.PatientSex in ("M", "F")
        assert ds.PatientAge == f"{int(rec.evidence.age):03d}Y"
        assert who.street in ds.PatientAddress and ds.PatientTelephoneNumbers == who.phone
        assert ds.AccessionNumber.startswith(who.accession) and ds.StudyID
        assert ds.InstitutionName == rec.site.institution and ds.InstitutionAddress
        assert ds.ReferringPhysicianName == f"{who.referring[1]}^{who.referring[0]}"
        assert ds.PerformingPhysicianName and ds.OperatorsName and ds.StationName
        admit, discharge = who.admit.strftime("%Y%m%d%H%M%S"), who.discharge.strftime("%Y%m%d%H%M%S")
        for kind in ("Study", "Series", "Acquisition", "Content"):
            assert admit <= ds[f"{kind}Date"].value + ds[f"{kind}Time"].value <= discharge
        request = ds.RequestAttributesSequence[0]
        assert request.RequestedProcedureID and request.ScheduledProcedureStepID
        assert {("PN", 3), ("DA", 3)} <= _nested_person_and_date(ds)
        block = ds.private_block(0x0011, "MMFM SYNTH")
        assert block[0x01].value == who.mrn and block[0x02].value == who.full_name
        assert ds.BurnedInAnnotation == "NO" and ds.BodyPartExamined == "CHEST"
        assert ds.Manufacturer == rec.site.manufacturer and ds.ManufacturerModelName == rec.site.model
    assert _read(paths[0]).AccessionNumber != _read(_ct_paths(paths)[0]).AccessionNumber


def test_ages_over_89_are_written_as_they_are(tmp_path):
    rec = next(r for r in (make_record(i) for i in range(400)) if r.evidence.age >= 90)
    assert _read(dicom.write_imaging(rec, tmp_path)[0]).PatientAge == f"{int(rec.evidence.age):03d}Y"


def test_screen_save_has_burned_in_text(tmp_path):
    """~3% of imaged patients get a secondary capture whose pixels carry a bright text bar."""
    def has_screen_save(i: int) -> bool:
        return make_record(i).rng("dicom-sc").random() < dicom.P_SCREEN_SAVE

    index = next(i for i in range(1000) if has_screen_save(i))
    paths = dicom.write_imaging(make_record(index), tmp_path)
    screen = [p for p in paths if p.parts[-2] == "SE02"]
    assert len(screen) == 1
    ds = _read(screen[0])
    assert ds.SOPClassUID == dicom.SOP_SC and ds.BurnedInAnnotation == "YES" and ds.Modality == "OT"
    assert ds.PatientID == make_record(index).identity.mrn
    pixels = ds.pixel_array
    assert (pixels[3:10] == 255).mean() > 0.2 and (pixels[20:] == 255).mean() < 0.01
    assert sum(has_screen_save(i) for i in range(1000)) == pytest.approx(30, abs=12)


def test_uids_are_valid_uuid_derived(cohort):
    rec, paths = cohort[0]
    ds = _read(paths[0])
    for uid in (ds.SOPInstanceUID, ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID,
                ds.file_meta.ImplementationClassUID):
        assert re.fullmatch(r"2\.25\.(0|[1-9]\d*)", uid) and len(uid) <= 64
        assert int(uid[5:]) < 2**128


def test_every_single_image_file_loads_with_monai(cohort):
    """Radiographs and screen saves (one file each) open with MONAI's DICOM loader, both transfer syntaxes."""
    from monai.transforms import LoadImage

    loader = LoadImage(image_only=True, reader="PydicomReader")
    files = [p for _, paths in cohort for p in paths if p.parts[-3] == "ST01"]
    assert files
    for path in files:
        image = loader(str(path))
        assert image.ndim >= 2 and float(image.max()) > float(image.min()), path
