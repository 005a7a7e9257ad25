"""Deliberate defects for `--corrupt-rate`: the faults real extracts carry, each reported to the truth file.

Every corruption is drawn from the patient's own "corrupt" stream, after the clean content is fixed, so the same
seed gives the same patients at any corrupt rate and the list in truth/corruptions.jsonl is exactly what was broken.
"""

from __future__ import annotations

import numpy as np

from data_contracts import lab_by_loinc, ucum

# kinds, as they appear in truth/corruptions.jsonl
TRUNCATED_DICOM = "truncated_dicom"
INVALID_JSON = "invalid_json"
DUPLICATE_RESOURCE = "duplicate_resource"
WRONG_UNIT = "wrong_unit"
IMPOSSIBLE_VALUE = "impossible_value"
MISSING_PATIENT = "missing_patient_reference"
INVALID_OMICS_VALUE = "invalid_omics_value"
KINDS = (TRUNCATED_DICOM, INVALID_JSON, DUPLICATE_RESOURCE, WRONG_UNIT, IMPOSSIBLE_VALUE, MISSING_PATIENT,
         INVALID_OMICS_VALUE)

FOREIGN_UNITS = ("kg", "mmol/L", "s", "mm[Hg]")  # valid UCUM, but no lab's unit converts to all of them


def truncate_file(path, rng: np.random.Generator) -> None:
    """Cut a file to 30-70% of its length, as an interrupted transfer does (the pixel data is lost)."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * rng.uniform(0.3, 0.7))])


def break_observation(obs: dict, rng: np.random.Generator, kind: str) -> None:
    """Corrupt one Observation in place: a unit foreign to its LOINC code (UCUM, but not commensurable with the
    code's canonical unit: ingest converts any commensurable one), an impossible value, or a subject reference to a
    patient who is not in the extract."""
    if kind == MISSING_PATIENT:
        obs["subject"] = {"reference": f"Patient/{rng.integers(0, 2**63):016x}"}
        return
    quantity = obs["valueQuantity"]
    lab = lab_by_loinc()[obs["code"]["coding"][0]["code"]]
    if kind == WRONG_UNIT:
        unit = str(rng.choice([u for u in FOREIGN_UNITS
                               if not ucum.commensurable(u, lab.canonical, lab.molar_mass)]))
        quantity["unit"] = quantity["code"] = unit
    elif kind == IMPOSSIBLE_VALUE:
        high = lab.plausible[1]
        canonical = -rng.uniform(1.0, 10.0) if rng.random() < 0.5 else high * rng.uniform(1.5, 3.0) + 1.0
        quantity["value"] = round(lab.from_canonical(canonical, quantity["unit"]), 2)
    else:
        raise ValueError(f"not an Observation corruption: {kind}")


def break_json(line: str, rng: np.random.Generator) -> str:
    """Cut a serialised resource mid-way: the line no longer parses as JSON."""
    return line[: int(len(line) * rng.uniform(0.2, 0.8))]
