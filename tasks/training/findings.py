"""Radiology reports -> ordinal finding levels per image modality: the targets of image pre-training.

The lexicon (data_contracts/report_findings.yaml) names, per image modality, the report section of its exam and
each finding's levels with the phrases that state them. Reading is sentence-free on purpose: a section is the text
from its exam header to the next "EXAM:" header (or the end), and a finding's level is the first level (in the
file's order) one of whose phrases occurs in that section. Reports are curated (de-identified) text; no outcome
label is read, so patients without labels pre-train too.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

import yaml

LEXICON = Path(__file__).resolve().parents[2] / "data_contracts" / "report_findings.yaml"
NOT_STATED = -1


@lru_cache(maxsize=4)
def lexicon(path: Path = LEXICON) -> dict:
    return yaml.safe_load(Path(path).read_text())


def finding_levels(modality: str, path: Path = LEXICON) -> list[int]:
    """Number of levels of each finding of `modality`, in the lexicon's order (what the model's head predicts)."""
    spec = lexicon(path)["exams"][modality]["findings"]
    return [1 + max(entry["level"] for entry in levels) for levels in spec.values()]


def _section(text: str, headers: list[str]) -> str | None:
    low = text.lower()
    starts = [low.find(h.lower()) for h in headers if h.lower() in low]
    if not starts:
        return None
    start = min(starts)
    nxt = low.find("exam:", start + 5)
    return low[start: nxt if nxt > 0 else len(low)]


def read_findings(text: str | None, modality: str, path: Path = LEXICON) -> list[int]:
    """Level of each finding of `modality` stated in a report (-1 where the report's section does not state it)."""
    spec = lexicon(path)["exams"][modality]
    section = _section(text or "", spec["section"])
    out = []
    for levels in spec["findings"].values():
        level = NOT_STATED
        if section is not None:
            for entry in levels:
                if any(re.search(re.escape(p.lower()), section) for p in entry["phrases"]):
                    level = int(entry["level"])
                    break
        out.append(level)
    return out
