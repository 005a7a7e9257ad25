"""An Observation as lab readings: which parts carry a LOINC-coded value, and the checks a reading must pass.

Why parts: a hospital's Observation is not one number. Blood pressure (85354-9) is a panel whose values sit in
`component[]` (8480-6 systolic, 8462-4 diastolic), each with its own code, unit, reference range and interpretation;
a CBC panel has no value at all (its members are Observations of their own). So each part with a value is one row
(tasks/ingest/fhir_flatten.py), and an Observation with no value anywhere is ingested without a row.

Any LOINC code is accepted: the catalogue (data_contracts/labs.yaml) adds plausible ranges for the codes it knows.
Checks here run before de-identification (tasks/ingest/fhir_parse.py) and quarantine the whole Observation:
    labs.code       a part with a value, or an Observation with neither value nor components, has no LOINC coding
                    of LOINC grammar
    labs.value      a value of a type we do not stage (valueRange, valueRatio, ...) or a quantity without a number
    labs.unit       a quantity whose unit is not UCUM, or not commensurable with its code's canonical unit
    labs.plausible  a catalogued code's value outside its possible range (in the canonical unit)
Messages name the rule's element path (`Observation.component[1].valueQuantity.code`), never a value, a unit or a
code of the record; a catalogued code and its unit are named from the catalogue.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from data_contracts import ucum
from tasks.ingest.lab_units import LabUnits

LOINC = "http://loinc.org"
LOINC_CODE = re.compile(r"\d{1,7}-\d")
VALUE_TYPES = {"valueQuantity": "quantity", "valueInteger": "integer", "valueCodeableConcept": "coded",
               "valueBoolean": "boolean", "valueString": "text"}
OTHER_VALUES = ("valueRange", "valueRatio", "valueSampledData", "valueTime", "valueDateTime", "valuePeriod")


@dataclass(frozen=True)
class Part:
    """The Observation itself (index None) or one of its components, with its LOINC code and value element."""

    path: str  # FHIR element path for messages: "Observation" or "Observation.component[2]"
    index: int | None
    loinc: str | None
    node: dict
    value_key: str | None  # "valueQuantity", ...; None: the part has no value


def loinc_code(concept: object) -> str | None:
    """The first LOINC code of a CodeableConcept that has LOINC's grammar."""
    codings = concept.get("coding") if isinstance(concept, dict) else None
    for c in codings if isinstance(codings, list) else []:
        if isinstance(c, dict) and c.get("system") == LOINC and isinstance(c.get("code"), str) \
                and LOINC_CODE.fullmatch(c["code"]):
            return c["code"]
    return None


def _value_key(node: dict) -> str | None:
    keys = [k for k in node if isinstance(k, str) and k.startswith("value") and k[5:6].isupper()]
    return keys[0] if keys else None


def parts(obs: dict) -> list[Part]:
    """The Observation (when it has a value, or has no components) and each component, in order."""
    out, components = [], obs.get("component")
    components = components if isinstance(components, list) else []
    key = _value_key(obs)
    if key is not None or not components:
        out.append(Part("Observation", None, loinc_code(obs.get("code")), obs, key))
    for k, comp in enumerate(components):
        comp = comp if isinstance(comp, dict) else {}
        out.append(Part(f"Observation.component[{k}]", k, loinc_code(comp.get("code")), comp, _value_key(comp)))
    return out


def quantity(node: dict) -> tuple[object, object]:
    """(value, unit) of a valueQuantity: the UCUM `code`, else the human-readable `unit` (often UCUM as well)."""
    qty = node.get("valueQuantity") if isinstance(node.get("valueQuantity"), dict) else {}
    return qty.get("value"), qty.get("code", qty.get("unit"))


def _number(value: object) -> bool:
    """A finite JSON number (Python's json reads NaN and Infinity, which FHIR does not allow)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def propose_units(obs: dict, units: LabUnits) -> None:
    """First phase (lab_units.py): the unit of each quantity part, as a candidate canonical unit for its code."""
    for p in parts(obs):
        if p.value_key == "valueQuantity" and p.loinc is not None:
            value, unit = quantity(p.node)
            if _number(value):
                units.propose(p.loinc, unit)


def check(obs: dict, units: LabUnits) -> tuple[str, str] | None:
    """(rule, message) of the first fault of an Observation, None when every part is stageable."""
    for p in parts(obs):
        if p.loinc is None and (p.value_key is not None or p.index is None):
            return "labs.code", f"{p.path}.code has no LOINC coding of LOINC grammar"
        if p.value_key is None:
            continue
        if p.value_key not in VALUE_TYPES:
            name = p.value_key if p.value_key in OTHER_VALUES else "value[x]"
            return "labs.value", f"{p.path}.{name} is not a staged value type ({', '.join(VALUE_TYPES)})"
        fault = _check_value(p, units)
        if fault is not None:
            return fault
    return None


def _check_value(p: Part, units: LabUnits) -> tuple[str, str] | None:
    if p.value_key == "valueInteger" and not _number(p.node.get("valueInteger")):
        return "labs.value", f"{p.path}.valueInteger is not an integer"
    if p.value_key != "valueQuantity":
        return None
    value, unit = quantity(p.node)
    if not _number(value):
        return "labs.value", f"{p.path}.valueQuantity.value is not a number"
    if ucum.parse(unit) is None:
        return "labs.unit", f"{p.path}.valueQuantity.code is not a UCUM unit"
    lab, converted = units.lab(p.loinc), units.to_canonical(p.loinc, value, unit)
    if converted is None:
        known = f" ({lab.canonical} for LOINC {lab.loinc})" if lab is not None else ""
        return "labs.unit", f"{p.path}.valueQuantity.code is not commensurable with the code's canonical unit{known}"
    if lab is not None and not lab.plausible[0] <= converted <= lab.plausible[1]:
        return "labs.plausible", (f"{p.path}.valueQuantity.value outside the possible range {lab.plausible[0]:g}-"
                                  f"{lab.plausible[1]:g} {lab.canonical} for LOINC {lab.loinc}")
    return None
