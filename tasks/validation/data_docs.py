"""GX Data Docs a reviewer can open on a hospital network without internet, saying what mmfm decided.

Why: GX 1.x's templates (great_expectations/render/view/templates: js_script_imports.j2, page.j2, top_navbar.j2,
index_page.j2, bootstrap_table.j2, cta_footer.j2) load Bootstrap 4.3.1, bootstrap-table 1.19, jQuery 3.7.1,
Popper, bootstrap-datepicker, Font Awesome 6.6, vega/vega-lite/vega-embed and the GX logo from CDNs and S3; the index
draws its tables with bootstrap-table from a JS array, so offline the index is blank. And GX calls a suite "Failed"
whenever an expectation is unmet, while mmfm's policies say a rule whose broken rows are quarantined (or only
warned about) is not a failure of the dataset: the curated data passed.

So, after `build_data_docs()`, every page of the site is rewritten:
- no external reference: CDN <script>/<link> removed, every inline script removed (they all need jQuery), the GX
  logo pointed at the copy GX ships in static/images, links to GX's web sites kept as text, the newsletter and
  tutorial footers dropped; one local stylesheet (static/styles/mmfm-offline.css, written here) does what the page
  needs from Bootstrap and Font Awesome (grid, tables, cards, alerts; icons as characters);
- the index's tables rendered as static HTML from the rows GX embedded for bootstrap-table;
- mmfm's verdict per suite (passed / quarantined / failed, from tasks.validation.contracts' table summaries) in
  place of GX's "Succeeded"/"Failed", with the rule counts behind it; on a page whose suite mmfm did not fail, an
  unmet expectation shows a flag (a policy acted), not a red cross;
- the index carries `id="mmfm-verdict"` (data-verdict: the run's verdict) and index.json beside it says the same;
  each validation page carries its suite's verdict and a .json beside it.

GX's expectation-suite pages keep their content (no verdict: a suite is a definition, not a result). Vega charts
GX draws for some expectations are not kept (none of mmfm's expectations draws one).
"""

from __future__ import annotations

import ast
import html
import json
import os
import re
from pathlib import Path

from tasks.validation.data_docs_style import CSS

STYLESHEET = "static/styles/mmfm-offline.css"
LOGO = "static/images/logo-long.png"
_EXTERNAL = r"(?:https?:)?//"
_SCRIPT = re.compile(r"<script\b[^>]*>.*?</script>\s*", re.S | re.I)
_EXTERNAL_LINK = re.compile(rf"<link\b[^>]*href=\"{_EXTERNAL}[^\"]*\"[^>]*>\s*", re.I)
_ANCHOR = re.compile(rf"<a\b[^>]*href=\"{_EXTERNAL}[^\"]*\"[^>]*>(.*?)</a>", re.S | re.I)
_LOGO_IMG = re.compile(rf"(<img\b[^>]*src=\"){_EXTERNAL}[^\"]*\"", re.I)
_CSS_URL = re.compile(rf"url\(['\"]?{_EXTERNAL}[^)]*\)", re.I)
_FOOTER = re.compile(r"<footer\b.*?</footer>\s*", re.S | re.I)
_FAVICON = re.compile(r"<link\b[^>]*rel=\"shortcut icon\"[^>]*>\s*", re.I)
_TABLE_DATA = re.compile(r"\$\('#(?P<id>[\w-]+)'\)\.bootstrapTable\(\s*Object\.assign\(\s*\{\s*"
                         r"columns: (?P<columns>\[.*?\]),\s*data: (?P<data>\[.*?\]),\s*toolbar:", re.S)
_STATUS = re.compile(r"(<span class=\"h6\" >Status:</span>)\s*<i class=\"fas fa-(?:times|check)[^\"]*\"[^>]*></i>"
                     r"\s*(?:Failed|Succeeded)")

VERDICT_WORDS = {"passed": "Passed", "quarantined": "Passed, rows quarantined (policy)", "failed": "Failed",
                 "unknown": "not judged by mmfm"}


def table_verdict(summary: dict) -> str:
    """mmfm's word for one table: failed when a fail rule broke or the engines disagree (the table blocks),
    quarantined when rows were set aside under a quarantine rule, else passed (warnings do not fail a table)."""
    if summary.get("blocked") or summary.get("failures") or summary.get("rows_failed"):
        return "failed"
    return "quarantined" if summary.get("rows_quarantined") or summary.get("quarantine_reasons") else "passed"


