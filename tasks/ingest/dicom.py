"""The DICOM half of ingest, as plain functions; flows/ingest.py maps Prefect tasks over the batches.

    groups, scan = scan_headers(extract, landing, site)         # headers only: every item counted, bad ones rejected
    for batch in batch_series(groups, max_items=64):             # whole series per batch, deterministic packing
        part = ingest_series_batch(batch, landing, staged, keys, site, cfg)   # -> "imaging" rows + one shard,
                                                                               #    "objects" rows + object files

An item is one DICOM file: a landed file, or one member of a landed zip archive (read in memory, never extracted;
named `data/landing/objects/ab/<sha>!<member index>`, never by the member's name, which may hold PHI). `scan` counts
every item in `received`; each then ends up in exactly one place: a batch's `ingested`, or a rejection (scan's or a
batch's), so `received == ingested + quarantined` holds over scan + batches.

PHI stays inside: raw UIDs are only grouped on inside `scan_headers` (a group is named by the hash of its items'
bytes), rows carry pseudonyms, keyed UIDs, shifted dates and allow-listed codes from the de-identified dataset
(tasks.deid.dicom.staged_fields), images at risk of burned-in text are read by OCR before they pass
(tasks.deid.pixels, a chunk of series per Tesseract call), and messages name rules, attributes and exception types,
never values. The header scan and batching live in tasks/ingest/dicom_scan.py (re-exported here: this module is the
DICOM ingest API); reading streams, series geometry, resampling and shard files in tasks/ingest/dicom_shards.py;
multi-frame items (enhanced volumes via functional groups, cine frames) in tasks/ingest/dicom_multiframe.py;
non-image objects (SR, SEG, RT, KO, PR, waveforms, PDF) in tasks/ingest/dicom_objects.py. A series of a modality the
model has no encoder for (SHARD_MODALITIES) is indexed with its geometry and acquisition columns and a null shard.
"""

from __future__ import annotations

import io
import logging
import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from pydicom import config as pydicom_config
from pydicom.dataset import Dataset

from tasks.deid import DeidError, DicomDeidResult, Pseudonymizer, deidentify_dataset
from tasks.deid.dicom import staged_fields
from tasks.deid.dicom_acquisition import COLUMNS as ACQUISITION
from tasks.deid.dicom_acquisition import acquisition_fields
from tasks.deid.pixels import PixelRequest, request, screen
from tasks.ingest.accounting import BatchResult
from tasks.ingest.dicom_multiframe import assemble_multiframe, decode_frames
from tasks.ingest.dicom_objects import TABLE as OBJECTS_TABLE
from tasks.ingest.dicom_objects import ingest_object_group
from tasks.ingest.dicom_scan import SOURCE, SeriesGroup, SeriesItem, batch_series, item_bytes, reject, scan_headers
from tasks.ingest.dicom_shards import (
    AIR_HU,
    Decoded,
    assemble,
    decode,
    int_value,
    most_common,
    read_dicom,
    resample_images,
    resample_volume,
    value_stats,
    write_shard,
)

__all__ = ["ImagingConfig", "SeriesGroup", "SeriesItem", "batch_series", "imaging_config", "ingest_series_batch",
           "prepare_readers", "scan_headers"]
log = logging.getLogger(__name__)
TABLE = "imaging"
VOLUME_MODALITIES = frozenset({"CT", "MR", "PT"})  # stacked into volumes; anything else is a set of 2D images
# Series the model has an encoder for (tasks/training/curated_dataset.py MODALITIES_3D / MODALITIES_2D) get their array
# in a shard; the others (MG, NM, US, XA, ...) are indexed with their geometry and a null shard, kept for later use.
SHARD_MODALITIES = frozenset({"CT", "MR", "PT", "DX", "CR"})
# Geometry sanity limits (rule dicom.geometry_limits), checked before anything is allocated for them: a header may
# claim any matrix and any spacing, and MONAI allocates whatever the resampling asks for (one CT series with
# PixelSpacing 1e7 asked for 40 PB and failed the whole extract). The series goes to quarantine; the rest ingests.
SPACING_RANGE_MM = (0.01, 100.0)  # pixel and slice spacing of a volume: outside it, no body scan
MAX_PIXELS_PER_ITEM = 8192 * 8192  # Rows x Columns x frames of one item, checked before its pixels are decoded
RESAMPLE_BYTES_PER_VOXEL = 32  # MONAI Spacing: float64 output + its (x, y, z) float64 sampling grid, per voxel


