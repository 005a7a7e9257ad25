"""Bytes and pixels of DICOM ingest: reading streams, series geometry, MONAI resampling, byte-stable .npz shards.

Why a module of its own: tasks/ingest/dicom.py decides *which* items may pass (de-identification, quarantine) and what
a row says; this one makes no identity decisions and returns no header value but numbers (pixels, positions,
spacings), so it can be read and tested as plain arithmetic.

Axis conventions (everything stored is channel first, numpy order):
    2D series (radiographs)  (N, rows, cols)      N images of the series, each resized to cfg.image_size (rows, cols)
    3D series (CT/MR/PT)     (1, z, y, x)         slices in increasing position along the slice normal (for an axial
                                                  series: feet to head), rows (y), columns (x)
MONAI's spatial transforms see the volume as (1, x, y, z) with an affine diag(x, y, z mm): that is the order of
`ImagingConfig.ct_spacing` (x, y, z, as MONAI's `pixdim` and NIfTI have it), while `ct_shape` is the stored
(z, y, x). Rows report `shape` as stored and `spacing` in mm per spatial axis of that shape (shape[1:], array order).
"""

from __future__ import annotations

import io
import zipfile
from collections import Counter
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, TypeVar

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from tasks.atomic import write_content_addressed

AIR_HU = -1024.0  # what CT volumes are padded with: zero would be water, a bright frame around every scan
POSITION_TOL_MM = 0.01  # two slices closer than this along the normal are one position (a duplicate)
SPACING_REL_TOL = 0.01  # a gap within 1% of the first gap of its run continues the run (same spacing)
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # fixed member timestamps: np.savez stamps the current time, so bytes drift
ELEMENT_HEADER = 8  # bytes pydicom asks for at the start of each element: getting none is a clean end of file
PREAMBLE_READS = 2  # pydicom's dcmread first reads the 128-byte preamble, then 4 bytes for 'DICM'
T = TypeVar("T")


@dataclass
class Decoded:
    """One item that passed reading, de-identification and decoding, with what geometry needs."""

    ref: Hashable  # the caller's handle for the item (to reject it)
    order: tuple  # deterministic tie-breaker (instance number, sha256)
    pixels: np.ndarray  # (rows, cols) float32, modality LUT applied (HU for CT)
    position: tuple[float, float, float] | None  # ImagePositionPatient, mm
    orientation: tuple[float, ...] | None  # ImageOrientationPatient (row cosines, column cosines)
    pixel_spacing: tuple[float, float] | None  # PixelSpacing (row, col) mm, ImagerPixelSpacing if absent
    slice_spacing: float | None  # SpacingBetweenSlices, else SliceThickness
    frames: list[Decoded] | None = None  # a multi-frame item: one Decoded per frame (pixels then (n, rows, cols))


@dataclass
class Assembled:
    """A series stacked in its geometric order, before resampling."""

    kept: list[Decoded]
    stack: np.ndarray  # (N, rows, cols) float32
    spacing: tuple[float, ...] | None  # (z, row, col) for volumes, (row, col) for images; None when unknown


Reject = Callable[[Decoded, str], None]  # (item, message without values)


# ------------------------------------------------------------------------------------------------ reading
class _Probe:
    """A file wrapper that notices short reads: pydicom fills a value cut off by the end of the file with what is
    there and carries on, so a truncated transfer would otherwise pass for a smaller, valid file."""

    def __init__(self, fp: BinaryIO) -> None:
        self._fp, self._sniffs, self.truncated = fp, PREAMBLE_READS, False

    def read(self, size: int = -1) -> bytes:
        data = self._fp.read(size)
        if self._sniffs:  # a raw data set shorter than preamble + 'DICM' is not truncated
            self._sniffs -= 1
        elif size is not None and 0 <= len(data) < size and (data or size != ELEMENT_HEADER):
            self.truncated = True  # short, and not a clean end of file between two elements
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._fp.seek(offset, whence)

    def tell(self) -> int:
        return self._fp.tell()


def read_dicom(fp: BinaryIO, *, headers_only: bool) -> tuple[Dataset, bool]:
    """(dataset, truncated). A stream without preamble and file meta is read as a raw data set only if it starts
    like one (group 0002 to 0008): `force=True` turns any bytes into some data set otherwise. Call it inside
    `pydicom.config.disable_value_validation()`: validation warnings quote values."""
    start = fp.tell()
    probe = _Probe(fp)
    try:
        return pydicom.dcmread(probe, stop_before_pixels=headers_only), probe.truncated
    except InvalidDicomError:
        fp.seek(start)
    probe = _Probe(fp)
    ds = pydicom.dcmread(probe, stop_before_pixels=headers_only, force=True)
    tags = list(ds.keys())
    if not tags or tags[0].group > 0x0008:
        raise InvalidDicomError("neither a DICOM file nor a raw data set")
    _ensure_transfer_syntax(ds)
    return ds, probe.truncated


