"""The first pass of DICOM ingest, headers only: count every item (a landed file, or a member of a landed zip
archive, read in memory), reject what cannot be read or lacks what ingest needs, group the rest by series (images and
catalogued non-image objects apart: SR, SEG, RT, KO, PR, waveforms, PDF), and pack whole series into batches.
Raw UIDs are only grouped on here: a group is named by the hash of its items' bytes.
tasks/ingest/dicom.py de-identifies, screens and stages the batches.
"""

from __future__ import annotations

import hashlib
import io
import logging
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import BinaryIO

from pydicom import config as pydicom_config
from pydicom.dataset import Dataset

from tasks.deid.dicom import sop_classes
from tasks.deid.dicom_objects import object_kind
from tasks.ingest.accounting import BatchResult
from tasks.ingest.dicom_shards import int_value, is_zip, read_dicom
from tasks.ingest.landing import Extract, LandedFile, object_path, object_uri
from tasks.ingest.quarantine import Rejection

log = logging.getLogger(__name__)
SOURCE = "dicom"


@dataclass(frozen=True)
class SeriesItem:
    """One DICOM file to ingest, named by where it lies in landing (never by its original path)."""

    uri: str  # data/landing/objects/ab/<sha>, or .../<sha>!<member index> for a zip member
    object_sha256: str  # the landed object: the file itself, or the zip archive holding it
    sha256: str  # of the item's own bytes (equals object_sha256 for a loose file)
    member: int | None = None  # index in the archive's infolist()
    instance_number: int | None = None

    @property
    def order(self) -> tuple:
        return self.instance_number is None, self.instance_number or 0, self.sha256, self.uri


@dataclass(frozen=True)
class SeriesGroup:
    """The items of one series, sorted; `key` hashes their bytes' sha256s, so no UID leaves `scan_headers`."""

    key: str
    items: tuple[SeriesItem, ...]
    objects: bool = False  # non-image objects (SR, SEG, RT, ...: tasks/ingest/dicom_objects.py), not an image series

    @classmethod
    def of(cls, items: list[SeriesItem], objects: bool = False) -> SeriesGroup:
        items = sorted(items, key=lambda i: i.order)
        return cls(hashlib.sha256("\n".join(i.sha256 for i in items).encode()).hexdigest(), tuple(items), objects)


@dataclass(frozen=True)
class _Header:
    """What the scan keeps of a header while grouping; raw UIDs, so it never leaves `scan_headers`."""

    series_uid: str = field(repr=False)
    sop_uid: str = field(repr=False)
    instance_number: int | None
    objects: bool = False  # a catalogued non-image object (tasks.deid.dicom_objects.OBJECT_KINDS)


# ------------------------------------------------------------------------------------------------ helpers
def item_bytes(item: SeriesItem, landing: Path) -> bytes:
    """The item's bytes, checked against the sha256 the scan saw (landing is immutable; this proves it)."""
    path = object_path(landing, item.object_sha256)
    if item.member is None:
        data = path.read_bytes()
    else:
        with zipfile.ZipFile(path) as zf:
            data = zf.read(zf.infolist()[item.member])
    if hashlib.sha256(data).hexdigest() != item.sha256:
        raise OSError("item changed since the header scan")
    return data


def _text(ds: Dataset, keyword: str) -> str:
    return str(ds.get(keyword, "") or "").strip("\x00 \t\r\n")  # UIDs may be NUL-padded


def reject(item: SeriesItem, stage: str, rule: str, message: str) -> Rejection:
    location = "" if item.member is None else f"member {item.member}"
    return Rejection(source_uri=item.uri, sha256=item.object_sha256, location=location, source=SOURCE, stage=stage,
                     rule=rule, message=message)


# ------------------------------------------------------------------------------------------------ scan
def _check_header(item: SeriesItem, ds: Dataset, truncated: bool) -> _Header | Rejection:
    if truncated:
        return reject(item, "ingest", "dicom.readable", "DICOM header is truncated (the file ends inside it)")
    meta = getattr(ds, "file_meta", Dataset())
    sop_class = _text(ds, "SOPClassUID") or _text(meta, "MediaStorageSOPClassUID")
    objects = object_kind(sop_classes(ds)) is not None  # SR, SEG, RT, KO, PR, waveform, PDF: catalogued
    if sop_class and "Rows" not in ds and not objects:
        return reject(item, "ingest", "dicom.not_image",
                       "no image pixel module and not a catalogued object class (a DICOMDIR, audio, a private class)")
    missing = [kw for kw, ok in (("SOPClassUID", sop_class), ("SeriesInstanceUID", _text(ds, "SeriesInstanceUID")),
                                 ("PatientID", _text(ds, "PatientID"))) if not ok]
    if missing:
        return reject(item, "ingest", "dicom.required", f"required attribute missing or empty: {', '.join(missing)}")
    return _Header(_text(ds, "SeriesInstanceUID"), _text(ds, "SOPInstanceUID") or item.sha256,
                   int_value(ds, "InstanceNumber"), objects)


