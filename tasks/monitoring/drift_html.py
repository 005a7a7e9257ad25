"""The monitoring report a reviewer opens: drift.html beside drift.json, one section per site, each headed by mmfm's
decision for that site (drift / no drift / insufficient), and Evidently's pooled page relabelled so it cannot say
otherwise.

Why: mmfm decides per site, with every family's tests (tabular, predictions, embeddings, performance) under one
Bonferroni correction; Evidently's HTML (tabular.html) pools every site and labels each column "Data drift
detected / not detected" by itself, so a site that drifted can look clean there and the page's verdicts are not
mmfm's. Evidently 0.7 inlines its JavaScript (no CDN); its pooled charts stay useful, so the page is kept with its
own verdict words removed and mmfm's verdict on top. drift.html is plain HTML and CSS, no script, no external URL.

`write_reports(report, out)` writes out/drift.json (with "verdict" = the monitoring status) and out/drift.html, and
relabels out/tabular.html when Evidently wrote one. Sites or families missing from the report, and a status other
than ok/drift (`insufficient`), are shown as they are, never guessed.
"""

from __future__ import annotations

import html
import re
from pathlib import Path

from tasks.atomic import write_json

FAMILIES = ("tabular", "predictions")
_EVIDENTLY_VERDICT = re.compile(r"Data drift (?:not )?detected\. ")
STYLE = """body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,Arial,sans-serif;margin:24px;color:#212529;
font-size:15px;line-height:1.45}table{border-collapse:collapse;margin:6px 0 14px}th,td{border:1px solid #dee2e6;
padding:3px 8px;text-align:left;vertical-align:top}th{background:#f1f3f5}section{margin:18px 0;padding:10px 16px;
border:1px solid #dee2e6;border-radius:4px}.v{display:inline-block;padding:2px 8px;border-radius:3px;font-weight:600}
.drift{background:#fde8ea}.ok,.no-drift{background:#e6f4ea}.insufficient,.unknown{background:#fff6e0}
#mmfm-verdict{padding:12px 16px;border-radius:4px;font-size:1.2em}.muted{color:#6c757d}"""


def _site_results(report: dict) -> dict[str, dict[str, dict]]:
    """site -> family -> that family's result for the site (tabular / predictions scopes; embedding per modality)."""
    out: dict[str, dict[str, dict]] = {}
    for family in FAMILIES:
        for site, res in ((report.get(family) or {}).get("sites") or {}).items():
            out.setdefault(site, {})[family] = res
    for modality, res in ((report.get("embedding") or {}).get("modalities") or {}).items():
        for site, t in (res.get("sites") or {}).items():
            out.setdefault(site, {})[f"embedding {modality}"] = t
    return dict(sorted(out.items()))


def site_verdict(report: dict, site: str, results: dict[str, dict]) -> str:
    """drift: mmfm flagged the site; insufficient: no family could test it; else no drift."""
    if site in (report.get("flagged_sites") or []) or any(r.get("drifted") for r in results.values()):
        return "drift"
    tested = [r for r in results.values() if r.get("status", "tested") == "tested" and r.get("drifted") is not None]
    return "no drift" if tested else "insufficient"


def _fmt(p) -> str:
    return "—" if p is None else f"{p:.3g}"


def _tests(family: str, res: dict, threshold: float | None) -> list[tuple]:
    if family.startswith("embedding"):
        return [(family, "MMD permutation", res.get("n"), _fmt(res.get("p_value")), _word(res), _fmt(threshold))]
    rows = []
    for group in (res.get("groups") or {}).values():
        for feature, r in group.get("features", {}).items():
            new = r.get("new_categories")
            name = f"{feature} (new: {', '.join(new)})" if new else feature
            rows.append((f"{family}: {name}", r.get("test"), r.get("n"), _fmt(r.get("p_value")), _word(r),
                         _fmt(threshold)))
    return rows


def _word(result: dict) -> str:
    if result.get("drifted"):
        return "drift"
    return "no data" if result.get("status") == "no data" else "no drift"


def _site_section(report: dict, site: str, results: dict[str, dict]) -> str:
    verdict = site_verdict(report, site, results)
    lines, notes = [], []
    for family, res in results.items():
        status = res.get("status", "tested")
        if status != "tested" or res.get("drifted") is None:
            notes.append(f"{family}: {status} (n={res.get('n', res.get('n_cur', '?'))}"
                         f"{', ' + str(res['reason']) if res.get('reason') else ''})")
            continue
        lines += _tests(family, res, (report.get(family.split()[0]) or {}).get("threshold"))
    moved = [x for x in lines if x[4] == "drift"]
    ordered = sorted(lines, key=lambda x: x[4] != "drift")
    rows = "".join(f"<tr><td>{html.escape(str(n))}</td><td>{html.escape(str(t))}</td><td>{c}</td><td>{p}</td>"
                   f"<td>{th}</td><td>{w}</td></tr>" for n, t, c, p, w, th in ordered)
    table = ("<table><tr><th>test</th><th>method</th><th>n</th><th>p-value</th><th>threshold</th><th>mmfm</th></tr>"
             f"{rows}</table>") if rows else "<p class='muted'>No test could run on this site.</p>"
    label = f"<span class='v {verdict.replace(' ', '-')}'>{verdict}</span>"
    return (f"<section id='site-{html.escape(site)}'><h2>{html.escape(site)}: {label}</h2>"
            f"<p>{len(moved)} of {len(lines)} tests below their corrected threshold"
            + (f"; not tested: {html.escape('; '.join(notes))}" if notes else "") + "</p>"
            + (f"<details{' open' if moved else ''}><summary>every test</summary>{table}</details>") + "</section>")


