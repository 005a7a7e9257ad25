"""Render an audit (the dict tasks.registry.audit_gather.build_audit returns) as one Markdown and one HTML page.

Why apart from gathering: the same sections, in the order the data travelled, go to two formats, and how a cell
reads (`_fmt`: pairs joined with ', ', missing values "not reported", CIs spelled out) is a presentation choice the
checks must not depend on. HTML is autoescaped and self-contained; Markdown is escaped too, since it is often
rendered as HTML. `write_audit` is the one call the CLI and the demo make: build, render, write both files.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jinja2

from tasks.registry.audit_gather import NO_MONITORING, build_audit

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


def _table(caption: str, headers: list[str], rows: list[list[Any]], empty: str = NR) -> dict:
    return {"caption": caption, "headers": headers, "rows": [[_fmt(c) for c in r] for r in rows], "empty": empty}


def _event_tables(audit: dict, stages: tuple[str, ...]) -> list[dict]:
    events = [e for e in audit["ledger"]["events"] if e["stage"] in stages]
    rows = [[e["seq"], e["stage"], e["event_id"], e["run_id"], e["time"], e["actor"], e["code_version"]]
            for e in events]
    files = [[e["event_id"][:12], d, a["uri"], a["sha256"]] for e in events
             for d, key in (("read", "inputs"), ("wrote", "outputs")) for a in e[key]]
    return [_table(f"Ledger events ({', '.join(stages)})", EVENT_HEADERS, rows),
            _table("Artifacts they read and wrote", ARTIFACT_HEADERS, files, "none recorded")]


def _run_tables(audit: dict, stages: tuple[str, ...], caption: str) -> list[dict]:
    runs = [r for r in audit["runs"] if r["stage"] in stages]
    head = [[r["stage"], r["run_id"], r["name"], r["status"], r["start"], r["tags"].get("code_version"),
             r["tags"].get("dataset_version")] for r in runs]
    detail = [[r["run_id"], r["params"] or "none", {k: v for k, v in r["metrics"].items() if ".ci_" not in k}]
              for r in runs]  # CIs are in the evaluation section
    return [_table(caption, ["stage", "run id", "name", "status", "started", "code version", "dataset version"],
                   head), _table("Their parameters and final metrics", ["run id", "params", "metrics"], detail)]


def _section(title: str, intro: str = "", items: list | None = None, tables: list | None = None,
             bullets: list | None = None) -> dict:
    return {"title": title, "intro": intro, "facts": [(k, _fmt(v)) for k, v in items or []],
            "tables": tables or [], "bullets": bullets or []}


def _sections_data(a: dict) -> list[dict]:
    deid, val, ds = a["deid"], a["validation"] or {}, a["dataset"]
    extracts = [[x["extract_id"], x["source"], x["site"], x["files"], x["bytes"], x["sha256"],
                 "matches" if x["sha256_now"] == x["sha256"] else "DIFFERS or missing", x["received"],
                 x["ingested"], x["quarantined"]] for x in a["extracts"]]
    return [
        _section("1. Raw extracts", "Landing manifests exactly as received, named by sha256 (recorded by the ingest "
                 "event, re-hashed for this report). File names inside an extract are never shown.",
                 tables=[_table("Extracts", ["extract", "source", "site", "files", "bytes", "manifest sha256",
                                             "re-hashed now", "received", "ingested", "quarantined"], extracts),
                         *_event_tables(a, ("ingest",))]),
        _section("2. De-identification", "Counts of de-identification actions per ingest run (codes of DICOM "
                 "PS3.15 Annex E); no values.",
                 items=[("Profiles", deid["profiles"]), ("Totals", deid["totals"]),
                        *[(f"Actions ({m})", c) for m, c in deid["actions"].items()]],
                 tables=[_table("Reports", ["report", "sha256", "profile", "DICOM files", "FHIR resources",
                                            "text fields", "actions", "text replacements", "burned-in flagged"],
                                [[r["uri"], r["sha256"], r["profile"], r["dicom_files"], r["fhir_resources"],
                                  r["text_fields"], r["actions"] or "none", r["text_replacements"] or "none",
                                  r["burned_in_flagged"]]
                                 for r in deid["reports"]])]),
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
                       [[t, m, v] for t, r in tasks.items() for m, v in sorted(r["metrics"].items())]),
                _table("Baselines", ["baseline", "metrics"],
                       [[b, m] for b, m in ev.get("baselines", {}).items()]),
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
    rows = [[d["decision"], d["alias"], d.get("at"), d.get("approver"), d.get("reason"), d.get("reasons") or "none",
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


GATE_HEADERS = ["decided at", "rule", "verdict", "value", "detail", "exception reason"]


def _gate_rows(decisions: list[dict]) -> list[list]:
    """Every rule of every gate decision: its measured value, verdict, and the exception's reason when excepted."""
    return [[d.get("at"), c.get("rule"), "pass (excepted)" if c.get("excepted") else
             "pass" if c.get("passed") else "FAIL", c.get("value"), c.get("detail"), c.get("reason") or "none"]
            for d in decisions for c in d.get("checks") or []]


