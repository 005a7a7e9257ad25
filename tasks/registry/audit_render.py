"""Render an audit (the dict tasks.registry.audit_gather.build_audit returns) as one Markdown and one HTML page.

Why apart from gathering: the same sections, in the order the data travelled, go to two formats, and how a cell
reads (`_fmt`: pairs joined with ', ', missing values "not reported", CIs spelled out) is a presentation choice the
checks must not depend on. HTML is autoescaped and self-contained; Markdown is escaped too, since it is often
rendered as HTML. `write_audit` is the one call the CLI and the demo make: build, render, write both files.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jinja2

from tasks.registry.audit_gather import NO_MONITORING, build_audit
from tasks.registry.audit_links import fetch_remote_card, href
from tasks.registry.audit_summary import APPROVAL_HEADERS, CHAIN_HEADERS, MONITOR_HEADERS, summary, verdict
from tasks.registry.audit_templates import HTML, MD

SHOWN_STAGES = ("ingest", "validate", "version", "pretrain", "finetune", "evaluate", "register", "promote",
                "rollback")
NR = "not reported"
EVENT_HEADERS = ["seq", "stage", "event id", "run id", "time", "actor", "code version"]
ARTIFACT_HEADERS = ["event", "direction", "uri", "sha256"]


def _fmt(v: Any) -> str:
    """One cell. Pairs are joined with ', ' (never a lone space): counts in a row must not read as a phone number."""
    if v is None or v == "" or v == {} or v == []:
        return NR
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.4f}".rstrip("0").rstrip(".") if v == v else "NaN"
    if isinstance(v, Mapping):
        if set(v) >= {"value"} and set(v) <= {"value", "ci_low", "ci_high", "unmeasured"}:
            return _fmt(v["value"]) + (f" (95% CI {_fmt(v['ci_low'])} to {_fmt(v['ci_high'])})"
                                       if v.get("ci_low") is not None else "")
        return ", ".join(f"{k}: {_fmt(x)}" for k, x in sorted(v.items()))
    if isinstance(v, list | tuple):
        return ", ".join(_fmt(x) for x in v)
    return str(v)


def _table(caption: str, headers: list[str], rows: list[list[Any]], empty: str = NR, collapse: bool = False) -> dict:
    """`collapse`: a hash table, folded into <details> in HTML (the summary and findings stay open)."""
    return {"caption": caption, "headers": headers, "rows": [[_fmt(c) for c in r] for r in rows], "empty": empty,
            "collapse": collapse, "css": ""}


def _event_tables(audit: dict, stages: tuple[str, ...]) -> list[dict]:
    events = [e for e in audit["ledger"]["events"] if e["stage"] in stages]
    rows = [[e["seq"], e["stage"], e["event_id"], e["run_id"], e["time"], e["actor"], e["code_version"]]
            for e in events]
    files = [[e["event_id"][:12], d, a["uri"], a["sha256"]] for e in events
             for d, key in (("read", "inputs"), ("wrote", "outputs")) for a in e[key]]
    return [_table(f"Ledger events ({', '.join(stages)})", EVENT_HEADERS, rows, collapse=True),
            _table(f"Artifacts they read and wrote ({', '.join(stages)})", ARTIFACT_HEADERS, files, "none recorded",
                   collapse=True)]


def _run_tables(audit: dict, stages: tuple[str, ...], caption: str) -> list[dict]:
    runs = [r for r in audit["runs"] if r["stage"] in stages]
    head = [[r["stage"], r["run_id"], r["name"], r["status"], r["start"], r["tags"].get("code_version"),
             r["tags"].get("dataset_version")] for r in runs]
    detail = [[r["run_id"], r["params"] or "none", {k: v for k, v in r["metrics"].items() if ".ci_" not in k}]
              for r in runs]  # CIs are in the evaluation section
    return [_table(caption, ["stage", "run id", "name", "status", "started", "code version", "dataset version"],
                   head), _table("Their parameters and final metrics", ["run id", "params", "metrics"], detail,
                                 collapse=True)]


def _section(title: str, intro: str = "", items: list | None = None, tables: list | None = None,
             bullets: list | None = None) -> dict:
    return {"title": title, "anchor": _anchor(title), "intro": intro, "facts": [(k, _fmt(v)) for k, v in items or []],
            "tables": tables or [], "bullets": bullets or []}


def _anchor(title: str) -> str:
    """The id GitHub gives a Markdown heading (so the Markdown contents links work there too)."""
    return re.sub(r"[^a-z0-9 -]", "", title.lower()).replace(" ", "-")


def _sections_data(a: dict) -> list[dict]:
    deid, val, ds = a["deid"], a["validation"] or {}, a["dataset"]
    extracts = [[x["extract_id"], x["source"], x["site"], x["files"], x["bytes"], x["sha256"],
                 "matches" if x["sha256_now"] == x["sha256"] else "DIFFERS or missing", x["received"],
                 x["ingested"], x["quarantined"]] for x in a["extracts"]]
    return [
        _section("1. Raw extracts", "Landing manifests exactly as received, named by sha256 (recorded by the ingest "
                 "event, re-hashed for this report). File names inside an extract are never shown.",
                 tables=[_table("Extracts", ["extract", "source", "site", "files", "bytes", "manifest sha256",
                                             "re-hashed now", "received", "ingested", "quarantined"], extracts,
                                collapse=True),
                         *_event_tables(a, ("ingest",))]),
        _section("2. De-identification", "Counts of de-identification actions per ingest run (codes of DICOM "
                 "PS3.15 Annex E) and of free-text replacements by kind (notes, report text, attachments and any "
                 "free string of a FHIR resource, scrubbed before staging); no values.",
                 items=[("Profiles", deid["profiles"]), ("Totals", deid["totals"]),
                        ("Free-text fields scrubbed", deid["totals"].get("text_fields", 0)),
                        ("Free-text replacements by kind", _text_totals(deid) or "none"),
                        *[(f"Actions ({m})", c) for m, c in deid["actions"].items()]],
                 tables=[_table("Reports", ["report", "sha256", "profile", "DICOM files", "FHIR resources",
                                            "text fields", "actions", "text replacements", "burned-in flagged"],
                                [[r["uri"], r["sha256"], r["profile"], r["dicom_files"], r["fhir_resources"],
                                  r["text_fields"], r["actions"] or "none", r["text_replacements"] or "none",
                                  r["burned_in_flagged"]]
                                 for r in deid["reports"]], collapse=True)]),
        _section("3. Validation and data contracts", "" if val else NR,
                 items=[("Validation run", val.get("run_id")), ("Blocked", val.get("blocked")),
                        ("Rows quarantined", val.get("quarantined")),
                        ("Quarantined by rule", val.get("quarantined_by_rule") or "none"),
                        ("Staged data sha256", val.get("staged_sha256")), ("Report sha256", val.get("sha256"))],
                 tables=[_table("Contracts", ["table", "contract version", "rows checked", "passed",
                                              "quarantined", "failed"],
                                [[n, t["contract_version"], t["rows_checked"], t["rows_passed"],
                                  t["rows_quarantined"], t["rows_failed"]] for n, t in val.get("tables", {}).items()]),
                         *_event_tables(a, ("validate",))]),
        _section("4. Dataset version", items=[("Dataset version", ds.get("dataset_version")),
                                              ("Git revision", ds.get("git_rev")), ("DVC md5", ds.get("curated_md5")),
                                              ("Curated data sha256", ds.get("curated_sha256")),
                                              ("Contract versions", ds.get("contract_versions")),
                                              ("Published", ds.get("published")), ("Published by", ds.get("actor"))],
                 tables=_event_tables(a, ("version",))),
        _section("5. Training runs", tables=[*_run_tables(a, ("pretrain", "finetune"), "MLflow runs"),
                                             *_event_tables(a, ("pretrain", "finetune"))]),
        _evaluation_section(a),
        _registration_section(a),
        _decisions_section(a),
        _monitoring_section(a["monitoring"]),
        _integrity_section(a),
    ]


def _evaluation_section(a: dict) -> dict:
    ev = a["evaluation"] or {}
    tasks = ev.get("tasks", {})
    return _section(
        "6. Evaluation", "" if ev else NR,
        items=[("Split", ev.get("split")), ("Dataset version", ev.get("dataset_version")),
               ("Test patients", ev.get("test_patients")), ("Evaluation run", ev.get("mlflow_run_id"))],
        tables=[_table("Primary metrics", ["task", "metric", "value (95% CI)", "patients", "largest subgroup gap"],
                       [[t, r["primary_metric"], r["primary"], r["patients"], r["subgroup_gaps"]]
                        for t, r in tasks.items()]),
                _table("All metrics", ["task", "metric", "value (95% CI)"],
                       [[t, m, v] for t, r in tasks.items() for m, v in sorted(r["metrics"].items())], collapse=True),
                _table("Single-modality baselines (trained in the evaluation run, same test patients)",
                       ["modality", "metrics"], [[b.removeprefix("single_modality."), m] for b, m in
                                                 ev.get("baselines", {}).items() if b.startswith("single_modality.")],
                       "not measured by this evaluation"),
                _table("Other baselines and limits (late fusion, classical models, Bayes posterior, oracle)",
                       ["baseline", "metrics"], [[b, m] for b, m in ev.get("baselines", {}).items()
                                                 if not b.startswith("single_modality.")]),
                _table("Fused model minus baselines (paired bootstrap, same patients)",
                       ["task", "baseline", "metric", "fused", "baseline value", "difference (95% CI)", "patients"],
                       [[c["task"], c["name"] if c.get("baseline") in (None, c["name"])
                         else f"{c['name']} ({c['baseline']})", c.get("metric"), c.get("a"), c.get("b"),
                         {k: c.get(k) for k in ("value", "ci_low", "ci_high")} if c.get("value") is not None
                         else f"not measured: {c.get('skipped')}", c.get("n")] for c in ev.get("comparisons", [])]),
                *_run_tables(a, ("evaluate",), "MLflow run"), *_event_tables(a, ("evaluate",))])


def _registration_section(a: dict) -> dict:
    reg, tags = a["registration"], a["registration"]["tags"]
    return _section(
        "7. Registration",
        items=[("Model", a["model"]["uri"]), ("Registered", reg["created"]), ("Status", reg["status"]),
               ("Lineage event (version tag)", tags.get("lineage_event")),
               ("Register event found in ledger", reg["lineage_event"]),
               ("Dataset version", tags.get("dataset_version")),
               ("Trained / evaluated on", [tags.get("trained_dataset_version"), tags.get("evaluated_dataset_version")]),
               ("Evaluated split", tags.get("evaluated_split")), ("Contract versions", tags.get("contract_versions")),
               ("Contracts passed", tags.get("contracts_passed")), ("Code version", tags.get("code_version")),
               ("Evaluation run", tags.get("evaluation_run_id")), ("Metrics", tags.get("metrics")),
               ("PHI findings at registration", tags.get("phi_findings")),
               ("Artifact manifest sha256", reg["manifest"]["sha256"]), ("Artifacts hashed", reg["manifest"]["files"])],
        tables=[*_run_tables(a, ("register",), "MLflow run"), *_event_tables(a, ("register",))])


def _decisions_section(a: dict) -> dict:
    reg = a["registration"]
    rows = [[d["decision"], d["alias"], d.get("at"), d.get("approver"), d.get("reason"), d.get("reasons") or (
             "every gate rule passed" if d["decision"] == "approved" else "none recorded"),
             d.get("champion_before") if not d["decision"].startswith("rolled")
             else f"{d.get('from_version')} to {d.get('to_version')}"] for d in reg["decisions"]]
    return _section(
        "8. Approvals, refusals and rollbacks",
        items=[("Aliases today", reg["aliases_now"]),
               *[(f"History of {k}", v) for k, v in reg["alias_history"].items()]],
        tables=[_table(f"Decisions on version {reg['version']}", ["decision", "alias", "at", "approver", "reason",
                                                                   "gate reasons", "before / rollback"], rows),
                _table("Gate rules of each decision", GATE_HEADERS, _gate_rows(reg["decisions"]),
                       "no gate decision recorded"),
                *_event_tables(a, ("promote", "rollback"))])


GATE_HEADERS = ["decided at", "rule", "verdict", "value", "detail", "exception"]


def _gate_rows(decisions: list[dict]) -> list[list]:
    """Every rule of every gate decision: its measured value, verdict, and the exception's reason when excepted."""
    return [[d.get("at"), c.get("rule"), "pass (excepted)" if c.get("excepted") else
             "pass" if c.get("passed") else "FAIL", c.get("value"), c.get("detail"),
             f"excepted: {c.get('reason') or 'no reason given'}" if c.get("excepted") else "no exception"]
            for d in decisions for c in d.get("checks") or []]