def _header_of(item: SeriesItem, fp: BinaryIO) -> _Header | Rejection:
    try:
        with pydicom_config.disable_value_validation():  # validation warnings quote values
            ds, truncated = read_dicom(fp, headers_only=True)
            return _check_header(item, ds, truncated)
    except Exception as exc:  # anything a damaged or foreign file makes pydicom raise; its message may quote bytes
        return reject(item, "ingest", "dicom.readable", f"not a readable DICOM file ({type(exc).__name__})")


def _scan_archive(landed: LandedFile, path: Path, uri: str) -> Iterator[tuple[SeriesItem, _Header | Rejection]]:
    try:
        zf = zipfile.ZipFile(path)
    except Exception as exc:
        item = SeriesItem(uri, landed.sha256, landed.sha256)
        yield item, reject(item, "ingest", "dicom.readable", f"zip archive cannot be opened ({type(exc).__name__})")
        return
    with zf:
        for index, info in enumerate(zf.infolist()):
            if info.is_dir():
                continue  # structure, not an item
            try:
                data = zf.read(info)
            except Exception as exc:
                item = SeriesItem(f"{uri}!{index}", landed.sha256, landed.sha256, index)
                yield item, reject(item, "ingest", "dicom.readable",
                                    f"zip member cannot be read ({type(exc).__name__})")
                continue
            item = SeriesItem(f"{uri}!{index}", landed.sha256, hashlib.sha256(data).hexdigest(), index)
            yield item, _header_of(item, io.BytesIO(data))


def _scan_object(landed: LandedFile, landing: Path) -> Iterator[tuple[SeriesItem, _Header | Rejection]]:
    path, uri = object_path(landing, landed.sha256), object_uri(landing, landed.sha256)
    if is_zip(path):
        yield from _scan_archive(landed, path, uri)
        return
    item = SeriesItem(uri, landed.sha256, landed.sha256)
    with open(path, "rb") as fh:
        yield item, _header_of(item, fh)


def scan_headers(extract: Extract, landing: Path, site: str) -> tuple[list[SeriesGroup], BatchResult]:
    """First pass, headers only: count every item, reject unreadable ones, group the rest by series.

    Within a series a repeated SOP instance (the same file twice, or in a zip and loose) is kept once, the first in
    item order; the repeats are rejected as `dicom.duplicate`. Groups come back sorted by key.
    """
    result = BatchResult(source=SOURCE)
    series: dict[tuple[bool, str], list[tuple[str, SeriesItem]]] = {}
    for landed in extract.files:
        for item, header in _scan_object(landed, landing):
            result.received += 1
            if isinstance(header, Rejection):
                result.rejections.append(header)
                continue
            series.setdefault((header.objects, header.series_uid), []).append(
                (header.sop_uid, replace(item, instance_number=header.instance_number)))
    groups = []
    for (objects, _), entries in series.items():
        seen: set[str] = set()
        items = []
        for sop_uid, item in sorted(entries, key=lambda e: e[1].order):
            if sop_uid in seen:
                result.rejections.append(reject(item, "ingest", "dicom.duplicate",
                                                 "another item of the series holds the same SOP instance"))
            else:
                seen.add(sop_uid)
                items.append(item)
        groups.append(SeriesGroup.of(items, objects))
    log.info("dicom scan of site %s: %d items, %d series, %d rejected", site, result.received, len(groups),
             result.quarantined)
    return sorted(groups, key=lambda g: g.key), result


def batch_series(groups: list[SeriesGroup], max_items: int = 64) -> list[list[SeriesGroup]]:
    """Pack whole series, in order, into batches of at most `max_items` items (a bigger series gets its own)."""
    if max_items < 1:
        raise ValueError("max_items must be at least 1")
    batches: list[list[SeriesGroup]] = []
    current: list[SeriesGroup] = []
    size = 0
    for group in groups:
        if current and size + len(group.items) > max_items:
            batches.append(current)
            current, size = [], 0
        current.append(group)
        size += len(group.items)
    if current:
        batches.append(current)
    return batches
