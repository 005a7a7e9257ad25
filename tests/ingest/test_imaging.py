"""DICOM ingest (tasks/ingest/dicom.py) on a small synthetic PACS export: accounting, quarantine rules, geometry, ids,
shifted dates, PHI canaries, byte-determinism across runs and batch sizes, zip archives read in place.

Seed 15 rather than a round number: with 12 patients it is the first small cohort whose site-a export has CT series,
a secondary capture and truncated files (in a header and in pixel data) all at once.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import RLELossless

from tasks.deid import Pseudonymizer
from tasks.ingest.accounting import BatchResult
from tasks.ingest.dicom import ImagingConfig, batch_series, ingest_series_batch, scan_headers
from tasks.ingest.dicom_shards import Decoded, assemble, npz_bytes, write_shard
from tasks.ingest.landing import land
from tasks.synth.generate import SynthConfig, generate

SITE = "site-a"
KEYS = Pseudonymizer(b"k" * 32)
CFG = ImagingConfig()
SYNTH = SynthConfig(patients=12, sites=2, seed=15, corrupt_rate=0.15, cxr_size=64, ct_shape=(6, 32, 32))
SC_CLASS = "1.2.840.10008.5.1.4.1.1.7"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def ingest(source: Path, ws: Path, site: str = SITE, max_items: int = 64, threads: bool = False) -> BatchResult:
    """Land `source` into workspace `ws` and run scan + every batch, merging in batch order like the flow does."""
    extract = land(source, ws / "data" / "landing", "dicom", site)
    groups, result = scan_headers(extract, ws / "data" / "landing", site)
    batches = batch_series(groups, max_items=max_items)

    def one(batch):
        return ingest_series_batch(batch, ws / "data" / "landing", ws / "data" / "staged", KEYS, site, CFG)

    if threads:  # submitted last batch first, on two threads: the output must not care
        with ThreadPoolExecutor(max_workers=2) as pool:
            futures = {i: pool.submit(one, b) for i, b in reversed(list(enumerate(batches)))}
            parts = [futures[i].result() for i in range(len(batches))]
    else:
        parts = [one(b) for b in batches]
    for part in parts:
        result.merge(part)
    return result


def shards(ws: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((ws / "data" / "staged" / "images").glob("*.npz"))}


def arrays(ws: Path) -> dict[str, np.ndarray]:
    out = {}
    for p in sorted((ws / "data" / "staged" / "images").glob("*.npz")):
        with np.load(p) as npz:
            out.update({k: npz[k] for k in npz.files})
    return out


def rows(result: BatchResult, drop: tuple[str, ...] = ()) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in drop} for r in result.rows.get("imaging", [])]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cohort")
    generate(out, SYNTH)
    return out


@pytest.fixture(scope="module")
def files(cohort) -> list[Path]:
    return sorted((cohort / SITE / "dicom").rglob("*.dcm"))


@pytest.fixture(scope="module")
def run_a(cohort, tmp_path_factory) -> tuple[Path, BatchResult]:
    ws = tmp_path_factory.mktemp("ws_a")
    return ws, ingest(cohort / SITE / "dicom", ws)


@pytest.fixture(scope="module")
def truncated(cohort) -> set[str]:
    lines = [json.loads(line) for line in (cohort / "truth" / "corruptions.jsonl").read_text().splitlines()]
    return {sha256(cohort / c["file"]) for c in lines if c["kind"] == "truncated_dicom" and c["site"] == SITE}


def headers(path: Path) -> Dataset:
    return pydicom.dcmread(path, stop_before_pixels=True)


def intact(files: list[Path], truncated: set[str]) -> list[Path]:
    return [p for p in files if sha256(p) not in truncated]


def test_every_item_is_ingested_or_quarantined_once(run_a, files):
    _, result = run_a
    assert result.received == len(files)
    assert result.balanced()
    ingested = [s for r in rows(result) for s in r["source_sha256s"]]
    rejected = [r.sha256 for r in result.rejections]
    assert len(ingested) == result.ingested and len(set(ingested)) == len(ingested)
    assert set(ingested).isdisjoint(rejected)
    assert sorted(ingested + rejected) == sorted(sha256(p) for p in files)


def test_truncated_files_and_secondary_captures_are_quarantined(run_a, files, truncated):
    _, result = run_a
    by_sha = {r.sha256: r for r in result.rejections}
    assert truncated and truncated <= set(by_sha)
    assert {by_sha[s].rule for s in truncated} <= {"dicom.readable", "dicom.pixel_decode"}
    screens = [p for p in intact(files, truncated) if headers(p).SOPClassUID == SC_CLASS]
    assert screens, "the cohort should hold a secondary capture"
    for p in screens:
        rejection = by_sha[sha256(p)]
        assert (rejection.rule, rejection.stage) == ("dicom.burned_in", "deidentify")
    assert {b["sha256"] for b in result.deid.burned_in} == {sha256(p) for p in screens}
    assert result.deid.dicom_files == result.ingested + len(screens) + sum(
        r.rule == "dicom.series_geometry" for r in result.rejections)
    assert all(r.source_uri.startswith("data/landing/objects/") and r.message for r in result.rejections)


def test_ct_volumes_are_resampled_to_the_configured_grid_in_hu(run_a):
    ws, result = run_a
    cts = [r for r in rows(result) if r["modality"] == "CT"]
    assert cts
    data = arrays(ws)
    for row in cts:
        volume = data[row["key"]]
        assert row["shape"] == [1, *CFG.ct_shape] == list(volume.shape) and volume.dtype == np.float32
        assert row["spacing"] == [CFG.ct_spacing[2], CFG.ct_spacing[1], CFG.ct_spacing[0]]
        assert row["original_shape"][0] == 1 and row["original_shape"][1] == row["n_instances"]
        assert volume.min() < -500  # air and lung
        body = volume[volume > -500]  # lung (with opacities), soft tissue, heart, contrast-filled vessel
        soft = (body > 0) & (body < 100)  # soft tissue and blood pool around 40-50 HU
        assert soft.mean() > 0.2 and 0 < float(np.percentile(body, 75)) < 100
        assert row["value_min"] == pytest.approx(float(volume.min()))


def test_radiographs_are_resized_images_of_stored_values(run_a):
    ws, result = run_a
    dx = [r for r in rows(result) if r["modality"] in ("DX", "CR")]
    assert dx
    data = arrays(ws)
    for row in dx:
        image = data[row["key"]]
        assert row["shape"] == [1, *CFG.image_size] == list(image.shape) and row["dtype"] == "float32"
        assert 0 <= image.min() and image.max() <= 4095  # BitsStored 12, no rescale
        assert row["shard"].startswith("data/staged/images/shard-") and (ws / row["shard"]).is_file()


def test_rows_carry_codes_and_keyed_names_only(run_a):
    """Radiographs passed the OCR screen (CR/DX are read for burned-in text); header columns are coded (issue 17)."""
    _, result = run_a
    assert {r["modality"] for r in rows(result)} >= {"CT"} and any(r["modality"] in ("CR", "DX") for r in rows(result))
    for row in rows(result):
        assert row["body_part"] == "CHEST" and row["manufacturer"] == "GE MEDICAL SYSTEMS"  # deid.yaml allow-lists
        assert row["model"].startswith("keyed-") and row["sop_class_uid"].startswith("1.2.840.10008.")
    assert len({r["model"] for r in rows(result)}) == 1  # one scanner model, one token


def test_ids_are_keyed_consistent_and_dates_shifted(run_a, files):
    _, result = run_a
    by_sha = {sha256(p): p for p in files}
    studies: dict[str, set[str]] = {}
    for row in rows(result):
        sources = [headers(by_sha[s]) for s in row["source_sha256s"]]
        assert {KEYS.uid(ds.SeriesInstanceUID) for ds in sources} == {row["series_id"]}
        assert {KEYS.uid(ds.StudyInstanceUID) for ds in sources} == {row["study_id"]}
        mrn = str(sources[0].PatientID)
        assert row["patient_id"] == KEYS.patient(SITE, mrn)
        raw = sources[0].StudyDate
        shifted = date(int(raw[:4]), int(raw[4:6]), int(raw[6:])) + timedelta(KEYS.date_offset_days(row["patient_id"]))
        assert row["study_date"] == shifted.isoformat()
        studies.setdefault(row["patient_id"], set()).add(row["study_id"])
    assert any(len(s) == 2 for s in studies.values()), "a patient with a radiograph and a CT has two study ids"


def test_no_phi_in_shards_rows_or_rejections(run_a, files):
    ws, result = run_a
    canaries = set()
    for p in files:
        try:
            ds = headers(p)
            canaries |= {ds.PatientID, ds.PatientBirthDate, ds.InstitutionName, ds.AccessionNumber,
                         ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID, ds.PatientTelephoneNumbers,
                         ds.OtherPatientIDsSequence[0].PatientID, *str(ds.PatientName).split("^"),
                         ds.StudyDate, f"{ds.StudyDate[:4]}-{ds.StudyDate[4:6]}-{ds.StudyDate[6:]}"}
        except (AttributeError, IndexError):  # truncated headers: the others carry the same patients
            continue
    assert len(canaries) > 30
    text = json.dumps(rows(result)) + json.dumps([asdict(r) for r in result.rejections]) + result.deid.to_json()
    blobs = [text.encode(), *shards(ws).values(), *(n.encode() for n in shards(ws))]
    leaks = {c for c in canaries if any(str(c).encode() in blob for blob in blobs)}
    assert not leaks


def test_same_input_gives_same_bytes_and_rows_whatever_the_batching(run_a, cohort, tmp_path):
    ws_a, a = run_a
    again = ingest(cohort / SITE / "dicom", tmp_path / "again")
    assert shards(tmp_path / "again") == shards(ws_a)
    assert rows(again) == rows(a)
    small = ingest(cohort / SITE / "dicom", tmp_path / "small", max_items=4, threads=True)
    assert len(shards(tmp_path / "small")) > len(shards(ws_a))
    assert rows(small, drop=("shard",)) == rows(a, drop=("shard",))
    big, little = arrays(ws_a), arrays(tmp_path / "small")
    assert big.keys() == little.keys() and all(np.array_equal(big[k], little[k]) for k in big)
    assert sorted(map(asdict, small.rejections), key=str) == sorted(map(asdict, a.rejections), key=str)


def test_zip_archive_ingests_like_the_loose_files(cohort, files, truncated, tmp_path):
    chosen = [p for p in files if p.parts[-4] in {p.parts[-4] for p in files if p.parts[-3] == "ST02"}][:12]
    root = cohort / SITE / "dicom"
    loose = tmp_path / "loose"
    for p in chosen:
        (loose / p.relative_to(root)).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(p, loose / p.relative_to(root))
    archive = tmp_path / "export.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.mkdir("PA")  # a directory entry is structure, not an item
        for p in chosen:
            zf.write(p, p.relative_to(root).as_posix())
    from_loose, from_zip = ingest(loose, tmp_path / "ws_loose"), ingest(archive, tmp_path / "ws_zip")
    assert from_zip.received == from_loose.received == len(chosen) and from_zip.balanced()
    assert rows(from_zip) and rows(from_zip) == rows(from_loose)
    assert shards(tmp_path / "ws_zip") == shards(tmp_path / "ws_loose")
    zip_sha = sha256(archive)
    for r in from_zip.rejections:
        assert r.sha256 == zip_sha and r.source_uri.startswith(f"data/landing/objects/{zip_sha[:2]}/{zip_sha}!")
        assert "PA0" not in r.source_uri + r.location + r.message
    assert sorted((r.rule, r.message) for r in from_zip.rejections) == sorted(
        (r.rule, r.message) for r in from_loose.rejections)


def _raw_dataset_bytes(path: Path) -> bytes:
    """The data set alone: no preamble, no 'DICM', no file meta (as some old exports and PACS dumps are)."""
    ds = pydicom.dcmread(path)
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, True
    write_dataset(fp, ds)
    return fp.getvalue()


def test_odd_items_get_their_own_rules(run_a, files, truncated, tmp_path):
    """Raw data set (read), foreign file, non-image (an audio waveform: SR/RT/PDF objects are catalogued, see
    test_dicom_breadth.py), missing PatientID, repeated file, odd-shaped CT slice."""
    _, a = run_a
    ok = intact(files, truncated)
    cxr = next(p for p in ok if headers(p).Modality in ("DX", "CR"))
    series = {}
    for p in ok:
        series.setdefault(str(headers(p).SeriesInstanceUID), []).append(p)
    ct = next(v for v in series.values() if len(v) == SYNTH.ct_shape[0] and headers(v[0]).Modality == "CT")
    src = tmp_path / "odd"
    src.mkdir()
    (src / "raw.dcm").write_bytes(_raw_dataset_bytes(cxr))
    (src / "notes.txt").write_text("not a DICOM file at all\n" * 20)
    report = Dataset()
    report.SOPClassUID, report.SeriesInstanceUID, report.PatientID = "1.2.840.10008.5.1.4.1.1.9.4.1", "1.2.3", "X1"
    report.save_as(src / "report.dcm", implicit_vr=True, little_endian=True)
    nobody = pydicom.dcmread(ct[0])
    del nobody.PatientID
    nobody.save_as(src / "nobody.dcm")
    for i, p in enumerate(ct[1:]):
        shutil.copyfile(p, src / f"ct{i}.dcm")
    shutil.copyfile(ct[1], src / "ct_again.dcm")
    odd = pydicom.dcmread(ct[-1])  # a slice of the same series with a smaller matrix
    odd.PixelData = odd.pixel_array[:16, :16].tobytes()
    odd.Rows = odd.Columns = 16
    odd.SOPInstanceUID = "1.2.3.4.5"
    odd.save_as(src / "odd_shape.dcm")
    result = ingest(src, tmp_path / "ws")
    assert result.received == 11 and result.balanced()
    rules = sorted(r.rule for r in result.rejections)
    assert rules == ["dicom.duplicate", "dicom.not_image", "dicom.readable", "dicom.required",
                     "dicom.series_geometry"]
    by_modality = {r["modality"]: r for r in rows(result)}
    assert by_modality["CT"]["n_instances"] == len(ct) - 1  # the odd slice went, the rest stayed
    original = {r["series_id"]: r for r in rows(a)}[by_modality[headers(cxr).Modality]["series_id"]]
    assert by_modality[headers(cxr).Modality]["value_mean"] == original["value_mean"]


def test_rle_lossless_site_decodes(cohort, tmp_path):
    result = ingest(cohort / "site-b" / "dicom", tmp_path / "ws", site="site-b")
    assert result.balanced() and result.ingested > 0
    assert {r["transfer_syntax"] for r in rows(result)} == {RLELossless}


def test_slices_outside_the_longest_even_run_are_rejected():
    def item(k: int, z: float, shape=(4, 4)) -> Decoded:
        return Decoded(ref=k, order=(k,), pixels=np.zeros(shape, np.float32), position=(0.0, 0.0, z),
                       orientation=(1, 0, 0, 0, 1, 0), pixel_spacing=(1.0, 1.0), slice_spacing=None)

    rejected = []
    items = [item(0, 0), item(1, 5), item(2, 15), item(3, 20), item(4, 25), item(5, 25), item(6, 30, (2, 2))]
    out = assemble(items, volume=True, reject=lambda d, msg: rejected.append(d.ref))
    assert [d.ref for d in out.kept] == [2, 3, 4] and sorted(rejected) == [0, 1, 5, 6]
    assert out.spacing == (5.0, 1.0, 1.0) and out.stack.shape == (3, 4, 4)


def test_npz_bytes_are_stable_and_loadable(tmp_path):
    data = {"2.25.2": np.arange(6, dtype=np.float32).reshape(1, 2, 3), "2.25.1": np.ones((1, 2), np.float32)}
    assert npz_bytes(data) == npz_bytes(dict(reversed(list(data.items()))))
    first, second = write_shard(data, tmp_path / "a"), write_shard(data, tmp_path / "b")
    assert first.name == second.name and first.read_bytes() == second.read_bytes()
    with np.load(io.BytesIO(first.read_bytes())) as npz:
        assert sorted(npz.files) == ["2.25.1", "2.25.2"] and np.array_equal(npz["2.25.2"], data["2.25.2"])
    assert write_shard({}, tmp_path / "c") is None


def test_config_takes_params_lists_and_refuses_nonsense():
    assert ImagingConfig(image_size=[32, 32], ct_spacing=[1, 1, 2]).ct_spacing == (1.0, 1.0, 2.0)
    with pytest.raises(ValueError):
        ImagingConfig(ct_shape=(16, 48))
    with pytest.raises(ValueError):
        batch_series([], max_items=0)