def _performance(perf: dict) -> str:
    if not perf:
        return "<p class='muted'>Performance: not reported.</p>"
    if perf.get("status") != "measured":
        said = html.escape(str(perf.get("status")))
        return f"<p>Performance: {said} ({perf.get('labelled', 0)} labelled patients)</p>"
    keys = ("auroc_macro", "at_evaluation", "drop", "drop_lower", "tolerance", "drifted")
    cells = "".join(f"<tr><th>{k}</th><td>{html.escape(str(perf[k]))}</td></tr>" for k in keys if k in perf)
    return f"<h3>Performance (all sites)</h3><table>{cells}</table>"


def render(report: dict, evidently: str | None) -> str:
    status = str(report.get("status", "unknown"))
    sites = _site_results(report)
    verdicts = {s: site_verdict(report, s, r) for s, r in sites.items()}
    summary = ", ".join(f"{s}: {v}" for s, v in verdicts.items()) or "no site in the extract"
    cur, ref = report.get("current") or {}, report.get("reference") or {}
    untested = report.get("untested") or []
    head = (f"<div id='mmfm-verdict' class='{status}' data-verdict='{html.escape(status)}'>Monitoring status: "
            f"<strong>{html.escape(status)}</strong> — {html.escape(summary)}</div>")
    facts = (f"<p>Model {html.escape(str(report.get('model_version')))}; extract {html.escape(str(report.get('area')))}"
             f" ({cur.get('patients', '?')} patients) against {ref.get('patients', '?')} reference patients "
             f"({html.escape(str(ref.get('split', '')))}, dataset {html.escape(str(ref.get('dataset_version')))}).</p>"
             f"<p>Findings: {html.escape(report.get('findings') or 'none')}</p>")
    if untested:
        cells = "".join(f"<tr><td>{html.escape(str(u.get('site')))}</td><td>{html.escape(str(u.get('family')))}"
                        f"{html.escape('/' + str(u['modality'])) if u.get('modality') else ''}</td>"
                        f"<td>{html.escape(str(u.get('reason')))}</td></tr>" for u in untested)
        facts += f"<h3>Not tested</h3><table><tr><th>site</th><th>family</th><th>why</th></tr>{cells}</table>"
    link = (f"<p>Evidently's charts, all sites pooled (no verdict of its own): <a href='{evidently}'>{evidently}</a>"
            "</p>") if evidently else ""
    body = "".join(_site_section(report, s, r) for s, r in sites.items())
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>mmfm drift report</title><style>{STYLE}</style>"
            f"</head><body><h1>Drift report</h1>{head}{facts}{_performance(report.get('performance') or {})}"
            f"<p class='muted'>Each site is decided by mmfm's tests with one Bonferroni correction over every family "
            f"and site; a site drifts when any of its tests falls below the corrected threshold.</p>{link}{body}"
            "</body></html>")


def relabel_evidently(path: Path, report: dict) -> None:
    """Evidently's pooled page: its per-column "Data drift (not) detected" removed, mmfm's verdict on top."""
    page = _EVIDENTLY_VERDICT.sub("All sites pooled (mmfm decides per site, see drift.html). ", path.read_text())
    status = html.escape(str(report.get("status", "unknown")))
    style = "font:16px system-ui,sans-serif;padding:10px 16px;background:#f1f3f5;border-bottom:1px solid #ccc"
    banner = (f"<div id='mmfm-verdict' data-verdict='{status}' style='{style}'>mmfm monitoring status: <b>{status}</b> "
              f"(per site: <a href='drift.html'>drift.html</a>). Evidently's charts below pool every site and give "
              "no verdict.</div>")
    if "id='mmfm-verdict'" in page:  # written again (the flow settles the status last): the banner says the new one
        page = re.sub(r"<div id='mmfm-verdict'.*?</div>", lambda _: banner, page, count=1, flags=re.S)
    else:
        page = re.sub(r"(<body[^>]*>)", lambda m: m[1] + banner, page, count=1)
    path.write_text(page)


def write_reports(report: dict, out: Path) -> None:
    report["verdict"] = report.get("status")
    write_json(out / "drift.json", report)
    evidently = out / "tabular.html"
    if evidently.is_file():
        relabel_evidently(evidently, report)
    (out / "drift.html").write_text(render(report, evidently.name if evidently.is_file() else None))
