"""Shift dates by whole days, keeping each string's own format, precision and time zone.

One implementation for DICOM (DA, DT), FHIR (date, dateTime, instant) and notes, so that a patient's studies,
encounters and reports move by the same number of days and every interval between them survives. Whole-day
shifts leave times of day untouched, which is why TM values and the time part of a DT or dateTime are kept.

Partial dates (a year, or a year and month) are shifted from their first day and written back at their own
precision: the interval is then approximate, which is all such a value ever claimed.
"""

from __future__ import annotations

import re
from datetime import date, timedelta

DICOM_DA = re.compile(r"(\d{4})(\d{2})(\d{2})")
DICOM_DA_OLD = re.compile(r"(\d{4})\.(\d{2})\.(\d{2})")  # ACR-NEMA style, still seen in old archives
DICOM_DT = re.compile(r"(\d{4})(\d{2})?(\d{2})?((?:\d{2}){0,3}(?:\.\d{1,6})?(?:[+-]\d{4})?)")
FHIR_DATE = re.compile(
    r"(\d{4})(?:-(\d{2})(?:-(\d{2})((?:T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?)?(?:Z|[+-]\d{2}:\d{2})?)?)?)?")


class UnshiftableDate(ValueError):
    """The string is not a date in the expected format (the caller removes it instead; no value quoted)."""


def shift_ymd(year: int, month: int | None, day: int | None, offset_days: int) -> tuple[int, int | None, int | None]:
    """Shift a possibly partial date; missing parts are anchored at 1 and dropped again after the shift."""
    try:
        shifted = date(year, month or 1, day or 1) + timedelta(days=offset_days)
    except (ValueError, OverflowError):
        raise UnshiftableDate("date out of range") from None
    return shifted.year, (shifted.month if month else None), (shifted.day if day else None)


def shift_dicom_da(value: str, offset_days: int) -> str:
    """'20210304' -> '20190612' style; DA may be multi-valued ('\\'-separated at this level is handled by caller)."""
    text = value.strip()
    if not text:
        return value
    match = DICOM_DA.fullmatch(text)
    old = None if match else DICOM_DA_OLD.fullmatch(text)
    match = match or old
    if match is None:
        raise UnshiftableDate("not a DICOM DA")
    y, m, d = shift_ymd(int(match[1]), int(match[2]), int(match[3]), offset_days)
    return f"{y:04d}.{m:02d}.{d:02d}" if old else f"{y:04d}{m:02d}{d:02d}"


def shift_dicom_dt(value: str, offset_days: int) -> str:
    """Shift the date part of a DICOM DT; time, fraction and UTC offset are kept as written."""
    text = value.strip()
    if not text:
        return value
    match = DICOM_DT.fullmatch(text)
    if match is None or (match[3] is None and match[4][:1].isdigit()):
        raise UnshiftableDate("not a DICOM DT")
    month = int(match[2]) if match[2] else None
    y, m, d = shift_ymd(int(match[1]), month, int(match[3]) if match[3] else None, offset_days)
    return f"{y:04d}" + (f"{m:02d}" if m else "") + (f"{d:02d}" if d else "") + match[4]


def shift_fhir(value: str, offset_days: int) -> str:
    """Shift a FHIR date, dateTime or instant, keeping its precision and its time-zone suffix."""
    match = FHIR_DATE.fullmatch(value)
    if match is None:
        raise UnshiftableDate("not a FHIR date/dateTime/instant")
    y, m, d = shift_ymd(int(match[1]), int(match[2]) if match[2] else None,
                        int(match[3]) if match[3] else None, offset_days)
    return f"{y:04d}" + (f"-{m:02d}" if m else "") + (f"-{d:02d}" if d else "") + (match[4] or "")


def age_on(birth: date, on: date) -> int:
    """Completed years between two dates (the usual 'age at')."""
    return on.year - birth.year - ((on.month, on.day) < (birth.month, birth.day))
