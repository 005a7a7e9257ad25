"""Render a patient's imaging as DICOM: a chest radiograph, a CT pulmonary angiogram, now and then a screen save.

Why render pixels from the latent findings: the truth file's posterior conditions on heart size (ctr), airspace
opacity (log_opacity) and the pulmonary-artery filling defect (log_defect), so the images must show exactly these and
little else. Each finding maps linearly onto a pixel quantity a model can measure; the site's scanner (scale, offset,
blur, noise) is nuisance on top. Headers carry PHI where real files do, so de-identification is tested on them.

Layout (DICOMDIR-style, no PHI in paths): root/PA{index:06d}/ST{study:02d}/SE{series:02d}/IM{instance:04d}.dcm
    ST01/SE01  radiograph (DX or CR, one image)        ST01/SE02  secondary capture (screen save; ~3% of patients)
    ST02/SE01  CT pulmonary angiogram (one file per slice, only when evidence.has_ct)
Everything random comes from `record.rng(...)` streams and UIDs are name-based UUIDs, so a record gives the same bytes.
One file (~450 lines) on purpose: the pixel renderers and the headers they sit in share the site's scanner model
and the record's random streams; split apart, a change to one would silently change the other's bytes.
"""

from __future__ import annotations

import struct
import uuid
import zlib
from bisect import bisect
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from itertools import pairwise
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.sequence import Sequence
from pydicom.uid import RLELossless
from scipy import ndimage

from tasks.synth.notes import ct_accession, exam_times
from tasks.synth.record import FAMILY, FIRST_FEMALE, FIRST_MALE, PatientRecord
from tasks.synth.sites import Site

SOP_DX = "1.2.840.10008.5.1.4.1.1.1.1"
SOP_CR = "1.2.840.10008.5.1.4.1.1.1"
SOP_CT = "1.2.840.10008.5.1.4.1.1.2"
SOP_SC = "1.2.840.10008.5.1.4.1.1.7"
P_SCREEN_SAVE = 0.03
IMPLEMENTATION_UID = f"2.25.{uuid.uuid5(uuid.NAMESPACE_URL, 'urn:mmfm:synth:dicom').int}"
IMPLEMENTATION_VERSION = "MMFM_SYNTH_1"

# Ellipses as (centre u, centre v, semi-axis u, semi-axis v) in coordinates running -1..1 across the image; u to the
# image's right (the patient's left), v down. The heart's u semi-axis is ctr * the thorax's, so width ratio = ctr.
CXR_THORAX = (0.0, 0.05, 0.80, 0.80)
CXR_LUNGS = ((-0.38, -0.08, 0.30, 0.55), (0.38, -0.08, 0.30, 0.55))
CXR_HEART = (0.06, 0.30, 0.24)  # centre u, centre v, semi-axis v
CXR_LEVELS = {"air": 150.0, "lung": 800.0, "soft": 2000.0, "heart": 2500.0}  # detector counts before the scanner
CXR_MAX = 4095  # BitsStored 12

CT_BODY = (0.0, 0.0, 0.85, 0.62)
CT_LUNGS = ((-0.42, 0.0, 0.33, 0.45), (0.42, 0.0, 0.33, 0.45))
CT_HEART = (0.10, -0.10, 0.30)
CT_VESSEL = (0.05, -0.38, 0.09)  # main pulmonary artery: centre u, centre v, radius; it runs through every slice
CT_HU = {"air": -1000.0, "lung": -850.0, "soft": 40.0, "heart": 50.0, "vessel": 300.0}
CT_DEFECT_CORE = 0.7  # the defect fills this fraction of the vessel radius
CT_DEFECT_WEIGHTS = (0.5, 1.0, 1.0, 1.0, 0.5)  # its depth along z, centred on a random slice
CT_INTERCEPT = -1024.0
CT_HU_RANGE = (-2048.0, 3071.0)  # stored int16 = HU + 1024; wide enough that scale/offset do not clip the lungs

