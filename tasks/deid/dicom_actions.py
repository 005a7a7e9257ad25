"""Element-level actions of PS3.15 Table E.1-1 on pydicom elements: remove (X), empty (Z), dummy (D), UID (U),
clean dates (C, the modified-dates option), plus our two overrides (pseudonym, age cap).

Each function mutates one element or dataset entry in place and never reads a value into a message.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from pydicom.dataelem import DataElement, empty_value_for_VR
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence

from tasks.deid.dates import shift_dicom_da, shift_dicom_dt
from tasks.deid.pseudonym import Pseudonymizer

DICOM_ROOT = "1.2.840.10008."  # UIDs the standard itself defines (SOP classes, transfer syntaxes, well-known FoRs)
TEXT_DUMMY = "ANON"  # fits every string VR's length limit (CS 16, AE 16, SH 16) and CS's upper-case rule
DUMMY_BY_VR: dict[str, object] = {
    "AE": TEXT_DUMMY, "CS": TEXT_DUMMY, "LO": TEXT_DUMMY, "LT": TEXT_DUMMY, "PN": TEXT_DUMMY, "SH": TEXT_DUMMY,
    "ST": TEXT_DUMMY, "UC": TEXT_DUMMY, "UT": TEXT_DUMMY, "UR": "http://anonymized.invalid",
    "AS": "000Y", "DA": "19000101", "DT": "19000101000000", "TM": "000000", "DS": "0", "IS": "0",
    "US": 0, "SS": 0, "UL": 0, "SL": 0, "FL": 0.0, "FD": 0.0, "SV": 0, "UV": 0, "AT": 0,
}
BINARY_DUMMY = b"\x00\x00"  # OB/OW/OD/OF/OL/OV/UN: even length, not empty
AGE = re.compile(r"(\d{3})([DWMY])")
AGE_CAP_YEARS = 89
TEMPORAL_VRS = {"DA", "DT", "TM"}


def values_of(elem: DataElement) -> list:
    """An element's value as a list (empty for an empty element), whatever its multiplicity."""
    if elem.value is None or elem.value == "":
        return []
    if isinstance(elem.value, MultiValue | list | tuple):
        return list(elem.value)
    return [elem.value]


def set_values(elem: DataElement, values: list) -> None:
    elem.value = values[0] if len(values) == 1 else values


def empty(elem: DataElement) -> None:
    """Z: present with zero length (a Type 2 attribute stays conformant)."""
    elem.value = Sequence([]) if elem.VR == "SQ" else empty_value_for_VR(elem.VR)


def dummy(elem: DataElement, uids: UidMapper) -> None:
    """D: a non-empty value of the right VR that says nothing; a sequence keeps one empty item."""
    if elem.VR == "SQ":
        elem.value = Sequence([Dataset()])
    elif elem.VR == "UI":
        if not uids.replace(elem, force=True):
            elem.value = uids.keys.uid("dummy")
    elif elem.VR in DUMMY_BY_VR:
        elem.value = DUMMY_BY_VR[elem.VR]
    else:
        elem.value = BINARY_DUMMY


def shift_dates(elem: DataElement, offset_days: int) -> bool:
    """C for DA/DT: shift every value by the patient's offset; TM is kept (whole-day shifts leave times alone).

    Raises UnshiftableDate for a value that is not a date, so the caller can fall back to removal.
    """
    if elem.VR == "DA":
        set_values(elem, [shift_dicom_da(str(v), offset_days) for v in values_of(elem)])
    elif elem.VR == "DT":
        set_values(elem, [shift_dicom_dt(str(v), offset_days) for v in values_of(elem)])
    return elem.VR in TEMPORAL_VRS


def cap_age(elem: DataElement) -> str:
    """Keep an AS age, but ages over 89 years become '090Y' (HIPAA's 90-or-older). Returns the action applied."""
    values = [str(v).strip() for v in values_of(elem)]
    if not values:
        return "K"
    if not all(AGE.fullmatch(v) for v in values):
        elem.value = empty_value_for_VR("AS")
        return "Z"
    capped = ["090Y" if v.endswith("Y") and int(v[:3]) > AGE_CAP_YEARS else v for v in values]
    set_values(elem, capped)
    return "C" if capped != values else "K"


class UidMapper:
    """Replaces instance-like UIDs with keyed 2.25 UIDs; keeps class, syntax and well-known ones."""

    def __init__(self, keys: Pseudonymizer, keep_keyword_patterns: Iterable[re.Pattern[str]]) -> None:
        self.keys = keys
        self.keep_patterns = tuple(keep_keyword_patterns)

    def keeps_keyword(self, keyword: str) -> bool:
        return any(p.search(keyword) for p in self.keep_patterns)

    def map(self, uid: str) -> str:
        uid = str(uid).strip().rstrip("\x00")
        if not uid or uid.startswith(DICOM_ROOT):
            return uid
        return self.keys.uid(uid)

    def replace(self, elem: DataElement, force: bool = False) -> bool:
        """Map each value of a UI element; True if anything changed. `force` ignores the keyword keep-list."""
        if elem.VR != "UI" or (not force and self.keeps_keyword(elem.keyword)):
            return False
        old = [str(v) for v in values_of(elem)]
        new = [self.map(v) for v in old]
        if new == old:
            return False
        set_values(elem, new)
        return True
