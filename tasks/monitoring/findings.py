"""What a monitoring report found, in a few words: every test that alarmed, and per flagged site which features or
modalities moved (with the categories the reference never had). Read by `mmfm monitor`'s log line, the demo's
summary and bench/monitor_alarms.py, so the three say the same thing."""

from __future__ import annotations

from collections import defaultdict

TABLE_FAMILIES = ("tabular", "predictions")


def culprits(report: dict) -> list[str]:
    """Every test that alarmed: 'family:scope:feature' (tabular, predictions) or 'embedding:site:modality'."""
    out = []
    for family in TABLE_FAMILIES:
        part = report[family]
        scopes = {"all": part.get("overall") or {}, **(part.get("sites") or {})}
        for scope, res in scopes.items():
            for group in (res.get("groups") or {}).values():
                out += [f"{family}:{scope}:{f}" for f, r in group["features"].items() if r.get("drifted")]
    for modality, res in (report["embedding"].get("modalities") or {}).items():
        if (res.get("overall") or {}).get("drifted"):
            out.append(f"embedding:all:{modality}")
        out += [f"embedding:{site}:{modality}" for site, t in (res.get("sites") or {}).items() if t.get("drifted")]
    if report["performance"].get("drifted"):
        out.append(f"performance:all:auroc_drop={report['performance'].get('drop')}")
    return sorted(set(out))


def by_site(report: dict) -> dict[str, list[str]]:
    """site -> what moved there: features (with new categories) and embedding modalities, sorted."""
    found: dict[str, set[str]] = defaultdict(set)
    for family in TABLE_FAMILIES:
        for site, res in (report[family].get("sites") or {}).items():
            for group in (res.get("groups") or {}).values():
                for feature, r in group["features"].items():
                    if r.get("drifted"):
                        new = r.get("new_categories")
                        found[site].add(f"{feature} (new: {', '.join(new)})" if new else feature)
    for modality, res in (report["embedding"].get("modalities") or {}).items():
        for site, t in (res.get("sites") or {}).items():
            if t.get("drifted"):
                found[site].add(f"{modality} embeddings")
    return {site: sorted(items) for site, items in sorted(found.items())}


def describe(report: dict) -> str:
    """One line: 'site-b: age_band, scanner_2d (new: X)' per flagged site; the performance drop when measured."""
    parts = [f"{site}: {', '.join(items)}" for site, items in by_site(report).items()]
    perf = report["performance"]
    if perf.get("drifted"):
        bound = (f" (lower bound {perf['drop_lower']} > tolerance {perf.get('tolerance')})"
                 if "drop_lower" in perf else "")
        parts.append(f"performance: AUROC down {perf.get('drop')}{bound}")
    return "; ".join(parts)