@dataclass(frozen=True)
class ImagingConfig:
    """params.yaml `ingest.imaging`. Shapes are in stored (numpy) order; `ct_spacing` is (x, y, z) mm, the order of
    MONAI's `pixdim` (see tasks/ingest/dicom_shards.py for the axis conventions)."""

    image_size: tuple[int, int] = (64, 64)  # 2D series: every image resized to (rows, cols)
    ct_shape: tuple[int, int, int] = (16, 48, 48)  # volumes: stored (z, y, x) after resampling, centre pad/crop
    ct_spacing: tuple[float, float, float] = (6.0, 6.0, 10.0)  # volumes: voxel size in mm, (x, y, z)
    allow_burned_in: bool = False  # True only for sources whose pixels were cleaned of burned-in text already
    max_series_mb: int = 4096  # memory budget of one series: its stacked pixels, and its resampled grid (volumes)

    def __post_init__(self) -> None:  # params.yaml gives lists; a frozen config holds hashable tuples
        if not isinstance(self.max_series_mb, int) or self.max_series_mb <= 0:
            raise ValueError("ingest.imaging.max_series_mb must be a positive whole number of MB")
        for name, kind, n in (("image_size", int, 2), ("ct_shape", int, 3), ("ct_spacing", float, 3)):
            value = tuple(kind(v) for v in getattr(self, name))
            if len(value) != n or min(value) <= 0:
                raise ValueError(f"ingest.imaging.{name} must be {n} positive numbers")
            object.__setattr__(self, name, value)


# ------------------------------------------------------------------------------------------------ ingest
def _fields(deid: DicomDeidResult, keys: Pseudonymizer) -> dict:
    """The row's identity columns: the pseudonym, and what tasks.deid.dicom.staged_fields lets out of the
    de-identified dataset (keyed UIDs, the shifted date, allow-listed codes; never free text)."""
    fields = staged_fields(deid.dataset, keys)
    return {"patient_id": deid.patient_pseudonym, **fields, **acquisition_fields(deid.dataset, fields["modality"])}


def _unsupported(ds: Dataset) -> str | None:
    """Colour is read as luminance for multi-frame images (US cine, multi-frame captures) only."""
    samples, multi_frame = int_value(ds, "SamplesPerPixel") or 1, (int_value(ds, "NumberOfFrames") or 1) > 1
    if samples != 1 and not (multi_frame and samples == 3):
        return "colour images are not supported (monochrome; a colour multi-frame image as RGB)"
    return None


@dataclass
class _Loaded:
    """An item read, de-identified, header-screened and decoded. Its pixel screen (`ocr`; None: not at risk) is
    pending, and so is the count of its de-identification: the report records what the screen finds."""

    item: SeriesItem
    decoded: Decoded
    deid: DicomDeidResult
    fields: dict  # the row's header columns
    ocr: PixelRequest | None


