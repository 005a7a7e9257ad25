"""Which dataset version a stage reads: the one reader of that fact, and the type it is passed around as.

A dataset version is a published snapshot of data/curated: `mmfm version` commits it (git + dvc.lock) and records a
`version` ledger event naming `<git rev[:12]>-<curated md5[:12]>`. A model stage asks `current(root)`: dvc.lock's
md5 of data/curated, matched against those events; curated data validated but not (yet) published reads
`unversioned-<md5[:12]>`, so a run on it can never pass for a published version.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from tasks.lineage import Event, Ledger
from tasks.workspace import VALIDATION_REPORT, lock_hash


@dataclass(frozen=True)
class DatasetVersion:
    name: str  # what runs, tags, cards and the audit report call it
    curated_md5: str  # dvc.lock's md5 of data/curated
    contract_versions: dict[str, int] = field(default_factory=dict)  # contract -> version the data was validated by
    git_rev: str | None = None  # the workspace commit that published it (None: unpublished)
    event_id: str | None = None  # its `version` ledger event

    @property
    def published(self) -> bool:
        return self.git_rev is not None

    def facts(self) -> dict:
        """The keys every stage records (ledger facts, MLflow tags, meta.json)."""
        return {"curated_md5": self.curated_md5, "dataset_version": self.name,
                "contract_versions": dict(self.contract_versions)}

    @classmethod
    def from_event(cls, event: Event) -> DatasetVersion:
        f = event.facts or {}
        return cls(name=f["dataset_version"], curated_md5=f.get("curated_md5", ""),
                   contract_versions=f.get("contract_versions") or {}, git_rev=f.get("git_rev"),
                   event_id=event.event_id)


def published(root: Path) -> list[DatasetVersion]:
    """Every version `mmfm version` published in this workspace, oldest first."""
    return [DatasetVersion.from_event(e) for e in Ledger.of_workspace(Path(root)).events()
            if e.stage == "version" and (e.facts or {}).get("dataset_version")]


def find(root: Path, query: str) -> DatasetVersion | None:
    """A published version by its name or by (a prefix of) the git revision that published it; the newest wins."""
    for version in reversed(published(root)):
        if query and (version.name == query or str(version.git_rev or "").startswith(query)):
            return version
    return None


def current(root: Path) -> DatasetVersion:
    """The version of the curated data in the workspace now (what a model stage would train on)."""
    root = Path(root)
    curated = lock_hash(root, "validate", "data/curated")
    if curated is None:
        raise RuntimeError(f"{root}: data/curated is not recorded in dvc.lock: run the validate stage first")
    for version in reversed(published(root)):
        if version.curated_md5 == curated:
            if version.contract_versions:
                return version
            return DatasetVersion(version.name, curated, _validated_contracts(root), version.git_rev,
                                  version.event_id)
    return DatasetVersion(f"unversioned-{curated[:12]}", curated, _validated_contracts(root))


def _validated_contracts(root: Path) -> dict[str, int]:
    report = root / "data" / "reports" / VALIDATION_REPORT
    return json.loads(report.read_text()).get("contract_versions", {}) if report.exists() else {}
