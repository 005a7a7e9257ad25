"""The audit report's first screen and navigation, on hand-made audits (no workspace): verdict element, summary
first, contents whose anchors exist, links that resolve from the page's folder, hash tables folded, per-site
monitoring findings including `insufficient`, and gate rows with their values and exceptions.
"""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

from tasks.registry.audit_monitoring import findings
from tasks.registry.audit_render import render_audit
from tests.registry.test_audit_report import _bare_audit


class Page(HTMLParser):
    """What the checks need from a page: ids, hrefs, the verdict element, h2 order, tables inside <details>."""

    def __init__(self, text: str):
        super().__init__()
        self.ids: list[str] = []
        self.hrefs: list[str] = []
        self.verdicts: list[str | None] = []
        self.h2: list[str] = []
        self.tables_in_details: list[str] = []
        self._details = 0
        self._in_h2 = False
        self._caption = False
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids.append(a["id"])
            if a["id"] == "mmfm-verdict":
                self.verdicts.append(a.get("data-verdict"))
        if tag == "a" and "href" in a:
            self.hrefs.append(a["href"])
        self._details += tag == "details"
        self._in_h2 = self._in_h2 or tag == "h2"
        self._caption = tag == "caption" and self._details > 0

    def handle_endtag(self, tag):
        self._details -= tag == "details"
        self._in_h2 = self._in_h2 and tag != "h2"
        self._caption = self._caption and tag != "caption"

    def handle_data(self, data):
        if self._in_h2:
            self.h2.append(data.strip())
        if self._caption:
            self.tables_in_details.append(data.strip())


def check_page(html: str, page_dir: Path) -> Page:
    """The navigation contract every audit page keeps; returns the parsed page for further checks."""
    page = Page(html)
    assert len(page.verdicts) == 1 and page.verdicts[0] in ("complete", "gaps")
    assert page.h2[:2] == ["Summary", "Contents"]
    assert page.ids.index("summary") < page.ids.index("mmfm-verdict") < page.ids.index("contents")
    anchors = [h[1:] for h in page.hrefs if h.startswith("#")]
    assert len(anchors) >= 10 and set(anchors) <= set(page.ids)
    for link in (h for h in page.hrefs if not h.startswith("#")):
        assert "://" not in link and not link.startswith("/"), link
        assert (page_dir / link).resolve().is_file(), link
    assert any(c.startswith("Ledger events") for c in page.tables_in_details)
    assert not any(c.startswith("Chain from raw extracts") for c in page.tables_in_details)
    return page


DRIFT = {"status": "insufficient", "model_version": "m/1", "flagged_sites": ["site-b"],
         "tabular": {"threshold": 0.001, "insufficient_sites": ["site-c"], "sites": {
             "site-a": {"status": "tested", "n": 80, "groups": {"labs": {"drifted": False, "features": {
                 "lab_wbc": {"p_value": 0.4, "drifted": False}}}}},
             "site-b": {"status": "tested", "n": 90, "groups": {"acquisition": {"drifted": True, "features": {
                 "scanner_2d": {"p_value": 1e-9, "drifted": True}, "intensity_2d": {"p_value": 0.2}}}}},
             "site-c": {"status": "insufficient", "n": 4, "reason": "4 rows, fewer than min_rows 30"}}},
         "embedding": {"threshold": 0.002, "modalities": {"image_3d": {"sites": {
             "site-a": {"p_value": 0.3, "drifted": False, "n": 40}}}}},
         "performance": {"status": "measured", "labelled": 170, "auroc_macro": 0.8, "at_evaluation": 0.82,
                         "drop": 0.02, "tolerance": 0.1, "drifted": False},
         "findings": "site-b: scanner_2d (new: SECRET-VENDOR-VALUE)"}


def test_findings_are_per_site_and_family_and_name_insufficient_sites():
    f = findings(DRIFT)
    assert f["status"] == "insufficient" and f["flagged_sites"] == ["site-b"]
    assert f["sites"] == {"site-a": "ok", "site-b": "drift", "site-c": "insufficient"}
    row = next(r for r in f["rows"] if r["site"] == "site-b")
    assert row["family"] == "tabular: acquisition" and row["drifted_features"] == ["scanner_2d"]
    assert row["min_p"] == 1e-9 and row["threshold"] == 0.001
    assert "min_rows" in next(r for r in f["rows"] if r["site"] == "site-c")["why"]
    assert "SECRET-VENDOR-VALUE" not in json.dumps(f)