def _load(item: SeriesItem, landing: Path, keys: Pseudonymizer, site: str, cfg: ImagingConfig,
          result: BatchResult) -> _Loaded | None:
    """Read, de-identify, screen the header of and decode one item; None (and exactly one rejection) when it cannot
    pass."""

    def drop(stage: str, rule: str, message: str) -> None:
        result.rejections.append(reject(item, stage, rule, message))

    try:
        data = item_bytes(item, landing)
        with pydicom_config.disable_value_validation():
            ds, truncated = read_dicom(io.BytesIO(data), headers_only=False)
    except Exception as exc:
        return drop("ingest", "dicom.readable", f"cannot be read ({type(exc).__name__})")
    if truncated:  # the scan read its header: the cut is in the pixel data (pydicom may then drop every element)
        return drop("ingest", "dicom.pixel_decode", "the file ends inside the pixel data (truncated)")
    try:
        deid = deidentify_dataset(ds, keys, site)
    except DeidError as exc:  # its message names the rule, never a value
        return drop("deidentify", f"deid.{exc.rule}", str(exc))
    decoded, refusal = _decode(item, ds, deid, cfg)
    if decoded is not None:
        try:
            return _Loaded(item, decoded, deid, _fields(deid, keys), request(ds, decoded.pixels))
        except DeidError as exc:  # a header value the row or the screen cannot read: named by rule, no value
            refusal = ("deidentify", f"deid.{exc.rule}", str(exc))
        except Exception as exc:  # fail closed: pixels the screen cannot prepare do not pass unread
            refusal = ("deidentify", "dicom.ocr_unavailable", f"pixels not readable by OCR ({type(exc).__name__})")
    result.deid.add_dicom(deid, item.sha256)
    return drop(*refusal)


def _decode(item: SeriesItem, ds: Dataset, deid: DicomDeidResult, cfg: ImagingConfig
            ) -> tuple[Decoded | None, tuple[str, str, str]]:
    """Header screen, limits, decoding: (decoded, ()) or (None, (stage, rule, message) of the one rejection)."""
    if deid.burned_in_risk and not cfg.allow_burned_in:
        return None, ("deidentify", "dicom.burned_in", f"pixels may carry text: {', '.join(deid.burned_in_reasons)}")
    if (problem := _unsupported(ds)) is not None:
        return None, ("ingest", "dicom.unsupported", problem)
    pixels = (int_value(ds, "Rows") or 0) * (int_value(ds, "Columns") or 0) * (int_value(ds, "NumberOfFrames") or 1)
    if pixels > MAX_PIXELS_PER_ITEM:
        return None, ("ingest", "dicom.geometry_limits",
                      f"Rows x Columns x frames exceeds {MAX_PIXELS_PER_ITEM} pixels")
    try:
        with pydicom_config.disable_value_validation():
            if (int_value(ds, "NumberOfFrames") or 1) > 1:
                return decode_frames(item, item.order, ds), ()
            return decode(item, item.order, ds), ()
    except Exception as exc:  # decoder errors may quote header values: keep the type only
        return None, ("ingest", "dicom.pixel_decode", f"pixel data cannot be decoded ({type(exc).__name__})")


def _screened(chunk: list[list[_Loaded]], result: BatchResult) -> list[list[tuple[Decoded, dict]]]:
    """The pixel screen of a chunk of series (tasks.deid.pixels: the pages of all its images at risk in one
    Tesseract call); every item's de-identification is counted with what the screen found, an image with text, or
    that could not be screened, goes to quarantine, and the rest of each series comes back with its row fields."""
    at_risk = [x for series in chunk for x in series if x.ocr is not None]
    verdicts = dict(zip(map(id, at_risk), screen([x.ocr for x in at_risk]), strict=True))
    if at_risk:
        log.debug("OCR screen: %d images at risk, %d pages, %.2f s", len(at_risk),
                  sum(v.pages_read for v in verdicts.values()), sum(v.seconds for v in verdicts.values()))
    out = []
    for series in chunk:
        kept = []
        for x in series:
            verdict = verdicts.get(id(x))
            if verdict is None or verdict.rule is None:
                result.deid.add_dicom(x.deid, x.item.sha256)
                kept.append((x.decoded, x.fields))
                continue
            reasons = (*x.deid.burned_in_reasons, verdict.reason)
            result.deid.add_dicom(replace(x.deid, burned_in_risk=True, burned_in_reasons=reasons), x.item.sha256)
            result.rejections.append(reject(x.item, "deidentify", f"dicom.{verdict.rule}", verdict.message))
        out.append(kept)
    return out


