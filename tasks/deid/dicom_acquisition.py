"""Acquisition parameters a staged imaging row may carry, per modality: numbers in a plausible range and defined
terms only, read from the DE-IDENTIFIED dataset (issue 18 item 4).

Why an allow-list and not "the acquisition module": most of what describes an acquisition is free text a site fills
as it likes (SequenceName, ProtocolName, SeriesDescription, a radiopharmaceutical's name) and may hold a name or an
accession number; the staged tables take checked values only (like tasks.deid.dicom.staged_fields). A number outside
its range, a term off its list, or a code that does not look like a code becomes null, never the value.

    MR  field_strength_t, repetition_time_ms, echo_time_ms, flip_angle_deg, mr_acquisition_type (2D/3D)
    PT  radionuclide (CodeValue of RadionuclideCodeSequence in a standard scheme), pet_units (PS3.3 C.8.9.1 terms)
    MG  view_position, laterality (ImageLaterality)
    US, NM, CT, DX, CR: none
Enhanced MR objects keep TR, flip angle and echo time in functional groups; they are read from there when the
top level lacks them.
"""

from __future__ import annotations

import math
import re

from pydicom.dataset import Dataset

COLUMNS = ("field_strength_t", "repetition_time_ms", "echo_time_ms", "flip_angle_deg", "mr_acquisition_type",
           "radionuclide", "pet_units", "view_position", "laterality")
MR_ACQUISITION_TYPES = frozenset({"2D", "3D"})
PET_UNITS = frozenset({"CNTS", "NONE", "CM2", "CM2ML", "PCNT", "CPS", "BQML", "MGMINML", "UMOLMINML", "MLMGM",
                       "MLG", "1CM", "UMOLML", "PROPCNTS", "PROPCPS", "MLMINML", "MLML", "GML", "STDDEV"})
# PS3.3 C.8.11.7 / CID 4014 view codes as View Position defined terms
MG_VIEWS = frozenset({"CC", "MLO", "ML", "LM", "LMO", "FB", "SIO", "XCC", "XCCL", "XCCM", "AT", "RL", "RM", "ID",
                      "TAN", "CV", "NP"})
LATERALITY = frozenset({"L", "R", "U", "B"})
CODE_SCHEMES = frozenset({"SRT", "SCT", "DCM", "99SDM"})  # standard schemes: their codes are not free text
CODE = re.compile(r"[A-Z0-9][A-Z0-9.\-]{0,15}")
RANGES = {"field_strength_t": (0.01, 20.0), "repetition_time_ms": (0.0, 100000.0), "echo_time_ms": (0.0, 10000.0),
          "flip_angle_deg": (0.0, 360.0)}


def _number(value, column: str) -> float | None:
    try:
        number = float(value[0] if isinstance(value, list | tuple) else value)
    except (TypeError, ValueError, IndexError):
        return None
    lo, hi = RANGES[column]
    return number if math.isfinite(number) and lo <= number <= hi else None


def _term(ds: Dataset, keyword: str, allowed: frozenset[str]) -> str | None:
    value = str(ds.get(keyword, "") or "").strip("\x00 \t\r\n").upper()
    return value if value in allowed else None


def _nested(ds: Dataset, path: tuple[str, ...], keyword: str):
    """`keyword` of the first item down `path` (sequence keywords), in the top level, then the shared groups."""
    for start in (ds, *(ds.get("SharedFunctionalGroupsSequence") or [])[:1]):
        item = start
        for seq in path:
            items = item.get(seq) if item is not None else None
            item = items[0] if items else None
        if item is not None and keyword in item:
            return item.get(keyword)
    return None


def _mr(ds: Dataset) -> dict:
    tr = ds.get("RepetitionTime") or _nested(ds, ("MRTimingAndRelatedParametersSequence",), "RepetitionTime")
    te = ds.get("EchoTime") or _nested(ds, ("MREchoSequence",), "EffectiveEchoTime")
    flip = ds.get("FlipAngle") or _nested(ds, ("MRTimingAndRelatedParametersSequence",), "FlipAngle")
    return {"field_strength_t": _number(ds.get("MagneticFieldStrength"), "field_strength_t"),
            "repetition_time_ms": _number(tr, "repetition_time_ms"), "echo_time_ms": _number(te, "echo_time_ms"),
            "flip_angle_deg": _number(flip, "flip_angle_deg"),
            "mr_acquisition_type": _term(ds, "MRAcquisitionType", MR_ACQUISITION_TYPES)}


def _pt(ds: Dataset) -> dict:
    code = None
    radio = ds.get("RadiopharmaceuticalInformationSequence") or []
    nuclide = (radio[0].get("RadionuclideCodeSequence") or []) if radio else []
    if nuclide:
        scheme = str(nuclide[0].get("CodingSchemeDesignator", "") or "").strip().upper()
        value = str(nuclide[0].get("CodeValue", "") or "").strip().upper()
        code = value if scheme in CODE_SCHEMES and CODE.fullmatch(value) else None
    return {"radionuclide": code, "pet_units": _term(ds, "Units", PET_UNITS)}


def _mg(ds: Dataset) -> dict:
    return {"view_position": _term(ds, "ViewPosition", MG_VIEWS),
            "laterality": _term(ds, "ImageLaterality", LATERALITY) or _term(ds, "Laterality", LATERALITY)}


READERS = {"MR": _mr, "PT": _pt, "MG": _mg}


def acquisition_fields(ds: Dataset, modality: str | None) -> dict:
    """Every column of COLUMNS (null where the modality has none, or the value is not a checked one)."""
    out = dict.fromkeys(COLUMNS)
    reader = READERS.get(modality or "")
    if reader is not None:
        try:
            out.update(reader(ds))
        except Exception:  # a damaged sequence: nothing staged from it (and no value in any message)
            pass
    return out