def _ensure_transfer_syntax(ds: Dataset) -> None:
    """A raw data set has no file meta; decoding needs the syntax it was read with."""
    meta = getattr(ds, "file_meta", None)
    if meta is not None and "TransferSyntaxUID" in meta:
        return
    implicit, little = ds.original_encoding
    syntax = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian if little else ExplicitVRBigEndian
    ds.file_meta = meta if meta is not None else FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = syntax


def is_zip(path: Path) -> bool:
    """A zip archive, not a DICOM file (whose 128-byte preamble may hold anything, "PK" included)."""
    with open(path, "rb") as fh:
        head = fh.read(132)
    if head[128:132] == b"DICM":
        return False
    return head[:4] in (b"PK\x03\x04", b"PK\x05\x06") and zipfile.is_zipfile(path)


def int_value(ds: Dataset, keyword: str) -> int | None:
    try:
        return int(ds.get(keyword))
    except (TypeError, ValueError):
        return None


def _floats(ds: Dataset, *keywords: str, n: int) -> tuple[float, ...] | None:
    """The first of `keywords` holding n finite numbers."""
    for keyword in keywords:
        value = ds.get(keyword)
        try:
            numbers = tuple(float(v) for v in (value if n > 1 else [value]))
        except (TypeError, ValueError):
            continue
        if len(numbers) == n and all(np.isfinite(numbers)):
            return numbers
    return None


def decode(ref: Hashable, order: tuple, ds: Dataset) -> Decoded:
    """Pixels with the modality LUT / rescale applied (HU for CT), and the geometry the series needs."""
    pixels = np.asarray(apply_modality_lut(ds.pixel_array, ds), dtype=np.float32)
    if pixels.shape != (int_value(ds, "Rows"), int_value(ds, "Columns")):  # pydicom returns excess bytes as frames
        raise ValueError("pixel data does not hold exactly one Rows x Columns frame")
    return Decoded(ref=ref, order=order, pixels=pixels,
                   position=_floats(ds, "ImagePositionPatient", n=3),
                   orientation=_floats(ds, "ImageOrientationPatient", n=6),
                   pixel_spacing=_floats(ds, "PixelSpacing", "ImagerPixelSpacing", n=2),
                   slice_spacing=(_floats(ds, "SpacingBetweenSlices", "SliceThickness", n=1) or (None,))[0])


# ------------------------------------------------------------------------------------------------ geometry
def most_common(items: list[T], key: Callable[[T], Hashable]) -> Hashable:
    """The key most items share; ties go to the key of the first item (items arrive in a fixed order)."""
    counts = Counter(key(d) for d in items)
    best = max(counts.values())
    return next(key(d) for d in items if counts[key(d)] == best)


def _layout(d: Decoded) -> tuple:
    orient = tuple(round(v, 3) for v in d.orientation) if d.orientation else None
    return d.pixels.shape, orient


def _keep_common_layout(items: list[Decoded], reject: Reject) -> list[Decoded]:
    """Slices must share shape and orientation to stack; the odd ones out go, the rest stay."""
    layout = most_common(items, _layout)
    for d in items:
        if _layout(d) != layout:
            reject(d, "image shape or orientation differs from the rest of its series")
    return [d for d in items if _layout(d) == layout]


def _normal(orientation: Sequence[float]) -> np.ndarray:
    row, col = np.asarray(orientation[:3], dtype=np.float64), np.asarray(orientation[3:6], dtype=np.float64)
    return np.cross(row, col)


def _longest_even_run(gaps: np.ndarray) -> tuple[int, int]:
    """[start, stop) slice indices of the longest run of equal gaps (the first such run on a tie).

    Gap i joins slices i and i+1; a run is compared with its own first gap, so a missing slice (a double gap)
    ends a run instead of shifting a global reference."""
    best, start = (0, 1), 0
    for i, gap in enumerate(gaps.tolist()):
        ref = gaps[start]
        if i > start and abs(gap - ref) > max(POSITION_TOL_MM, SPACING_REL_TOL * ref):
            start = i
        if i + 2 - start > best[1] - best[0]:
            best = (start, i + 2)
    return best


def _order_slices(items: list[Decoded], reject: Reject) -> tuple[list[Decoded], float | None]:
    """Sort slices along the normal (InstanceNumber when positions are missing); drop duplicates and slices
    outside the longest evenly spaced run. Returns the slices and their spacing (None: not known from positions)."""
    if not all(d.position and d.orientation for d in items):
        return sorted(items, key=lambda d: d.order), None
    normal = _normal(items[0].orientation)
    pos = {id(d): float(np.dot(np.asarray(d.position, dtype=np.float64), normal)) for d in items}
    items = sorted(items, key=lambda d: (pos[id(d)], d.order))
    kept = [items[0]]
    for d in items[1:]:
        if pos[id(d)] - pos[id(kept[-1])] < POSITION_TOL_MM:
            reject(d, "two slices of the series share one position")
        else:
            kept.append(d)
    if len(kept) < 2:
        return kept, None
    gaps = np.diff([pos[id(d)] for d in kept])
    start, stop = _longest_even_run(gaps)
    for d in kept[:start] + kept[stop:]:
        reject(d, "slice lies outside the longest evenly spaced run of its series (missing or extra slices)")
    return kept[start:stop], float(np.mean(gaps[start: stop - 1]))