def _loaded_series(batch: list[SeriesGroup], landing: Path, keys: Pseudonymizer, site: str, cfg: ImagingConfig,
                   result: BatchResult) -> Iterator[list[tuple[Decoded, dict]]]:
    """Each series' items that passed, in batch order. Series are loaded a chunk at a time and a chunk's images at
    risk are OCR'd together (Tesseract's start-up, not the page, is most of a small image's cost); a chunk holds
    about cfg.max_series_mb of decoded pixels at most (or one series), the budget one series has anyway."""
    chunk: list[list[_Loaded]] = []
    held = 0
    for group in batch:
        chunk.append([x for item in group.items if (x := _load(item, landing, keys, site, cfg, result)) is not None])
        held += sum(x.decoded.pixels.nbytes for x in chunk[-1])
        if held > cfg.max_series_mb * 2**20:
            yield from _screened(chunk, result)
            chunk, held = [], 0
    yield from _screened(chunk, result)


def _one_patient_and_study(loaded: list[tuple[Decoded, dict]], result: BatchResult) -> list[tuple[Decoded, dict]]:
    """A series belongs to one patient and one study: instances that say otherwise are not merged into it."""

    def ident(entry: tuple[Decoded, dict]) -> tuple:
        return entry[1]["patient_id"], entry[1]["study_id"]

    common = most_common(loaded, ident)
    for entry in loaded:
        if ident(entry) != common:
            result.rejections.append(reject(entry[0].ref, "ingest", "dicom.series_mixed",
                                             "instance names another patient or study than the rest of its series"))
    return [entry for entry in loaded if ident(entry) == common]


def _over_budget(what: str, cfg: ImagingConfig) -> str:
    return f"{what} would exceed the memory budget of {cfg.max_series_mb} MB per series (ingest.imaging.max_series_mb)"


def _volume_limits(shape: tuple[int, ...], spacing: tuple[float, ...], cfg: ImagingConfig) -> str | None:
    """Why a volume may not be resampled, or None: a spacing outside SPACING_RANGE_MM, or a resampled grid (the
    extent in mm over ct_spacing, per axis, as MONAI's Spacing computes it) over the series' memory budget."""
    lo, hi = SPACING_RANGE_MM
    if not all(lo <= s <= hi for s in spacing):
        return f"slice or pixel spacing outside the plausible {lo:g}-{hi:g} mm"
    voxels = math.prod(math.ceil(n * s / p) for n, s, p in zip(shape, spacing, cfg.ct_spacing[::-1], strict=True))
    if voxels * RESAMPLE_BYTES_PER_VOXEL > cfg.max_series_mb * 2**20:
        return _over_budget("resampling to ingest.imaging.ct_spacing", cfg)
    return None


def _series(loaded: list[tuple[Decoded, dict]], site: str, cfg: ImagingConfig,
            result: BatchResult) -> tuple[np.ndarray, dict] | None:
    """One series: its array (see tasks/ingest/dicom_shards.py for axes) and its row (shard filled in by the caller)."""
    if not loaded:
        return None
    loaded = _one_patient_and_study(loaded, result)
    fields = {d.ref: f for d, f in loaded}

    def refuse_geometry(d: Decoded, message: str) -> None:
        result.rejections.append(reject(d.ref, "ingest", "dicom.series_geometry", message))

    def refuse(items: list[Decoded], message: str) -> None:
        for d in items:
            result.rejections.append(reject(d.ref, "ingest", "dicom.geometry_limits", message))

    modality = loaded[0][1]["modality"]
    if sum(d.pixels.nbytes for d, _ in loaded) > cfg.max_series_mb * 2**20:  # before np.stack copies them
        return refuse([d for d, _ in loaded], _over_budget("its pixels", cfg))
    if any(d.frames for d, _ in loaded):
        assembled = assemble_multiframe(loaded, modality in VOLUME_MODALITIES, result)
        if assembled is None:
            return None
        series, items, volume = assembled
    else:
        volume = modality in VOLUME_MODALITIES
        series = assemble([d for d, _ in loaded], volume, refuse_geometry)
        if series is None:
            return None
        items = series.kept
    if volume and (problem := _volume_limits(series.stack.shape, series.spacing, cfg)):
        return refuse(items, problem)
    if volume:
        pad = AIR_HU if modality == "CT" else float(series.stack.min())
        array, spacing = resample_volume(series.stack, series.spacing, cfg.ct_spacing, cfg.ct_shape, pad)
        original_shape = [1, *series.stack.shape]
    else:
        array, spacing = resample_images(series.stack, series.spacing, cfg.image_size)
        original_shape = list(series.stack.shape)
    head = fields[items[0].ref]
    result.ingested += len(items)
    row = {"patient_id": head["patient_id"], "site": site, "study_id": head["study_id"],
           "series_id": head["series_id"], "modality": modality, "sop_class_uid": head["sop_class_uid"],
           "manufacturer": head["manufacturer"], "model": head["model"], "body_part": head["body_part"],
           "n_instances": len(items), "n_frames": len(series.kept), "original_shape": original_shape,
           "original_spacing": [float(s) for s in series.spacing] if series.spacing else None,
           "shape": list(array.shape), "spacing": spacing, "dtype": str(array.dtype), **value_stats(array),
           "shard": None, "key": head["series_id"], "study_date": head["study_date"],
           "transfer_syntax": head["transfer_syntax"], "source_sha256s": [d.ref.sha256 for d in items],
           **{k: head[k] for k in ACQUISITION}}
    return array, row


