"""Monitoring as an auditor reads it: each drift report's status, and per site and per family what was found.

Why: mmfm decides drift per site and per family (tabular groups, predictions, embeddings per modality,
performance); a committee needs that decision, not a flattened list of numbers. The findings are rebuilt from the
structured drift.json (statuses, p-values, thresholds, feature names of mmfm's own tables), never from its
free-text `findings` line, which may quote category values: nothing here can carry a value of the data.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tasks.lineage import Event, artifact_sha256

NO_MONITORING = "no monitoring run yet"
STATUSES = ("ok", "drift", "insufficient")


def _scalars(d: Mapping, depth: int = 2, prefix: str = "") -> dict[str, float | int | bool]:
    """Numbers and booleans only (flattened `a.b`): what a monitoring file may contribute without leaking values."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, bool | int | float):
            out[f"{prefix}{k}"] = v
        elif isinstance(v, Mapping) and depth > 1:
            out.update(_scalars(v, depth - 1, f"{prefix}{k}."))
    return out


def _num(v: Any) -> float | int | None:
    return v if isinstance(v, int | float) and not isinstance(v, bool) else None


def _min_p(features: Mapping) -> float | None:
    ps = [_num(f.get("p_value")) for f in features.values() if isinstance(f, Mapping)]
    ps = [p for p in ps if p is not None]
    return min(ps) if ps else None


def _state(entry: Mapping) -> str:
    status = entry.get("status")
    if status in ("insufficient", "not_tested", "skipped") or (status and status != "tested"
                                                                and "drifted" not in entry):
        return "insufficient"
    return "drift" if entry.get("drifted") is True else "ok"


def _tabular_rows(family: str, block: Mapping, threshold: Any) -> list[dict]:
    rows = []
    for site, entry in sorted((block.get("sites") or {}).items()):
        if not isinstance(entry, Mapping):
            continue
        groups = entry.get("groups") or {}
        if not groups or entry.get("status") not in (None, "tested"):
            rows.append({"site": site, "family": family, "state": _state(entry), "n": _num(entry.get("n")),
                         "min_p": None, "threshold": threshold, "drifted_features": [],
                         "why": str(entry.get("reason") or entry.get("status") or "")[:120]})
            continue
        for group, g in sorted(groups.items()):
            feats = g.get("features") or {}
            rows.append({"site": site, "family": f"{family}: {group}", "state": _state(g),
                         "n": _num(entry.get("n")), "min_p": _min_p(feats), "threshold": threshold,
                         "drifted_features": sorted(k for k, f in feats.items()
                                                    if isinstance(f, Mapping) and f.get("drifted") is True),
                         "why": ""})
    return rows


def _embedding_rows(block: Mapping) -> list[dict]:
    rows = []
    for modality, m in sorted((block.get("modalities") or {}).items()):
        if not isinstance(m, Mapping):
            continue
        for site, e in sorted((m.get("sites") or {}).items()):
            if isinstance(e, Mapping):
                rows.append({"site": site, "family": f"embedding: {modality}", "state": _state(e),
                             "n": _num(e.get("n")), "min_p": _num(e.get("p_value")),
                             "threshold": _num(block.get("threshold")), "drifted_features": [],
                             "why": str(e.get("reason") or "")[:120]})
    return rows


def _performance_row(p: Mapping) -> list[dict]:
    if not p:
        return []
    measured = p.get("status") == "measured"
    return [{"site": "all sites", "family": "performance", "state": _state({**p, "status": "tested"})
             if measured else "insufficient", "n": _num(p.get("labelled")), "min_p": _num(p.get("p_value")),
             "threshold": _num(p.get("tolerance")), "drifted_features": [],
             "why": "" if measured else str(p.get("status") or "")[:120],
             "drop": _num(p.get("drop")), "value": _num(p.get("auroc_macro")), "at_evaluation":
                 _num(p.get("at_evaluation"))}]


def findings(raw: Mapping) -> dict:
    """Per report: status, flagged / insufficient sites, and one row per (site, family) that was decided."""
    rows = [*_tabular_rows("tabular", raw.get("tabular") or {}, _num((raw.get("tabular") or {}).get("threshold"))),
            *_tabular_rows("predictions", raw.get("predictions") or {},
                           _num((raw.get("predictions") or {}).get("threshold"))),
            *_embedding_rows(raw.get("embedding") or {}), *_performance_row(raw.get("performance") or {})]
    sites: dict[str, str] = {}
    for r in rows:
        if r["site"] == "all sites":
            continue
        before = sites.get(r["site"], "ok")
        sites[r["site"]] = "drift" if "drift" in (before, r["state"]) else (
            "insufficient" if "insufficient" in (before, r["state"]) else "ok")
    insufficient = set()
    for block in (raw.get("tabular") or {}, raw.get("predictions") or {}):
        insufficient |= {s for s in block.get("insufficient_sites") or [] if isinstance(s, str)}
    for s in insufficient:
        sites[s] = "drift" if sites.get(s) == "drift" else "insufficient"
    status = raw.get("status")
    return {"status": status if isinstance(status, str) else "unknown", "model_version": raw.get("model_version"),
            "flagged_sites": sorted(s for s in raw.get("flagged_sites") or [] if isinstance(s, str)),
            "sites": dict(sorted(sites.items())), "rows": rows,
            "retrain": (raw.get("retrain") or {}).get("status") if isinstance(raw.get("retrain"), Mapping) else None}


def monitoring(root: Path, events: list[Event], event_row) -> dict:
    files = sorted((root / "data" / "monitoring").glob("**/drift.json"))
    reports = []
    for p in files:
        raw = json.loads(p.read_text())
        reports.append({"uri": p.relative_to(root).as_posix(), "sha256": artifact_sha256(p),
                        "values": _scalars(raw), "findings": findings(raw)})
    runs = [{**event_row(e, "monitor"), "facts": _scalars(e.facts)} for e in events if e.stage == "monitor"]
    return {"status": "monitored" if reports or runs else NO_MONITORING, "reports": reports, "events": runs}
