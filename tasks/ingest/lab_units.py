"""One canonical UCUM unit per LOINC code, for every code an export carries.

A catalogued code (data_contracts/labs.yaml) is curated in the catalogue's unit. Any other code is curated in the
first UCUM unit the workspace saw for it, recorded in the ingest state (IngestState.lab_units, .mmfm/ingest.db) so
that every later extract, of any site, converts to the same unit: the model reads one number per code, and two sites
reporting the same code in mg/dL and g/L must not give it two scales. Conversions are the UCUM library's
(data_contracts/ucum.py); the catalogue adds only molar masses.

Resolution is two-phase so that concurrent ingests agree: `propose` collects the first unit of each new code in an
extract, `resolve` records them (a code recorded meanwhile by another run keeps that run's unit) and reads back the
workspace's table; only then are readings checked and converted.
"""

from __future__ import annotations

from data_contracts import LabCode, lab_by_loinc, ucum
from tasks.ingest.state import IngestState


class LabUnits:
    """The canonical unit of each LOINC code and conversions to it; without a state, units live for one run."""

    def __init__(self, state: IngestState | None = None) -> None:
        self.state = state
        self.catalogue: dict[str, LabCode] = lab_by_loinc()
        self.recorded: dict[str, str] = state.lab_units() if state is not None else {}
        self._proposed: dict[str, str] = {}

    def propose(self, loinc: str, unit: object) -> None:
        """Note `unit` as the canonical one for `loinc` if the code has none yet and the unit is UCUM."""
        if loinc in self.catalogue or loinc in self.recorded or loinc in self._proposed:
            return
        if isinstance(unit, str) and ucum.parse(unit) is not None:
            self._proposed[loinc] = unit

    def resolve(self) -> None:
        """Record the proposed units (first writer wins) and adopt the workspace's table."""
        if self.state is not None:
            self.recorded = self.state.lab_units(self._proposed)
        else:
            self.recorded = {**self._proposed, **self.recorded}
        self._proposed = {}

    def canonical(self, loinc: str) -> str | None:
        lab = self.catalogue.get(loinc)
        return lab.canonical if lab is not None else self.recorded.get(loinc)

    def lab(self, loinc: str) -> LabCode | None:
        return self.catalogue.get(loinc)

    def to_canonical(self, loinc: str, value: float, unit: object) -> float | None:
        """`value` in `unit` converted to the code's canonical unit; None when the unit is not UCUM, the code has no
        canonical unit yet, or the units are not commensurable (with the catalogue's molar mass, if any)."""
        target = self.canonical(loinc)
        if target is None or not isinstance(unit, str) or ucum.parse(unit) is None:
            return None
        lab = self.catalogue.get(loinc)
        return ucum.convert(value, unit, target, lab.molar_mass if lab is not None else None)
