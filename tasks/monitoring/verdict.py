"""The monitoring verdict: `drift`, `insufficient` or `ok`, and what could not be tested.

Why a third status: every drift test needs a minimum of data (params.yaml monitor.min_rows patients per site and per
modality, min_reference_rows of the same site in the reference, 20 labelled patients for performance). Below it a
test is not run, and "no test alarmed" used to read as "OK" (exit 0) even when no test ran at all (issue 19).

Precedence (documented for operators and scripts):
  drift         (exit 3) any TESTED family drifted: tabular, predictions, embedding or performance. A shift seen on
                the part that could be tested is actionable whatever else was untested; the retraining trigger
                fires on it.
  insufficient  (exit 4) nothing drifted, but at least one site x family could not be tested; `untested` names each
                one with the reason (patients vs the minimum, no outcomes for performance, a modality the extract
                lacks). No retraining is requested: absence of evidence is not evidence of drift.
  ok            (exit 0) every site of every family was tested and none drifted.

An extract without outcomes is therefore `insufficient`: its performance was not checked. A deployment that never
receives outcomes reads exit 4 with `untested` = [performance] as "data checks passed, performance unmonitored".
Features without any usable value ("no data" inside a tested site) stay in the family's own report: the site was
tested on its other features.
"""

from __future__ import annotations

EXIT_CODES = {"ok": 0, "drift": 3, "insufficient": 4}
FAMILIES = ("tabular", "predictions", "embedding", "performance")
ALL = "all"  # the site label of a test over the whole extract


def _table_untested(family: str, part: dict) -> list[dict]:
    """Scopes of a tabular_drift result (all rows, each site) that were below its min_rows."""
    out, minimum = [], part.get("min_rows")
    scopes = {ALL: part.get("overall") or {}, **(part.get("sites") or {})}
    for site, res in scopes.items():
        if res.get("status") == "insufficient":
            out.append({"site": site, "family": family,
                        "reason": f"{res.get('n')} patients, fewer than the minimum {minimum}"})
    return out


def _embedding_untested(part: dict) -> list[dict]:
    out, minimum = [], part.get("min_rows")
    for modality, res in sorted((part.get("modalities") or {}).items()):
        status = res.get("status")
        if status == "insufficient":
            out.append({"site": ALL, "family": "embedding", "modality": modality,
                        "reason": f"{res.get('n_cur')} patients with {modality}, fewer than the minimum {minimum}"})
        elif status == "no data" and res.get("n_ref"):
            out.append({"site": ALL, "family": "embedding", "modality": modality,
                        "reason": f"no patient of the extract has {modality}"})
        for site, t in sorted((res.get("sites") or {}).items()):
            if t.get("status") == "insufficient":
                reason = f"{t.get('n')} patients with {modality}, fewer than the minimum {minimum}"
            elif t.get("status") == "insufficient reference":
                reason = (f"{t.get('n_ref')} reference patients of the same site with {modality}, fewer than the "
                          "reference minimum")
            else:
                continue
            out.append({"site": site, "family": "embedding", "modality": modality, "reason": reason})
    return out


def _performance_untested(part: dict) -> list[dict]:
    status = part.get("status")
    if status == "insufficient":
        return [{"site": ALL, "family": "performance", "reason": part.get("reason") or "not measurable"}]
    if status == "no outcomes":  # the point-estimate rule's wording (reports written before this module)
        return [{"site": ALL, "family": "performance",
                 "reason": f"{part.get('labelled', 0)} labelled patients, fewer than the minimum 20"}]
    if status != "measured":
        return [{"site": ALL, "family": "performance", "reason": f"not measured ({status})"}]
    return []


def untested(report: dict) -> list[dict]:
    """Every site x family (x modality) that could not be tested, with why: [{site, family, reason[, modality]}]."""
    out: list[dict] = []
    for family in ("tabular", "predictions"):
        if report.get(family):
            out += _table_untested(family, report[family])
    if report.get("embedding"):
        out += _embedding_untested(report["embedding"])
    if report.get("performance") is not None:
        out += _performance_untested(report["performance"])
    return out


def drifted_families(report: dict) -> list[str]:
    """The families whose tests alarmed (performance: its drop credibly above the tolerance)."""
    return [f for f in FAMILIES if (report.get(f) or {}).get("drifted")]


def status(report: dict) -> str:
    """drift > insufficient > ok (module docstring)."""
    if drifted_families(report):
        return "drift"
    return "insufficient" if untested(report) else "ok"


def settle(report: dict) -> bool:
    """Set report["status"], ["untested"] and ["drifted_families"] in place; -> whether any of them changed."""
    before = (report.get("status"), report.get("untested"), report.get("drifted_families"))
    report["untested"] = untested(report)
    report["drifted_families"] = drifted_families(report)
    report["status"] = status(report)
    report["exit_code"] = EXIT_CODES[report["status"]]
    return before != (report["status"], report["untested"], report["drifted_families"])


def describe_untested(report: dict) -> str:
    """One line: 'site-a tabular: 12 patients, fewer than the minimum 30; all performance: ...'."""
    return "; ".join(f"{u['site']} {u['family']}{'/' + u['modality'] if u.get('modality') else ''}: {u['reason']}"
                     for u in report.get("untested") or [])