OPACITY_BLOBS = 8  # per lung
OPACITY_FIELD_MEAN = 0.4  # patch field's mean over the lungs: the opacity seen on average is this * exp(log_opacity)


# ------------------------------------------------------------------------------------------------ pixels
@lru_cache(maxsize=8)
def _grid(rows: int, cols: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in -1..1: (rows, 1) and (1, cols), broadcast instead of stored full size."""
    v = ((np.arange(rows, dtype=np.float32) + 0.5) / rows * 2.0 - 1.0)[:, None]
    u = ((np.arange(cols, dtype=np.float32) + 0.5) / cols * 2.0 - 1.0)[None, :]
    return v, u


def _pose(rng: np.random.Generator) -> tuple[float, float, float]:
    """Per-patient body size and position (scale, shift u, shift v): a model must read ratios, not pixel counts."""
    return float(rng.uniform(0.9, 1.0)), *(float(x) for x in rng.uniform(-0.03, 0.03, 2))


def _ellipse(shape: tuple[int, int], pose: tuple[float, float, float], cu: float, cv: float, au: float,
             av: float) -> np.ndarray:
    (v, u), (s, du, dv) = _grid(*shape), pose
    return ((u - du - s * cu) / (s * au)) ** 2 + ((v - dv - s * cv) / (s * av)) ** 2 <= 1.0


def _patches(rng: np.random.Generator, pose: tuple, lungs: tuple, mask: np.ndarray) -> np.ndarray:
    """Patchy airspace opacity: Gaussian blobs centred in the lung ellipses, saturated, scaled to a fixed lung mean.

    Works for (rows, cols) and (slices, rows, cols) masks; blobs are separable so the field is a sum of outer products.
    """
    n = OPACITY_BLOBS * len(lungs)
    side = np.repeat(np.arange(len(lungs)), OPACITY_BLOBS)
    radius, angle = np.sqrt(rng.random(n)), rng.uniform(0.0, 2.0 * np.pi, n)
    cu, cv, au, av = (np.array([lung[k] for lung in lungs])[side] for k in range(4))
    centre_u = pose[1] + pose[0] * (cu + 0.8 * au * radius * np.cos(angle))
    centre_v = pose[2] + pose[0] * (cv + 0.8 * av * radius * np.sin(angle))
    sigma = rng.uniform(0.06, 0.14, n)
    v, u = _grid(*mask.shape[-2:])
    gv = np.exp(-0.5 * ((v.ravel()[None] - centre_v[:, None]) / sigma[:, None]) ** 2)  # (n, rows)
    gu = np.exp(-0.5 * ((u.ravel()[None] - centre_u[:, None]) / sigma[:, None]) ** 2)  # (n, cols)
    head = gv
    if mask.ndim == 3:  # blobs also have an extent along z, in slice units
        z = np.arange(mask.shape[0])[None]
        gz = np.exp(-0.5 * ((z - rng.uniform(0, mask.shape[0], n)[:, None]) / (sigma[:, None] * 30.0)) ** 2)
        head = (gz[:, :, None] * gv[:, None, :]).reshape(n, -1)  # (n, slices * rows)
    field = np.einsum("bh,bw->hw", head, gu).reshape(mask.shape)
    field = (1.0 - np.exp(-field)) * mask
    return field * (OPACITY_FIELD_MEAN / max(field[mask].mean(), 1e-6))


def _scanner(img: np.ndarray, site: Site, rng: np.random.Generator, lo: float, hi: float) -> np.ndarray:
    """Site effects: gain and offset, then detector blur (in-plane only), then noise of sd noise_sd; then clip.

    Blur before noise so that noise_sd is the noise actually seen in the pixels.
    """
    out = img * site.intensity_scale + site.intensity_offset
    sigma = (0.0,) * (img.ndim - 2) + (site.blur_sigma, site.blur_sigma)
    out = ndimage.gaussian_filter(out, sigma=sigma, mode="nearest", truncate=3.0)
    out += site.noise_sd * rng.standard_normal(img.shape, dtype=np.float32)
    return np.clip(np.rint(out), lo, hi)


def render_radiograph(record: PatientRecord, size: int) -> np.ndarray:
    """PA chest radiograph, (size, size) uint16 in 0..4095: thorax, lungs, heart of width ctr, patchy opacity."""
    ev, rng, shape = record.evidence, record.rng("dicom-cxr"), (size, size)
    pose = _pose(rng)
    body = _ellipse(shape, pose, *CXR_THORAX)
    heart = _ellipse(shape, pose, CXR_HEART[0], CXR_HEART[1], ev.ctr * CXR_THORAX[2], CXR_HEART[2])
    lungs = (_ellipse(shape, pose, *CXR_LUNGS[0]) | _ellipse(shape, pose, *CXR_LUNGS[1])) & body & ~heart
    img = np.full(shape, CXR_LEVELS["air"], dtype=np.float32)
    img[body], img[lungs], img[heart] = CXR_LEVELS["soft"], CXR_LEVELS["lung"], CXR_LEVELS["heart"]
    contrast = CXR_LEVELS["soft"] - CXR_LEVELS["lung"]
    img += np.exp(ev.log_opacity) * contrast * _patches(rng, pose, CXR_LUNGS, lungs)
    return _scanner(img, record.site, rng, 0.0, CXR_MAX).astype(np.uint16)


def render_ct(record: PatientRecord, shape: tuple[int, int, int]) -> np.ndarray:
    """CT pulmonary angiogram in HU, (slices, rows, cols) float32: body, lungs, heart, contrast-filled pulmonary
    artery with a filling defect of depth exp(log_defect) over a few slices, and the same kind of lung opacity."""
    ev, rng = record.evidence, record.rng("dicom-ct")
    n_slices, plane = shape[0], shape[1:]
    pose = _pose(rng)
    body = _ellipse(plane, pose, *CT_BODY)
    heart = _ellipse(plane, pose, CT_HEART[0], CT_HEART[1], ev.ctr * CT_BODY[2], CT_HEART[2])
    lungs = (_ellipse(plane, pose, *CT_LUNGS[0]) | _ellipse(plane, pose, *CT_LUNGS[1])) & body & ~heart
    vessel = _ellipse(plane, pose, *CT_VESSEL[:2], CT_VESSEL[2], CT_VESSEL[2]) & ~lungs
    core = _ellipse(plane, pose, *CT_VESSEL[:2], *(CT_DEFECT_CORE * CT_VESSEL[2],) * 2) & vessel
    axial = np.full(plane, CT_HU["air"], dtype=np.float32)
    axial[body], axial[lungs], axial[heart], axial[vessel] = (CT_HU[k] for k in ("soft", "lung", "heart", "vessel"))
    vol = np.repeat(axial[None], n_slices, axis=0)
    contrast = CT_HU["soft"] - CT_HU["lung"]
    vol += np.exp(ev.log_opacity) * contrast * _patches(rng, pose, CT_LUNGS, np.broadcast_to(lungs, shape))
    weights = np.zeros(n_slices, dtype=np.float32)
    first = int(rng.integers(0, max(n_slices - len(CT_DEFECT_WEIGHTS), 0) + 1))
    span = CT_DEFECT_WEIGHTS[: n_slices - first]
    weights[first: first + len(span)] = span
    drop = np.exp(ev.log_defect) * (CT_HU["vessel"] - CT_HU["soft"])
    vol[:, core] -= (drop * weights)[:, None]
    return _scanner(vol, record.site, rng, *CT_HU_RANGE)


def _screen_save(radiograph: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """An 8-bit screen capture of the radiograph with a bright line of text-like glyphs burned across the top."""
    img = (radiograph >> 4).astype(np.uint8)
    size = img.shape[1]
    n_glyphs = max((size - 8) // 6, 1)
    glyphs = rng.random((n_glyphs, 7, 5)) < 0.45
    glyphs[rng.random(n_glyphs) < 0.15] = False  # spaces between words
    line = np.concatenate([np.pad(g, ((0, 0), (0, 1))) for g in glyphs], axis=1)[:, : size - 8]
    img[2:11, 2: size - 2] = 0
    img[3:10, 4: 4 + line.shape[1]] = np.where(line, 255, 0)
    return img


# ------------------------------------------------------------------------------------------------ encoding
# pydicom builds and encodes each series' shared header; the few per-instance elements (UID, number, position, pixels)
# and the file meta are encoded here, because dcmwrite per CT slice costs ~2 ms and a pure-Python RLE encoder ~2 ms
# more. The bytes are those dcmwrite(..., enforce_file_format=True) writes (the tests re-encode files to check).
def _rle_segments(planes: np.ndarray) -> list[bytes]:
    """PackBits-encode one byte plane of every frame, row by row (PS3.5 Annex G), all frames at once.

    Same output as pydicom's encoder: runs of 2+ equal bytes replicate, singletons gather into literals, 128 a chunk.
    Work is per run and per chunk except for one gather, so noisy planes cost little. planes: (frames, rows, cols).
    """
    n_frames, rows, cols = planes.shape
    flat = planes.ravel()
    new_run = np.empty(flat.size, dtype=bool)
    new_run[0], new_run[1:] = True, flat[1:] != flat[:-1]
    new_run[::cols] = True  # rows are encoded separately
    run_at = np.flatnonzero(new_run)
    single = np.diff(run_at, append=flat.size) == 1
    unit_first = ~single | (run_at % cols == 0)  # a unit: one replicate run, or a group of singletons in one row
    unit_first[1:] |= ~single[:-1]
    unit_at = run_at[unit_first]
    unit_len, literal = np.diff(unit_at, append=flat.size), single[unit_first]
    n_chunks = (unit_len + 127) // 128
    unit = np.repeat(np.arange(unit_at.size), n_chunks)
    k = 128 * (np.arange(unit.size) - np.repeat(np.cumsum(n_chunks) - n_chunks, n_chunks))
    chunk_at, chunk_len, literal = unit_at[unit] + k, np.minimum(128, unit_len[unit] - k), literal[unit]
    header = np.where(literal, chunk_len - 1, np.where(chunk_len > 1, 257 - chunk_len, 0))
    out_len = 1 + np.where(literal, chunk_len, 1)  # header, then the literal bytes or the one replicated byte
    out_at = np.cumsum(out_len) - out_len
    out = flat[np.arange(out_at[-1] + out_len[-1]) + np.repeat(chunk_at - out_at - 1, out_len)]
    out[out_at] = header
    data = out.tobytes()
    cuts = [*out_at[np.searchsorted(chunk_at, np.arange(n_frames) * rows * cols)].tolist(), len(data)]
    return [data[a:b] + b"\x00" * ((b - a) % 2) for a, b in pairwise(cuts)]


def _rle_frames(frames: np.ndarray) -> list[bytes]:
    """RLE Lossless frames: a 64-byte table of segment offsets, then one segment per byte, most significant first."""
    planes = frames.astype(frames.dtype.newbyteorder("<"), copy=False).view(np.uint8).reshape(*frames.shape, -1)
    by_byte = [_rle_segments(planes[..., b]) for b in reversed(range(frames.itemsize))]
    out = []
    for segments in zip(*by_byte, strict=True):
        table = np.zeros(16, dtype="<u4")
        table[0] = len(segments)
        table[1: 1 + len(segments)] = 64 + np.cumsum([0] + [len(s) for s in segments[:-1]])
        out.append(table.tobytes() + b"".join(segments))
    return out


def _element(tag: int, vr: str, value: bytes) -> bytes:
    """One explicit VR little endian element (PS3.5 7.1.2), padded to even length as its VR requires."""
    if len(value) % 2:
        value += b"\x00" if vr in ("UI", "OB") else b" "
    group, elem = tag >> 16, tag & 0xFFFF
    if vr in ("OB", "OW"):
        return struct.pack("<HH2sHI", group, elem, vr.encode(), 0, len(value)) + value
    return struct.pack("<HH2sH", group, elem, vr.encode(), len(value)) + value


def _pixel_elements(frames: np.ndarray, transfer_syntax: str) -> list[bytes]:
    """(7FE0,0010) per frame: native little-endian words, or one RLE fragment in undefined-length encapsulation."""
    if transfer_syntax != RLELossless:
        vr = "OB" if frames.itemsize == 1 else "OW"
        return [_element(0x7FE00010, vr, f.astype(f.dtype.newbyteorder("<"), copy=False).tobytes()) for f in frames]
    head, delimiter = struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OB", 0, 0xFFFFFFFF), b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
    return [head + encapsulate([frame]) + delimiter for frame in _rle_frames(frames)]


def _file_meta(sop_class: str, instance_uid: str, transfer_syntax: str) -> bytes:
    """Preamble, 'DICM' and the File Meta Information group (with its group length and version)."""
    group = b"".join([
        _element(0x00020001, "OB", b"\x00\x01"), _element(0x00020002, "UI", sop_class.encode()),
        _element(0x00020003, "UI", instance_uid.encode()), _element(0x00020010, "UI", transfer_syntax.encode()),
        _element(0x00020012, "UI", IMPLEMENTATION_UID.encode()),
        _element(0x00020013, "SH", IMPLEMENTATION_VERSION.encode()),
    ])
    return b"\x00" * 128 + b"DICM" + _element(0x00020000, "UL", struct.pack("<I", len(group))) + group


def _encode(ds: Dataset) -> bytes:
    """A data set in explicit VR little endian: the data set encoding of both our transfer syntaxes."""
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, False
    write_dataset(fp, ds)
    return fp.getvalue()


def _write_series(header: Dataset, frames: np.ndarray, uids: list[str], paths: list[Path], transfer_syntax: str,
                  extra: list[dict[int, bytes]] | None = None) -> list[Path]:
    """Write one Part 10 file per frame: the shared header with each instance's elements spliced in by tag order.

    A data set is its elements' encodings concatenated in tag order, so the header is encoded once and cut at the
    instance's tags. frames: (instances, rows, cols).
    """
    pixels = _pixel_elements(frames, transfer_syntax)
    instances = [{0x00080018: _element(0x00080018, "UI", uid.encode()),
                  0x00200013: _element(0x00200013, "IS", str(k + 1).encode()),
                  0x7FE00010: pixels[k], **(extra[k] if extra else {})} for k, uid in enumerate(uids)]
    tags, shared = sorted(instances[0]), sorted(header.keys())
    cuts = [0, *(bisect(shared, t) for t in tags), len(shared)]
    chunks = [_encode(Dataset({t: header[t] for t in shared[a:b]})) for a, b in pairwise(cuts)]
    paths[0].parent.mkdir(parents=True, exist_ok=True)
    for inst, uid, path in zip(instances, uids, paths, strict=True):
        body = [part for tag, chunk in zip(tags, chunks[1:], strict=True) for part in (inst[tag], chunk)]
        path.write_bytes(b"".join([_file_meta(header.SOPClassUID, uid, transfer_syntax), chunks[0], *body]))
    return paths


# ------------------------------------------------------------------------------------------------ headers
@dataclass(frozen=True)
class _Study:
    number: int  # ST{number:02d} in the layout
    when: datetime
    accession: str
    description: str
    uid: str
    frame_uid: str


def _uid(record: PatientRecord, *parts: object) -> str:
    """Same record and parts, same UID: 2.25 + a name-based (v5) UUID; the MRN keeps sites of one seed apart.

    Not pydicom's generate_uid: with prefix=None it ignores entropy_srcs and returns a random uuid4 (pydicom 3.0.2),
    and with a prefix it joins the sources without a separator and truncates the hash past what 2.25 allows.
    """
    name = "/".join(str(p) for p in (record.seed, record.index, record.identity.mrn, *parts))
    return f"2.25.{uuid.uuid5(uuid.NAMESPACE_URL, f'urn:mmfm:synth:{name}').int}"


def _studies(record: PatientRecord) -> tuple[_Study, _Study]:
    """Times and accession numbers shared with the EHR's DiagnosticReports (notes.exam_times), so PACS and EHR
    agree on when each exam happened and which order it answered."""
    times = exam_times(record)
    cxr_at = times["cxr"]
    ct_at = times.get("ct", cxr_at)  # no CT ordered: the second study is never written
    acc = record.identity.accession
    return (_Study(1, cxr_at, acc, "XR CHEST PA", _uid(record, "study", 1), _uid(record, "frame", 1)),
            _Study(2, ct_at, ct_accession(record), "CTA CHEST PE PROTOCOL", _uid(record, "study", 2),
                   _uid(record, "frame", 2)))


def _pn(person: tuple[str, str]) -> str:
    return f"{person[1]}^{person[0]}"


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


def _request(record: PatientRecord, study: _Study) -> Sequence:
    """Request attributes as a modality worklist fills them; names and dates sit three sequences deep
    (request > scheduled protocol code > protocol context), where a shallow de-identifier misses them."""
    named, dated = Dataset(), Dataset()
    named.ValueType, named.PersonName = "PNAME", _pn(record.identity.referring)
    named.ConceptNameCodeSequence = Sequence([_code("121008", "DCM", "Person Observer Name")])
    dated.ValueType, dated.Date = "DATE", study.when.strftime("%Y%m%d")
    dated.ConceptNameCodeSequence = Sequence([_code("111060", "DCM", "Study Date")])
    protocol = _code(f"P{study.number}", "99MMFM", study.description)
    protocol.ProtocolContextSequence = Sequence([named, dated])
    item = Dataset()
    item.RequestedProcedureID = f"RP{record.index:07d}{study.number}"
    item.ScheduledProcedureStepID = f"SPS{record.index:07d}{study.number}"
    item.AccessionNumber, item.StudyInstanceUID = study.accession, study.uid
    item.RequestedProcedureDescription = item.ScheduledProcedureStepDescription = study.description
    item.ScheduledProtocolCodeSequence = Sequence([protocol])
    return Sequence([item])


def _patient(ds: Dataset, record: PatientRecord) -> None:
    """Patient module, other IDs and a vendor private block: identifiers in the places real exports hide them."""
    who, site = record.identity, record.site
    ds.PatientName, ds.PatientID, ds.IssuerOfPatientID = f"{who.family}^{who.given}", who.mrn, site.institution
    other = Dataset()
    other.PatientID, other.IssuerOfPatientID, other.TypeOfPatientID = who.ssn, "US SSA", "TEXT"
    ds.OtherPatientIDsSequence = Sequence([other])
    ds.PatientBirthDate, ds.PatientSex = who.birth_date.strftime("%Y%m%d"), "M" if who.sex == "male" else "F"
    ds.PatientAge = f"{record.age_years:03d}Y"  # not capped at 90: that is de-identification's job
    ds.PatientAddress, ds.PatientTelephoneNumbers = f"{who.street}, {site.city} {who.postal_code}", who.phone
    block = ds.private_block(0x0011, "MMFM SYNTH", create=True)
    block.add_new(0x01, "LO", who.mrn)
    block.add_new(0x02, "LO", who.full_name)


def _header(record: PatientRecord, study: _Study, series: int, modality: str, sop_class: str,
            attrs: dict[str, object], pixels: np.ndarray, bits_stored: int) -> Dataset:
    """Image pixel, patient, study, series, equipment and request modules, then the series' own `attrs`."""
    who, site, ds = record.identity, record.site, Dataset()
    ds.SamplesPerPixel, ds.PhotometricInterpretation, (ds.Rows, ds.Columns) = 1, "MONOCHROME2", pixels.shape[-2:]
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = pixels.itemsize * 8, bits_stored, bits_stored - 1
    ds.PixelRepresentation = int(pixels.dtype.kind == "i")
    ds.SOPClassUID, ds.Modality, ds.BurnedInAnnotation = sop_class, modality, "NO"
    _patient(ds, record)
    day, time = study.when.strftime("%Y%m%d"), study.when.strftime("%H%M%S")
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = ds.PerformedProcedureStepStartDate = day
    ds.StudyTime = ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = ds.PerformedProcedureStepStartTime = time
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study.uid, _uid(record, "series", study.number, series)
    ds.FrameOfReferenceUID, ds.PositionReferenceIndicator = study.frame_uid, ""
    ds.AccessionNumber, ds.StudyID = study.accession, f"{zlib.crc32(study.uid.encode()) % 10**8:08d}"
    ds.StudyDescription, ds.SeriesNumber, ds.BodyPartExamined = study.description, series, "CHEST"
    ds.RequestAttributesSequence = _request(record, study)
    ds.PerformedProcedureStepID = f"PPS{record.index:07d}{study.number}"
    staff = record.rng(f"dicom-staff-{study.number}")
    ds.ReferringPhysicianName = _pn(who.referring)
    ds.PerformingPhysicianName = ds.NameOfPhysiciansReadingStudy = _pn(who.radiologist)
    ds.OperatorsName = f"{staff.choice(FAMILY)}^{staff.choice(FIRST_MALE + FIRST_FEMALE)}"
    ds.InstitutionName, ds.InstitutionAddress = site.institution, f"1 Hospital Drive, {site.city}"
    ds.InstitutionalDepartmentName, ds.SoftwareVersions = "Radiology", "synth-1"
    ds.Manufacturer, ds.ManufacturerModelName = site.manufacturer, site.model
    initials = "".join(w[0] for w in site.institution.split() if w[0].isupper())
    ds.StationName = f"{initials}{modality}{zlib.crc32(site.key.encode()) % 90 + 10}"
    ds.DeviceSerialNumber = f"{zlib.crc32((site.institution + modality).encode()) % 10**7:07d}"
    for key, value in attrs.items():
        setattr(ds, key, value)
    return ds


# ------------------------------------------------------------------------------------------------ studies
CXR_SERIES = dict(SeriesDescription="CHEST PA", ImageType=["ORIGINAL", "PRIMARY"], ViewPosition="PA",
                  PatientOrientation=["L", "F"], PresentationIntentType="FOR PRESENTATION", DetectorType="SCINTILLATOR",
                  PixelIntensityRelationship="LOG", PixelIntensityRelationshipSign=1, RescaleIntercept=0,
                  RescaleSlope=1, RescaleType="US", WindowCenter=2048, WindowWidth=4096, LossyImageCompression="00",
                  KVP=110)
SCREEN_SERIES = dict(SeriesDescription="SCREEN SAVE", ImageType=["DERIVED", "SECONDARY"], ConversionType="WSD",
                     BurnedInAnnotation="YES", PatientOrientation=["L", "F"])
CT_SERIES = dict(SeriesDescription="CTPA", ImageType=["ORIGINAL", "PRIMARY", "AXIAL"], PatientPosition="HFS", KVP=100,
                 ConvolutionKernel="STANDARD", ContrastBolusAgent="IOHEXOL 350", RescaleIntercept=CT_INTERCEPT,
                 RescaleSlope=1, RescaleType="HU", WindowCenter=100, WindowWidth=700, AcquisitionNumber=1,
                 ImageOrientationPatient=[1, 0, 0, 0, 1, 0])


def cxr_modality(site: Site) -> str:
    """Some sites still read computed-radiography plates (CR); the rest have flat-panel detectors (DX)."""
    return "CR" if zlib.crc32(site.key.encode()) % 3 == 0 else "DX"


def _write_image(record: PatientRecord, study: _Study, series: int, ds: Dataset, pixels: np.ndarray,
                 folder: Path) -> list[Path]:
    """A one-image series: the radiograph or the screen save."""
    uid, path = _uid(record, "image", study.number, series, 1), folder / f"ST{study.number:02d}/SE{series:02d}"
    return _write_series(ds, pixels[None], [uid], [path / "IM0001.dcm"], record.site.transfer_syntax)


def _write_ct(record: PatientRecord, study: _Study, hu: np.ndarray, folder: Path) -> list[Path]:
    """One file per axial slice, head first; positions step down by ct_thickness along z (LPS, patient HFS)."""
    site, (n_slices, rows, cols) = record.site, hu.shape
    stored = (hu - CT_INTERCEPT).astype(np.int16)
    ds = _header(record, study, 1, "CT", SOP_CT, CT_SERIES, stored, 16)
    ds.PixelSpacing, ds.SliceThickness = [site.ct_spacing] * 2, site.ct_thickness
    ds.SpacingBetweenSlices = site.ct_thickness
    x0, y0 = -(cols - 1) / 2 * site.ct_spacing, -(rows - 1) / 2 * site.ct_spacing
    z = [-k * site.ct_thickness for k in range(n_slices)]
    extra = [{0x00200032: _element(0x00200032, "DS", f"{x0:.6g}\\{y0:.6g}\\{zk:.6g}".encode()),
              0x00201041: _element(0x00201041, "DS", f"{zk:.6g}".encode())} for zk in z]
    uids = [_uid(record, "image", study.number, 1, k + 1) for k in range(n_slices)]
    paths = [folder / f"ST{study.number:02d}/SE01/IM{k + 1:04d}.dcm" for k in range(n_slices)]
    return _write_series(ds, stored, uids, paths, site.transfer_syntax, extra)


def write_imaging(record: PatientRecord, root: Path, *, cxr_size: int = 128,
                  ct_shape: tuple[int, int, int] = (16, 64, 64)) -> list[Path]:
    """Write the patient's imaging studies under `root`; returns the files in layout (sorted path) order.

    Nothing is written when the patient has no imaging. ~3% of imaged patients also get a screen save with burned-in
    text (BurnedInAnnotation YES), which de-identification must quarantine.
    """
    if not record.evidence.present["imaging"]:
        return []
    folder, (cxr, ct) = Path(root) / f"PA{record.index:06d}", _studies(record)
    radiograph, modality = render_radiograph(record, cxr_size), cxr_modality(record.site)
    ds = _header(record, cxr, 1, modality, SOP_CR if modality == "CR" else SOP_DX, CXR_SERIES, radiograph, 12)
    ds.PixelSpacing = ds.ImagerPixelSpacing = [record.site.cxr_spacing] * 2
    paths = _write_image(record, cxr, 1, ds, radiograph, folder)
    sc_rng = record.rng("dicom-sc")
    if sc_rng.random() < P_SCREEN_SAVE:
        screen = _screen_save(radiograph, sc_rng)
        ds = _header(record, cxr, 2, "OT", SOP_SC, SCREEN_SERIES, screen, 8)
        paths += _write_image(record, cxr, 2, ds, screen, folder)
    if record.evidence.has_ct:
        paths += _write_ct(record, ct, render_ct(record, ct_shape), folder)
    return paths
