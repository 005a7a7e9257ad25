"""Multi-frame DICOM items (enhanced CT/MR/PT, US cine, multi-frame secondary capture, NM) as one Decoded per frame.

Why a module of its own: a classic series is one slice per file, and tasks/ingest/dicom_shards.py stacks files by
their ImagePositionPatient. An enhanced image carries the same geometry per frame, in the functional groups
(PS3.3 C.7.6.16: PerFrameFunctionalGroupsSequence, falling back to SharedFunctionalGroupsSequence): Plane Position,
Plane Orientation, Pixel Measures, Pixel Value Transformation. Giving every frame that geometry lets the same
`assemble` sort the frames along the slice normal into the volume a classic series becomes. A multi-frame image
without it (a US cine loop, a multi-frame secondary capture) is a set of frames, stacked in frame order.

Numbers only (pixels, positions, spacings): no header value leaves this module as text, no identity decision here.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable

import numpy as np
from pydicom.dataset import Dataset
from pydicom.pixels import apply_modality_lut

from tasks.ingest.accounting import BatchResult
from tasks.ingest.dicom_scan import reject
from tasks.ingest.dicom_shards import Assembled, Decoded, assemble, int_value

log = logging.getLogger(__name__)

LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R BT.601: a colour cine frame as one grey channel


def _group_value(ds: Dataset, frame: int, sequence: str, keyword: str):
    """`keyword` of the first item of `sequence` in the frame's functional groups, else in the shared ones."""
    places = []
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame is not None and frame < len(per_frame):
        places.append(per_frame[frame])
    shared = ds.get("SharedFunctionalGroupsSequence")
    if shared:
        places.append(shared[0])
    for groups in places:
        seq = groups.get(sequence)
        if seq and keyword in seq[0]:
            return seq[0].get(keyword)
    return None


def _numbers(value, n: int) -> tuple[float, ...] | None:
    try:
        numbers = tuple(float(v) for v in (value if n > 1 else [value]))
    except (TypeError, ValueError):
        return None
    return numbers if len(numbers) == n and all(np.isfinite(numbers)) else None


def _frame_lut(ds: Dataset, frame: int, pixels: np.ndarray) -> np.ndarray:
    """Rescale from the frame's Pixel Value Transformation group (enhanced objects put it there), else the
    top-level modality LUT (classic attributes)."""
    slope = _numbers(_group_value(ds, frame, "PixelValueTransformationSequence", "RescaleSlope"), 1)
    intercept = _numbers(_group_value(ds, frame, "PixelValueTransformationSequence", "RescaleIntercept"), 1)
    if slope and intercept:
        return pixels.astype(np.float32) * np.float32(slope[0]) + np.float32(intercept[0])
    return np.asarray(apply_modality_lut(pixels, ds), dtype=np.float32)


def has_frame_geometry(frames: list[Decoded]) -> bool:
    """Every frame knows where it lies (position, orientation, pixel spacing): it can become a volume."""
    return bool(frames) and all(f.position and f.orientation and f.pixel_spacing for f in frames)


def decode_frames(ref: Hashable, order: tuple, ds: Dataset) -> Decoded:
    """A multi-frame item: `pixels` (n, rows, cols) float32 and `frames`, one Decoded per frame with its geometry
    from the functional groups (None where the object has none). Colour frames become luminance."""
    n, rows, cols = int_value(ds, "NumberOfFrames") or 1, int_value(ds, "Rows"), int_value(ds, "Columns")
    samples = int_value(ds, "SamplesPerPixel") or 1
    raw = np.asarray(ds.pixel_array)
    want = (n, rows, cols) if samples == 1 else (n, rows, cols, samples)
    if raw.shape != want or samples not in (1, 3):
        raise ValueError("pixel data does not hold NumberOfFrames frames of Rows x Columns")
    frames = []
    for i in range(n):
        pixels = raw[i].astype(np.float32) @ LUMA if samples == 3 else _frame_lut(ds, i, raw[i])
        spacing = _numbers(_group_value(ds, i, "PixelMeasuresSequence", "PixelSpacing"), 2)
        thickness = _numbers(_group_value(ds, i, "PixelMeasuresSequence", "SpacingBetweenSlices"), 1) or \
            _numbers(_group_value(ds, i, "PixelMeasuresSequence", "SliceThickness"), 1)
        frames.append(Decoded(
            ref=ref, order=(*order, i), pixels=np.ascontiguousarray(pixels, dtype=np.float32),
            position=_numbers(_group_value(ds, i, "PlanePositionSequence", "ImagePositionPatient"), 3),
            orientation=_numbers(_group_value(ds, i, "PlaneOrientationSequence", "ImageOrientationPatient"), 6),
            pixel_spacing=spacing or _numbers(ds.get("PixelSpacing") or ds.get("ImagerPixelSpacing"), 2),
            slice_spacing=(thickness or (None,))[0]))
    stack = np.stack([f.pixels for f in frames])
    return Decoded(ref=ref, order=order, pixels=stack, position=frames[0].position,
                   orientation=frames[0].orientation, pixel_spacing=frames[0].pixel_spacing,
                   slice_spacing=frames[0].slice_spacing, frames=frames)


def assemble_multiframe(loaded: list[tuple[Decoded, dict]], volume_modality: bool,
                        result: BatchResult) -> tuple[Assembled, list[Decoded], bool] | None:
    """A series holding a multi-frame instance is that instance: its frames become a volume (enhanced CT/MR/PT with
    per-frame position, orientation and spacing, sorted along the normal like classic slices) or a set of frames
    (cine, captures: frame order). Its other instances go to quarantine (dicom.series_geometry); frames the geometry
    drops (a repeated position, outside the longest evenly spaced run) are dropped, the item is kept if any remain."""
    first = next(d for d, _ in loaded if d.frames)
    for d, _ in loaded:
        if d is not first:
            result.rejections.append(reject(d.ref, "ingest", "dicom.series_geometry",
                                             "series holds a multi-frame instance and other instances: one is staged"))
    volume = volume_modality and has_frame_geometry(first.frames)
    dropped: list[Decoded] = []
    series = assemble(first.frames, volume, lambda d, _message: dropped.append(d))
    if series is None or not series.kept:
        result.rejections.append(reject(first.ref, "ingest", "dicom.series_geometry",
                                         "frames of the multi-frame image have no usable spacing"))
        return None
    if dropped:
        log.info("multi-frame image: %d of %d frames dropped by geometry", len(dropped), len(first.frames))
    return series, [first], volume