def assemble(items: list[Decoded], volume: bool, reject: Reject) -> Assembled | None:
    """Stack a series' items in geometric order; None (every item rejected) when no geometry can be made."""
    items = _keep_common_layout(items, reject)
    if volume:
        items, dz = _order_slices(items, reject)
        dz = dz if dz is not None else items[0].slice_spacing
        in_plane = items[0].pixel_spacing
        if not dz or dz <= 0 or not in_plane or min(in_plane) <= 0:
            for d in items:
                reject(d, "slice or pixel spacing of the series is missing or not positive")
            return None
        spacing: tuple[float, ...] | None = (dz, *in_plane)
    else:
        items = sorted(items, key=lambda d: d.order)
        ps = items[0].pixel_spacing
        spacing = ps if ps and min(ps) > 0 else None
    return Assembled(items, np.stack([d.pixels for d in items]).astype(np.float32, copy=False), spacing)


# ------------------------------------------------------------------------------------------------ resampling
def resample_images(stack: np.ndarray, spacing: tuple[float, ...] | None,
                    size: tuple[int, int]) -> tuple[np.ndarray, list[float] | None]:
    """2D: resize (not resample by mm) every image to `size`; (N, rows, cols) -> (N, *size). Radiographs are
    projections whose mm scale depends on magnification, so a fixed grid is all a model can rely on."""
    # lazy: torch (~1.5 s) and monai (~8 s) only to resample DICOM; FHIR/omics ingest import this module
    import torch
    from monai.transforms import Resize

    out = Resize(spatial_size=size, mode="area")(torch.from_numpy(np.ascontiguousarray(stack)))
    array = np.ascontiguousarray(_numpy(out), dtype=np.float32)
    if spacing is None:
        return array, None
    return array, [float(s * n / m) for s, n, m in zip(spacing, stack.shape[1:], size, strict=True)]


def resample_volume(stack: np.ndarray, spacing: tuple[float, ...], pixdim_xyz: tuple[float, float, float],
                    shape_zyx: tuple[int, int, int], pad_value: float) -> tuple[np.ndarray, list[float]]:
    """3D: Spacing to `pixdim_xyz` mm, then centre pad/crop to `shape_zyx`; (z, y, x) -> (1, *shape_zyx)."""
    # lazy: torch and monai, as in resample_images
    import torch
    from monai.data import MetaTensor
    from monai.transforms import ResizeWithPadOrCrop, Spacing

    dz, dy, dx = spacing
    xyz = np.ascontiguousarray(stack.transpose(2, 1, 0))[None]  # (1, x, y, z)
    affine = torch.diag(torch.tensor([dx, dy, dz, 1.0], dtype=torch.float64))
    img = MetaTensor(torch.from_numpy(xyz), affine=affine)
    img = Spacing(pixdim=pixdim_xyz, mode="bilinear", padding_mode="border")(img)
    img = ResizeWithPadOrCrop(spatial_size=shape_zyx[::-1], mode="constant", value=pad_value)(img)
    array = np.ascontiguousarray(_numpy(img)[0].transpose(2, 1, 0)[None], dtype=np.float32)  # (1, z, y, x)
    return array, [float(pixdim_xyz[2]), float(pixdim_xyz[1]), float(pixdim_xyz[0])]


def _numpy(tensor) -> np.ndarray:
    as_tensor = getattr(tensor, "as_tensor", None)  # MetaTensor -> plain tensor (drops the metadata)
    return (as_tensor() if as_tensor else tensor).detach().cpu().numpy()


# ------------------------------------------------------------------------------------------------ shards
def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """An .npz (np.load reads it) whose bytes depend only on the arrays: members sorted by key, stored
    uncompressed (zlib builds differ between machines), fixed timestamps and attributes."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for key in sorted(arrays):
            member = io.BytesIO()
            np.lib.format.write_array(member, np.ascontiguousarray(arrays[key]), allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=ZIP_EPOCH)
            info.create_system, info.external_attr = 3, 0o644 << 16
            zf.writestr(info, member.getvalue())
    return buf.getvalue()


def write_shard(arrays: dict[str, np.ndarray], directory: Path) -> Path | None:
    """Write the arrays as `shard-<sha256[:16]>.npz` (content-addressed: a rerun rewrites nothing); None if empty."""
    if not arrays:
        return None
    return write_content_addressed(npz_bytes(arrays), directory, "shard-", ".npz")


def value_stats(array: np.ndarray) -> dict[str, float]:
    return {"value_min": float(array.min()), "value_max": float(array.max()),
            "value_mean": float(array.mean(dtype=np.float64))}