FINDING_HEADERS = ["site", "family", "status", "rows", "smallest p-value", "threshold / tolerance",
                   "drifted features", "detail"]


def _sig(v: Any) -> Any:
    """p-values and thresholds to 3 significant digits: 1e-87 must not read as 0, nor 6e-05 as 0.0001."""
    return f"{v:.3g}" if isinstance(v, float) else v


def _finding_detail(x: dict) -> str:
    if x["family"] == "performance" and x.get("value") is not None:
        return (f"{_fmt(x['value'])} now vs {_fmt(x.get('at_evaluation'))} at evaluation (drop "
                f"{_fmt(x.get('drop'))})" + (f"; {x['why']}" if x["why"] else ""))
    return x["why"] or "-"


def _monitoring_section(m: dict) -> dict:
    if m["status"] == NO_MONITORING:
        return _section("9. Monitoring", m["status"])
    found = []
    for r in m["reports"]:
        f = r.get("findings") or {}
        found.append(_table(f"Findings of {r['uri']}: status {f.get('status')}, flagged sites "
                            f"{_fmt(f.get('flagged_sites')) if f.get('flagged_sites') else 'none'}, retraining "
                            f"{f.get('retrain') or 'not reported'}", FINDING_HEADERS,
                            [[x["site"], x["family"], x["state"], x["n"], _sig(x.get("min_p")),
                              _sig(x["threshold"]), x["drifted_features"] or "none", _finding_detail(x)]
                             for x in f.get("rows", [])],
                            "no per-site decision in this report"))
    return _section(
        "9. Monitoring", "Per site and per family, as mmfm decided (ok, drift, or insufficient: too few rows to test); "
        "drift is declared when a p-value is at or under the Bonferroni threshold, or the performance drop exceeds "
        "its tolerance.",
        tables=[*found,
                _table("Drift reports", ["report", "sha256", "values"], [[r["uri"], r["sha256"], r["values"]]
                                                                         for r in m["reports"]], collapse=True),
                _table("Monitor events", ["time", "event id", "actor", "code version", "facts"],
                       [[e["time"], e["event_id"], e["actor"], e["code_version"], e["facts"]] for e in m["events"]],
                       collapse=True)])