def ingest_series_batch(batch: list[SeriesGroup], landing: Path, staged: Path, keys: Pseudonymizer, site: str,
                        cfg: ImagingConfig) -> BatchResult:
    """Full read, de-identification, decoding and resampling of a batch of series; every series that survives goes
    into ONE shard, `staged/images/shard-<sha256 of its bytes>.npz`, under its de-identified series UID.

    `staged` is the workspace's data/staged: rows name the shard relative to the workspace root (two levels up).
    The result's `received` is 0 (the scan counted these items); each item lands in `ingested` or a rejection.
    """
    result = BatchResult(source=SOURCE)
    arrays: dict[str, np.ndarray] = {}
    rows: list[dict] = []
    keys_seen: set[str] = set()
    objects = [row for group in batch if group.objects
               for row in ingest_object_group(group, landing, staged, keys, site, cfg.allow_burned_in, result)]
    if objects:
        result.add_rows(OBJECTS_TABLE, objects)
    images = [group for group in batch if not group.objects]
    for loaded in _loaded_series(images, landing, keys, site, cfg, result):
        series = _series(loaded, site, cfg, result)
        if series is None:
            continue
        array, row = series
        if row["key"] in keys_seen:  # scan groups by the UID the key is made from: two groups cannot share one
            raise RuntimeError("two series of one batch de-identify to the same series id")
        keys_seen.add(row["key"])
        if row["modality"] in SHARD_MODALITIES:
            arrays[row["key"]] = array
        rows.append(row)
    shard = write_shard(arrays, staged / "images")
    if shard is not None:
        ref = shard.relative_to(staged.parent.parent).as_posix()
        for row in rows:
            row["shard"] = ref if row["key"] in arrays else None
        result.files_written.append(ref)
    if rows:
        result.add_rows(TABLE, rows)
    log.info("dicom batch of site %s: %d series and %d objects staged, %d items ingested, %d rejected", site,
             len(rows), len(objects), result.ingested, result.quarantined)
    return result


def imaging_config(params: dict) -> ImagingConfig:
    """params.yaml `ingest.imaging` as an ImagingConfig (YAML lists become the tuples it holds)."""
    p = (params.get("ingest") or {}).get("imaging") or {}
    return ImagingConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in p.items()})


def prepare_readers() -> None:
    """Process-wide reader setup, once, before worker threads start decoding: MONAI imported here (threads importing
    it at once deadlock; ~8 s, so only when there is DICOM to decode); pydicom's value validation off (it warns with
    the offending value quoted: PHI in logs) and its truncation warnings quiet (each such file is quarantined)."""
    import monai.transforms  # noqa: F401  # lazy: monai (~8 s), only when there is DICOM to decode (see above)

    pydicom_config.settings.reading_validation_mode = pydicom_config.IGNORE
    logging.getLogger("pydicom").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=UserWarning, module="pydicom")