def run_verdict(summaries: dict[str, dict]) -> str:
    if not summaries:
        return "unknown"  # Data Docs built without mmfm's results: nothing to say
    verdicts = {table_verdict(s) for s in summaries.values()}
    return next((v for v in ("failed", "quarantined") if v in verdicts), "passed")


def _rows(n: int) -> str:
    return f"{n} row" if n == 1 else f"{n} rows"


def _label(summary: dict | None) -> str:
    if summary is None:
        return "not judged by mmfm"
    verdict, parts = table_verdict(summary), []
    if summary.get("rows_quarantined"):
        parts.append(f"quarantined {_rows(summary['rows_quarantined'])} (policy)")
    if summary.get("warnings"):
        parts.append(f"{_rows(sum(summary['warnings'].values()))} warned about (policy: warn)")
    if summary.get("failures"):
        parts.append(f"{_rows(sum(summary['failures'].values()))} broke a fail rule")
    label = "Failed" if verdict == "failed" else "Passed"
    return label + (": " + "; ".join(parts) if parts else "")


def _rules_table(summary: dict) -> str:
    rows = [(rule, "quarantine", n, "rows set aside; the table passes") for rule, n in
            summary.get("quarantine_reasons", {}).items()]
    rows += [(rule, "warn", n, "counted; the table passes") for rule, n in summary.get("warnings", {}).items()]
    rows += [(rule, "fail", n, "the table fails") for rule, n in summary.get("failures", {}).items()]
    if not rows:
        return "<p>No contract rule was broken.</p>"
    body = "".join(f"<tr><td>{html.escape(r)}</td><td>{p}</td><td>{n}</td><td>{what}</td></tr>"
                   for r, p, n, what in rows)
    return ("<table class='table table-sm mmfm-rules'><thead><tr><th>rule</th><th>policy</th><th>rows</th>"
            f"<th>what mmfm did</th></tr></thead><tbody>{body}</tbody></table>")


def _banner(verdict: str, text: str, detail: str = "") -> str:
    return (f"<div id=\"mmfm-verdict\" class=\"mmfm-verdict mmfm-{verdict}\" data-verdict=\"{verdict}\">"
            f"<strong>mmfm validation: {html.escape(text)}</strong>{detail}"
            "<p class='mmfm-note'>mmfm's policies decide: a rule whose broken rows are quarantined, or only warned "
            "about, is not a failure of the dataset. GX's own counts of unmet expectations are below.</p></div>")


def _strip(page: str, root: str) -> str:
    """Everything external out, the local stylesheet in; `root` is the relative path from the page to the site."""
    page = _SCRIPT.sub("", page)
    page = _EXTERNAL_LINK.sub("", page)
    page = _FAVICON.sub("", page)
    page = _FOOTER.sub("", page)
    page = _LOGO_IMG.sub(rf'\g<1>{root}{LOGO}"', page)
    page = _CSS_URL.sub("none", page)
    page = _ANCHOR.sub(r"<span class='mmfm-was-link'>\1</span>", page)
    link = f'<link rel="stylesheet" href="{root}{STYLESHEET}">'
    return page.replace("</head>", f"{link}\n</head>", 1)


def _static_table(columns: list[dict], rows: list[dict]) -> str:
    head = "".join(f"<th>{html.escape(c['title'])}</th>" for c in columns)
    body = ""
    for row in rows:
        link = row.get("_table_row_link_path")
        values = [str(row.get(c["field"], "")) for c in columns]  # GX's own HTML fragments
        if link and values and "<a " not in "".join(values):  # the row was the link (bootstrap-table's click)
            values[0] = f"<a href=\"{html.escape(link)}\">{values[0]}</a>"
        cells = "".join(f"<td>{v}</td>" for v in values)
        body += f"<tr data-href=\"{html.escape(link)}\">{cells}</tr>" if link else f"<tr>{cells}</tr>"
    return f"<table class='table table-sm table-bordered'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _index(page: str, judged: dict[str, tuple[str, dict | None]]) -> str:
    """The index's bootstrap-table arrays as static tables, each validation row with the verdict of its page."""
    for m in list(_TABLE_DATA.finditer(page)):
        columns, rows = ast.literal_eval(m["columns"]), ast.literal_eval(m["data"])
        for row in rows:
            if "validation_success" in row:
                link = row.get("_table_row_link_path", "")
                verdict, summary = judged.get(link, ("unknown", None))
                row["validation_success"] = (f"<a class='mmfm-status mmfm-{verdict}' href=\"{html.escape(link)}\">"
                                             f"{html.escape(_label(summary))}</a>")
        rows.sort(key=lambda r: (str(r.get("_expectation_suite_name_sort") or r.get("expectation_suite_name")),
                                 -float(r.get("_run_time_sort") or 0)))
        table = re.compile(rf"<table\s+id=\"{re.escape(m['id'])}\".*?</table>", re.S)
        static = _static_table(columns, rows)
        page = table.sub(lambda _, t=static: t, page, count=1)
    return page