def _text_totals(deid: dict) -> dict:
    out: dict[str, int] = {}
    for r in deid["reports"]:
        for k, n in (r.get("text_replacements") or {}).items():
            out[k] = out.get(k, 0) + int(n)
    return dict(sorted(out.items()))


def _integrity_section(a: dict) -> dict:
    v = a["ledger"]["verify"]
    others = tuple(sorted({e["stage"] for e in a["ledger"]["events"]} - set(SHOWN_STAGES)))
    return _section(
        "10. Integrity and completeness",
        "Every input of every event traces to an event that wrote it or to a raw extract; every event names its "
        "code version; the ledger's hash chain and recorded artifacts verify; registry, MLflow and ledger agree.",
        items=[("Complete", a["complete"]), ("Gaps", len(a["gaps"])), ("Ledger chain verifies", v["ok"]),
               ("Events checked", v["events_checked"]), ("Artifacts re-hashed", v["artifacts_checked"]),
               ("Ledger head", v["head"]), ("Ledger notes", v["notes"] or "none")],
        tables=_event_tables(a, others) if others else [],
        bullets=[f"Gap: {g}" for g in a["gaps"]] + [f"Note: {n}" for n in a["notes"]])


def _md_safe(value: Any) -> Any:
    """Markdown is often rendered as HTML: neutralise tags and table pipes in every string."""
    if isinstance(value, str):
        return html.escape(value, quote=False).replace("|", "\\|")
    if isinstance(value, Mapping):
        return {k: _md_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_md_safe(v) for v in value]
    return value


