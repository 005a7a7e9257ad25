"""Non-image DICOM objects (SR, SEG, RTSTRUCT, RTPLAN, RTDOSE, KO, PR, waveforms, encapsulated PDF/CDA): read,
de-identified, catalogued in the `objects` table, and (but for encapsulated documents) kept de-identified in
`data/staged/objects/obj-<sha256[:16]>.dcm` for later work (segmentations, dose grids, structured findings).

Why not quarantine: they are valid clinical objects; only an image pipeline had no place for them. They pass the same
PS3.15 basic profile as images (tasks.deid.dicom), then tasks.deid.dicom_objects.scrub_content empties SR text and
every PN left anywhere. A row carries keyed ids, the shifted date and allow-listed codes only (staged_fields). Burned-
in-text rules still quarantine an object that keeps pixels (a SEG or RTDOSE flagged by its header), unless the source
is configured as clean (ingest.imaging.allow_burned_in). Each item ends as one row or one rejection.
"""

from __future__ import annotations

import io
from pathlib import Path

import pydicom
from pydicom import config as pydicom_config
from pydicom.dataset import Dataset

from tasks.atomic import write_content_addressed
from tasks.deid import DeidError, Pseudonymizer, deidentify_dataset
from tasks.deid.dicom import sop_classes, staged_fields
from tasks.deid.dicom_objects import NOT_STORED, object_kind, scrub_content
from tasks.ingest.accounting import BatchResult
from tasks.ingest.dicom_scan import SeriesGroup, SeriesItem, item_bytes, reject
from tasks.ingest.dicom_shards import read_dicom

TABLE = "objects"
DIRECTORY = "objects"  # under data/staged


def _referenced_series(ds: Dataset) -> str | None:
    """Keyed ids of the series an object points at (SeriesInstanceUID anywhere below the top level: evidence
    sequences of SR/KO, ReferencedSeriesSequence of SEG/PR, RT referenced series), space-separated, sorted."""
    found: set[str] = set()

    def walk(item: Dataset) -> None:
        for elem in item:
            if elem.VR != "SQ":
                continue
            for sub in elem.value or []:
                uid = str(sub.get("SeriesInstanceUID", "") or "").strip("\x00 ")
                if uid:
                    found.add(uid)
                walk(sub)

    walk(ds)
    return " ".join(sorted(found)) or None


def _file_bytes(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    with pydicom_config.disable_value_validation():
        pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()


def _store(data: bytes, staged: Path) -> Path:
    """Content-addressed and atomic, like the image shards: a rerun rewrites nothing, a kill leaves no torn file."""
    return write_content_addressed(data, staged / DIRECTORY, "obj-", ".dcm")


def _time(ds: Dataset, fields: dict) -> str | None:
    """The shifted study date, else the object's own (shifted) content date, ISO."""
    if fields["study_date"]:
        return fields["study_date"]
    value = str(ds.get("ContentDate", "") or ds.get("SeriesDate", "") or "").strip()
    return f"{value[:4]}-{value[4:6]}-{value[6:8]}" if len(value) == 8 and value.isdigit() else None


def ingest_object(item: SeriesItem, landing: Path, staged: Path, keys: Pseudonymizer, site: str,
                  allow_burned_in: bool, result: BatchResult) -> dict | None:
    """One object item -> one `objects` row (and its stored file), or one rejection (None)."""

    def drop(stage: str, rule: str, message: str) -> None:
        result.rejections.append(reject(item, stage, rule, message))

    try:
        with pydicom_config.disable_value_validation():
            ds, truncated = read_dicom(io.BytesIO(item_bytes(item, landing)), headers_only=False)
    except Exception as exc:
        return drop("ingest", "dicom.readable", f"cannot be read ({type(exc).__name__})")
    if truncated:
        return drop("ingest", "dicom.readable", "the file ends inside a value (truncated)")
    kind = object_kind(sop_classes(ds))
    try:
        deid = deidentify_dataset(ds, keys, site)
        scrub_content(deid.dataset)
        fields = staged_fields(deid.dataset, keys)
    except DeidError as exc:
        return drop("deidentify", f"deid.{exc.rule}", str(exc))
    result.deid.add_dicom(deid, item.sha256)
    reason = NOT_STORED.get(kind or "")
    if deid.burned_in_risk and reason is None and "PixelData" in ds and not allow_burned_in:
        return drop("deidentify", "dicom.burned_in", f"pixels may carry text: {', '.join(deid.burned_in_reasons)}")
    stored = None
    if reason is None:
        try:
            stored = _store(_file_bytes(deid.dataset), staged)
        except Exception as exc:  # a value pydicom cannot write back: the type only, no value
            return drop("ingest", "dicom.object_write", f"cannot write the de-identified object ({type(exc).__name__})")
    object_id = str(deid.dataset.get("SOPInstanceUID", "") or "").strip("\x00 ") or keys.uid(item.sha256)
    result.ingested += 1
    return {"object_id": object_id, "patient_id": deid.patient_pseudonym, "site": site,
            "study_id": fields["study_id"], "series_id": fields["series_id"] or None, "modality": fields["modality"],
            "sop_class": fields["sop_class_uid"], "kind": kind, "time": _time(deid.dataset, fields),
            "referenced_series": _referenced_series(deid.dataset), "stored": stored is not None,
            "file": stored.relative_to(staged.parent.parent).as_posix() if stored is not None else None,
            "not_stored_reason": reason, "source_sha256": item.sha256}


def ingest_object_group(group: SeriesGroup, landing: Path, staged: Path, keys: Pseudonymizer, site: str,
                        allow_burned_in: bool, result: BatchResult) -> list[dict]:
    """Every object of one group (one source series), in item order; rows of the `objects` table."""
    rows = []
    for item in group.items:
        row = ingest_object(item, landing, staged, keys, site, allow_burned_in, result)
        if row is not None:
            if row["file"]:
                result.files_written.append(row["file"])
            rows.append(row)
    return rows
