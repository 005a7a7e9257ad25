"""Declarative data contracts: table schemas, value sets and catalogues, versioned with the code.

Nothing here imports flows, tasks or models; loaders only read the YAML beside them.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

import yaml

HERE = Path(__file__).parent


@dataclass(frozen=True)
class LabCode:
    """What the catalogue knows about one LOINC code: its canonical UCUM unit, the other units the synthetic
    generator uses, the plausible (and optionally reference) range, and the molar mass where mass and substance
    concentrations meet. Conversions come from the UCUM library (data_contracts/ucum.py), not from this file."""

    key: str
    loinc: str
    display: str
    category: str
    canonical: str
    alternatives: dict[str, tuple[float, float]]  # unit -> (factor, offset): canonical = value * factor + offset
    plausible: tuple[float, float]
    catalog_version: int
    reference: tuple[float, float] | None = None
    molar_mass: float | None = None  # g/mol
    model_input: bool = True  # in the `labs` section (the labs encoder's codes), not `more_labs`

    def to_canonical(self, value: float, unit: str) -> float:
        """Convert `value` in `unit` to the canonical unit; KeyError names the unit if it is not commensurable."""
        from data_contracts import ucum  # pint and lark load on first use, not with every contract reader

        out = ucum.convert(value, unit, self.canonical, self.molar_mass)
        if out is None:
            raise KeyError(unit)
        return out

    def from_canonical(self, value: float, unit: str) -> float:
        from data_contracts import ucum

        out = ucum.convert(value, self.canonical, unit, self.molar_mass)
        if out is None:
            raise KeyError(unit)
        return out

    @property
    def units(self) -> tuple[str, ...]:
        """The canonical unit and the catalogue's alternatives (any commensurable UCUM unit converts, too)."""
        return (self.canonical, *self.alternatives)


def _lab_code(key: str, spec: dict, version: int, model_input: bool) -> LabCode:
    from data_contracts import ucum

    molar_mass = float(spec["molar_mass"]) if spec.get("molar_mass") else None
    alternatives = {}
    for unit in spec.get("units") or ():
        linear = ucum.affine(unit, spec["canonical"], molar_mass)
        if linear is None:
            raise ValueError(f"labs.yaml: {key}: unit {unit} does not convert to {spec['canonical']}")
        alternatives[unit] = linear
    reference = tuple(float(x) for x in spec["reference"]) if spec.get("reference") else None
    return LabCode(key=key, loinc=str(spec["loinc"]), display=spec["display"], category=spec["category"],
                   canonical=spec["canonical"], alternatives=alternatives,
                   plausible=tuple(float(x) for x in spec["plausible"]), catalog_version=version,
                   reference=reference, molar_mass=molar_mass, model_input=model_input)


@cache
def lab_catalog() -> dict[str, LabCode]:
    """Lab catalogue keyed by our short key (e.g. 'crp'), `labs` then `more_labs`; see labs.yaml."""
    raw = yaml.safe_load((HERE / "labs.yaml").read_text())
    version = int(raw["version"])
    out = {key: _lab_code(key, spec, version, True) for key, spec in raw["labs"].items()}
    out.update({key: _lab_code(key, spec, version, False) for key, spec in (raw.get("more_labs") or {}).items()})
    return out


@cache
def lab_by_loinc() -> dict[str, LabCode]:
    return {lab.loinc: lab for lab in lab_catalog().values()}


@dataclass(frozen=True)
class DiagnosisClass:
    """One class of the diagnosis task: its name, and the condition code that assigns it (labels.yaml)."""

    name: str
    code: str
    display: str
    system: str


@cache
def diagnosis_classes() -> tuple[DiagnosisClass, ...]:
    """The diagnosis task's classes in the model's output order (labels.yaml)."""
    raw = yaml.safe_load((HERE / "labels.yaml").read_text())["diagnosis"]
    return tuple(DiagnosisClass(name=c["name"], code=str(c["code"]), display=c["display"], system=raw["system"])
                 for c in raw["classes"])


def diagnosis_names() -> tuple[str, ...]:
    return tuple(c.name for c in diagnosis_classes())


@cache
def table_schemas() -> dict[str, dict[str, str]]:
    """Column -> polars dtype name for every staged/curated table with a fixed schema (tables.yaml)."""
    return yaml.safe_load((HERE / "tables.yaml").read_text())["tables"]