def _rich_audit(tmp_path: Path) -> tuple[dict, Path, Path]:
    root, out = tmp_path / "ws", tmp_path / "ws" / "data" / "audit"
    for rel in ("card/model_card.html", "data/monitoring/x/drift.html", "models/evaluation/plots/roc.png"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("x")
    audit = _bare_audit()
    audit["artifacts"] = [{"kind": "model card", "label": "card", "path": "card/model_card.html"},
                          {"kind": "drift report", "label": "drift", "path": "data/monitoring/x/drift.html"},
                          {"kind": "evaluation", "label": "roc", "path": "models/evaluation/plots/roc.png"},
                          {"kind": "data docs", "label": "docs", "path": "data/reports/gone/index.html"},
                          {"kind": "model card", "label": "remote card", "path": None}]
    audit["ledger"]["events"] = [{"seq": 1, "event_id": "e" * 32, "stage": "ingest", "run_id": "r", "time": "t",
                                  "actor": "a", "code_version": "c", "role": "upstream", "inputs": [], "outputs": []}]
    audit["monitoring"] = {"status": "monitored", "events": [],
                           "reports": [{"uri": "data/monitoring/x/drift.json", "sha256": "0" * 64, "values": {},
                                        "findings": findings(DRIFT)}]}
    audit["registration"]["decisions"] = [{
        "decision": "approved", "alias": "champion", "stamp": "s", "approver": "dr-who", "reason": "fit for use",
        "at": "2026-01-01", "checks": [
            {"rule": "subgroup_gap", "passed": True, "value": {"sex": {"gap": 0.0421}}, "detail": "sex gap 0.042"},
            {"rule": "beats_baselines", "passed": False, "excepted": True, "reason": "tiny cohort",
             "value": {"ci_low": -0.013}, "detail": "not better"}]}]
    return audit, root, out


def test_summary_first_contents_resolve_links_resolve_hashes_folded(tmp_path):
    audit, root, out = _rich_audit(tmp_path)
    out.mkdir(parents=True)
    markdown, html = render_audit(audit, root, out)
    page = check_page(html, out)
    assert sorted(h for h in page.hrefs if not h.startswith("#")) == [
        "../../card/model_card.html", "../../models/evaluation/plots/roc.png", "../monitoring/x/drift.html"]
    assert page.verdicts == ["gaps"] and "lineage event id &lt;i&gt;" in html[:html.index('id="contents"')]
    assert "not found on this file system" in html and "at data/reports/gone/index.html" in html
    assert markdown.index("## Summary") < markdown.index("## Contents") < markdown.index("## 1. Raw extracts")
    assert "[card](../../card/model_card.html)" in markdown and "(#9-monitoring)" in markdown


def test_summary_shows_approvals_monitoring_per_site_and_gate_values(tmp_path):
    audit, root, out = _rich_audit(tmp_path)
    markdown, html = render_audit(audit, root, out)
    summary = html[:html.index('id="contents"')]
    assert "dr-who" in summary and "fit for use" in summary and "2026-01-01" in summary
    assert "excepted: beats_baselines" in summary
    for site, state in (("site-a", "ok"), ("site-b", "drift"), ("site-c", "insufficient")):
        assert f"<td>{site}</td><td>{state}</td>" in summary
    gate = next(line for line in markdown.splitlines() if line.startswith("| 2026-01-01 | subgroup_gap |"))
    assert "gap: 0.0421" in gate and "no exception" in gate
    excepted = next(line for line in markdown.splitlines() if "| beats_baselines |" in line)
    assert "pass (excepted)" in excepted and "excepted: tiny cohort" in excepted and "ci_low: -0.013" in excepted
    assert "| site-b | tabular: acquisition | drift | 90 | 1e-09 | 0.001 | scanner_2d | - |" in markdown
    assert "| performance | ok | 170 | not reported | 0.1 | none | 0.8 now vs 0.82 at evaluation" in markdown