def _monitoring_section(m: dict) -> dict:
    return _section(
        "9. Monitoring", m["status"] if m["status"] == NO_MONITORING else "",
        tables=[] if m["status"] == NO_MONITORING else [
            _table("Drift reports", ["report", "sha256", "values"], [[r["uri"], r["sha256"], r["values"]]
                                                                      for r in m["reports"]]),
            _table("Monitor events", ["time", "event id", "actor", "code version", "facts"],
                   [[e["time"], e["event_id"], e["actor"], e["code_version"], e["facts"]] for e in m["events"]])])


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


_MD = """# Audit report: {{ m.name }} version {{ m.version }}

Requested as `{{ m.ref }}`; generated {{ generated }}. Complete: **{{ complete }}** ({{ ngaps }} gap(s)).
From raw extract sha256 to today's alias; counts, hashes, ids and pseudonyms only.
{% for s in sections %}
## {{ s.title }}
{% if s.intro %}
{{ s.intro }}
{% endif %}{% if s.facts %}
{% for k, v in s.facts %}- **{{ k }}**: {{ v }}
{% endfor %}{% endif %}{% for t in s.tables %}
**{{ t.caption }}**

{% if t.rows %}| {{ t.headers|join(" | ") }} |
|{% for h in t.headers %}---|{% endfor %}
{% for r in t.rows %}| {{ r|join(" | ") }} |
{% endfor %}{% else %}{{ t.empty }}
{% endif %}{% endfor %}{% if s.bullets %}
{% for b in s.bullets %}- {{ b }}
{% endfor %}{% endif %}{% endfor %}"""

_HTML = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Audit report: {{ m.name }} version {{ m.version }}</title>
<style>body{font-family:system-ui,sans-serif;max-width:80rem;margin:2rem auto;padding:0 1rem;color:#222}
table{border-collapse:collapse;margin:.5rem 0;font-size:.85rem}td,th{border:1px solid #bbb;padding:.2rem .5rem;
text-align:left;vertical-align:top;word-break:break-all}th{background:#f0f0f0}.ok{color:#060}.bad{color:#a00}
h2{border-bottom:1px solid #ccc;margin-top:2rem}caption{text-align:left;font-weight:bold;padding:.3rem 0}</style>
</head><body>
<h1>Audit report: {{ m.name }} version {{ m.version }}</h1>
<p>Requested as <code>{{ m.ref }}</code>; generated {{ generated }}.
Complete: <strong class="{{ 'ok' if ngaps == 0 else 'bad' }}">{{ complete }}</strong> ({{ ngaps }} gap(s)).
From raw extract sha256 to today's alias; counts, hashes, ids and pseudonyms only.</p>
{% for s in sections %}<h2>{{ s.title }}</h2>
{% if s.intro %}<p>{{ s.intro }}</p>{% endif %}
{% if s.facts %}<ul>{% for k, v in s.facts %}<li><strong>{{ k }}</strong>: {{ v }}</li>{% endfor %}</ul>{% endif %}
{% for t in s.tables %}{% if t.rows %}<table><caption>{{ t.caption }}</caption>
<tr>{% for h in t.headers %}<th>{{ h }}</th>{% endfor %}</tr>
{% for r in t.rows %}<tr>{% for c in r %}<td>{{ c }}</td>{% endfor %}</tr>
{% endfor %}</table>{% else %}<p><strong>{{ t.caption }}</strong>: {{ t.empty }}</p>{% endif %}
{% endfor %}{% if s.bullets %}<ul>{% for b in s.bullets %}<li class="bad">{{ b }}</li>{% endfor %}</ul>{% endif %}
{% endfor %}</body></html>
"""


def _md_safe(value: Any) -> Any:
    """Markdown is often rendered as HTML: neutralise tags and table pipes in every string."""
    if isinstance(value, str):
        return html.escape(value, quote=False).replace("|", "\\|")
    if isinstance(value, Mapping):
        return {k: _md_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_md_safe(v) for v in value]
    return value


def render_audit(audit: dict) -> tuple[str, str]:
    """(markdown, html) of one audit: the same sections in the same order, HTML autoescaped and self-contained."""
    context = {"m": audit["model"], "generated": audit["generated_at"], "complete": _fmt(audit["complete"]),
               "ngaps": len(audit["gaps"]), "sections": _sections_data(audit), "NR": NR}
    env = {flag: jinja2.Environment(autoescape=flag, undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
           for flag in (False, True)}
    markdown = env[False].from_string(_MD).render(**_md_safe(context))
    return markdown, env[True].from_string(_HTML).render(**context)


def write_audit(root: Path, model_ref: str, out_dir: Path) -> dict:
    """Build, render and write `audit-<name>-v<version>.md` and `.html` into `out_dir`."""
    audit = build_audit(root, model_ref)
    markdown, page = render_audit(audit)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"audit-{audit['model']['name']}-v{audit['model']['version']}"
    (out / f"{stem}.md").write_text(markdown)
    (out / f"{stem}.html").write_text(page)
    return {"markdown": out / f"{stem}.md", "html": out / f"{stem}.html", "complete": audit["complete"],
            "gaps": list(audit["gaps"])}
