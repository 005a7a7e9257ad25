"""A tiny workspace with three chained stages: landing -> staged -> curated, each recorded in the ledger."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from tasks.lineage import Event, Ledger, artifact_entry


@dataclass
class Chain:
    root: Path
    ledger: Ledger
    landing: Event
    staged: Event
    curated: Event


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def record_chain(root: Path, ledger: Ledger) -> Chain:
    landed = write(root / "data/landing/objects/ab/ab01", b"raw extract bytes")
    part0 = write(root / "data/staged/labs/part-0.parquet", b"staged part zero")
    write(root / "data/staged/labs/part-1.parquet", b"staged part one")
    curated = write(root / "data/curated/labs.parquet", b"curated labs table")
    landing = ledger.append("landing", "run-land", outputs=[artifact_entry(landed, root)], facts={"files": 1},
                            actor="alice-operator")
    staged = ledger.append("staged", "run-stage", inputs=[artifact_entry(landed, root)],
                           outputs=[artifact_entry(part0.parent, root)], params={"rows_per_part": 2})
    curated_ev = ledger.append("curated", "run-curate", inputs=[artifact_entry(part0.parent, root)],
                               outputs=[artifact_entry(curated, root)], facts={"rows": 4, "quarantined": 0})
    return Chain(root, ledger, landing, staged, curated_ev)


@pytest.fixture()
def chain(tmp_path: Path) -> Chain:
    return record_chain(tmp_path, Ledger.of_workspace(tmp_path))