def _links(audit: dict, root: Path | None, out_dir: Path | None) -> list[dict]:
    out = []
    for a in audit.get("artifacts", []):
        link = href(a.get("path"), root, out_dir) if root is not None and out_dir is not None else None
        out.append({"kind": a["kind"], "label": a["label"], "href": link,
                    "missing": f"at {a['path']}" if a.get("path") else "not found on this file system"})
    return out


def render_audit(audit: dict, root: Path | None = None, out_dir: Path | None = None) -> tuple[str, str]:
    """(markdown, html) of one audit: summary, contents, then the sections in the order the data travelled.

    With `root` (the workspace) and `out_dir` (where the page is written), artifacts are linked relative to the
    page; without them they are named only. HTML is autoescaped and self-contained."""
    s = summary(audit)
    context = {"m": audit["model"], "generated": audit["generated_at"], "s": s,
               "chain": {**_table("Chain from raw extracts to the alias", CHAIN_HEADERS, s["chain"]), "css": "chain"},
               "approvals": _table("Approvals, refusals and rollbacks", APPROVAL_HEADERS, s["approvals"],
                                   "no approval or refusal recorded"),
               "monitoring": _table("Monitoring status per site", MONITOR_HEADERS, s["monitoring"]),
               "links": _links(audit, root, out_dir), "sections": _sections_data(audit), "NR": NR}
    env = {flag: jinja2.Environment(autoescape=flag, undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
           for flag in (False, True)}
    markdown = env[False].from_string(MD).render(**_md_safe(context))
    return markdown, env[True].from_string(HTML).render(**context)


def write_audit(root: Path, model_ref: str, out_dir: Path) -> dict:
    """Build, render and write `audit-<name>-v<version>.md`, `.html` and `.json` (the audit, with "verdict")."""
    audit = build_audit(root, model_ref)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fetch_remote_card(audit.get("artifacts", []), out, audit["model"]["version"])
    markdown, page = render_audit(audit, Path(root), out)
    stem = f"audit-{audit['model']['name']}-v{audit['model']['version']}"
    (out / f"{stem}.md").write_text(markdown)
    (out / f"{stem}.html").write_text(page)
    (out / f"{stem}.json").write_text(json.dumps({"verdict": verdict(audit), **audit}, indent=2, sort_keys=True,
                                                 default=str))
    return {"markdown": out / f"{stem}.md", "html": out / f"{stem}.html", "json": out / f"{stem}.json",
            "verdict": verdict(audit), "complete": audit["complete"], "gaps": list(audit["gaps"])}
