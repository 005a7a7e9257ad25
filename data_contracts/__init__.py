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
    """One accepted lab/vital: LOINC code, canonical UCUM unit, valid alternatives and the plausible range."""

    key: str
    loinc: str
    display: str
    category: str
    canonical: str
    alternatives: dict[str, tuple[float, float]]  # unit -> (factor, offset): canonical = value * factor + offset
    plausible: tuple[float, float]
    catalog_version: int

    def to_canonical(self, value: float, unit: str) -> float:
        """Convert `value` in `unit` to the canonical unit; KeyError names the unit if it is not valid here."""
        if unit == self.canonical:
            return value
        factor, offset = self.alternatives[unit]
        return value * factor + offset

    def from_canonical(self, value: float, unit: str) -> float:
        if unit == self.canonical:
            return value
        factor, offset = self.alternatives[unit]
        return (value - offset) / factor

    @property
    def units(self) -> tuple[str, ...]:
        return (self.canonical, *self.alternatives)


@cache
def lab_catalog() -> dict[str, LabCode]:
    """Lab catalogue keyed by our short key (e.g. 'crp'); see labs.yaml."""
    raw = yaml.safe_load((HERE / "labs.yaml").read_text())
    out = {}
    for key, spec in raw["labs"].items():
        alts = {u: (float(a["factor"]), float(a.get("offset", 0.0))) for u, a in (spec["alternatives"] or {}).items()}
        out[key] = LabCode(key=key, loinc=spec["loinc"], display=spec["display"], category=spec["category"],
                           canonical=spec["canonical"], alternatives=alts, plausible=tuple(spec["plausible"]),
                           catalog_version=int(raw["version"]))
    return out


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