def _judge_validation_pages(site: Path, summaries: dict[str, dict]) -> dict[str, tuple[str, dict | None]]:
    """Site-relative path of each validation page -> (verdict, summary). The newest page of a table is this run's
    and takes `summaries`; an older run's page keeps what the JSON beside it recorded when that run wrote it
    (GX re-renders every stored run); a page from before mmfm wrote verdicts is "unknown"."""
    pages = [p for p in site.glob("validations/*/*/*/*.html")]
    newest: dict[str, Path] = {}
    for p in pages:
        table = p.relative_to(site).parts[1]
        if table not in newest or p.parent.name > newest[table].parent.name:  # run folders sort by time
            newest[table] = p
    judged = {}
    for p in pages:
        table, stored = p.relative_to(site).parts[1], p.with_suffix(".json")
        if newest[table] == p and table in summaries:
            summary = summaries[table]
            verdict = table_verdict(summary)
        elif stored.is_file():
            record = json.loads(stored.read_text())
            verdict, summary = record.get("verdict", "unknown"), record.get("summary")
        else:
            verdict, summary = "unknown", None
        _write_verdict(p, verdict, {table: verdict}, summary)
        judged[p.relative_to(site).as_posix()] = (verdict, summary)
    return judged


def _validation_page(page: str, table: str, verdict: str, summary: dict | None, root: str) -> str:
    page = _STATUS.sub(lambda m: f"{m[1]} <span class='mmfm-status mmfm-{verdict}'>"
                                 f"{html.escape(_label(summary))}</span>", page)
    if verdict != "failed":  # an unmet expectation here is a policy that acted, not a failure
        page = page.replace("fas fa-times text-danger", "fas fa-flag text-warning").replace("text-danger",
                                                                                             "text-warning")
    page = _strip(page, root)
    detail = _rules_table(summary) if summary is not None else ""
    return _with_banner(page, _banner(verdict, f"{table}: {_label(summary)}", detail))


def _with_banner(page: str, banner: str) -> str:
    return re.sub(r"(<body[^>]*>)", lambda m: m[1] + banner, page, count=1)


def make_offline(site: Path | str, summaries: dict[str, dict]) -> str:
    """Rewrite the Data Docs site at `site` (its index.html's folder) in place; -> this run's verdict word.

    `summaries`: table -> its contract summary in this run (TableReport.summary(): rows_quarantined, warnings,
    failures, quarantine_reasons, blocked), the view `mmfm validate` prints and validation.json records."""
    site = Path(site)
    (site / STYLESHEET).parent.mkdir(parents=True, exist_ok=True)
    (site / STYLESHEET).write_text(CSS)
    verdict = run_verdict(summaries)
    judged = _judge_validation_pages(site, summaries)
    for path in sorted(site.rglob("*.html")):
        page = path.read_text()
        if 'id="mmfm-verdict"' in page or STYLESHEET in page:
            continue  # made offline by an earlier run, and not re-rendered since
        rel = os.path.relpath(site, path.parent)
        root = "" if rel == "." else rel.replace(os.sep, "/") + "/"
        name = path.relative_to(site).as_posix()
        if name == "index.html":
            counts = {v: sum(table_verdict(s) == v for s in summaries.values()) for v in VERDICT_WORDS}
            said = ", ".join(f"{n} {v}" for v, n in counts.items() if n)
            text = VERDICT_WORDS[verdict] + (f" ({said} tables)" if said else "")
            page = _with_banner(_strip(_index(page, judged), root), _banner(verdict, text))
            _write_verdict(path, verdict, {t: table_verdict(s) for t, s in summaries.items()})
        elif name in judged:
            page = _validation_page(page, path.relative_to(site).parts[1], *judged[name], root)
        else:
            page = _strip(page, root)
        path.write_text(page)
    return verdict


def _write_verdict(page: Path, verdict: str, tables: dict[str, str], summary: dict | None = None) -> None:
    record = {"verdict": verdict, "tables": tables, **({"summary": summary} if summary is not None else {})}
    page.with_suffix(".json").write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
