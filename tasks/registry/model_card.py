"""Model cards in Markdown (for the repository and the registry) and HTML (a standalone page for review).

Why both from one dict (tasks/registry/card_content.py builds it): the reviewer reads the HTML, the registry shows
the Markdown, and they must not drift. Sections follow Mitchell et al.'s model cards. Every section always renders;
an absent one says "not reported", because a silently missing table reads as "nothing to see" when it means "nobody
looked". HTML is autoescaped (fields come from configs and humans) and self-contained: inline CSS, every image
embedded as a data: URI, no external URL, so it opens offline in a hospital network. The page carries one
`id="mmfm-verdict"` element whose data-verdict is the gate's decision (approved / refused / not judged).
"""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jinja2

NOT_REPORTED = "not reported"
NOT_JUDGED = "not judged"

_SECTIONS = """
{%- macro table(head, rows) -%}
{%- if md %}| {{ head|join(' | ') }} |
|{% for h in head %}---|{% endfor %}
{% for r in rows %}| {{ r|join(' | ') }} |
{% endfor %}
{% else %}<table><tr>{% for h in head %}<th>{{ h }}</th>{% endfor %}</tr>
{% for r in rows %}<tr>{% for v in r %}<td>{{ v }}</td>{% endfor %}</tr>
{% endfor %}</table>{% endif %}
{%- endmacro -%}
{%- macro h(level, text, anchor='') -%}
{%- if md %}{{ '#' * level }} {{ text }}

{% else %}<h{{ level }}{% if anchor %} id="{{ anchor }}"{% endif %}>{{ text }}</h{{ level }}>{% endif %}
{%- endmacro -%}
{%- macro p(text) -%}{% if md %}{{ text }}

{% else %}<p>{{ text }}</p>{% endif %}{%- endmacro -%}
{%- macro nr() -%}{% if md %}{{ NR }}
{% else %}<p class="nr">{{ NR }}</p>{% endif %}{%- endmacro -%}
{%- macro ul(items) -%}{% if md %}{% for i in items %}- {{ i }}
{% endfor %}{% else %}<ul>{% for i in items %}<li>{{ i }}</li>{% endfor %}</ul>{% endif %}{%- endmacro -%}
{{ h(1, 'Model card: ' ~ c.name ~ ' ' ~ c.version_label) }}
{% if md %}**Gate decision: {{ c.verdict }}**{% if c.verdict_detail %}: {{ c.verdict_detail }}{% endif %}

{% else %}<p class="verdict {{ c.verdict|replace(' ', '-') }}">Gate decision: <strong id="mmfm-verdict" \
data-verdict="{{ c.verdict }}">{{ c.verdict }}</strong>{% if c.verdict_detail %}: {{ c.verdict_detail }}{% endif \
%}</p>
{% endif %}
{{ h(2, 'Model details', 'details') }}{{ ul(c.details_lines) }}
{{ h(2, 'Intended use', 'use') }}{{ p(c.intended_use or NR) }}
{{ h(3, 'Out of scope') }}{{ p(c.out_of_scope or NR) }}
{{ h(2, 'Factors', 'factors') }}{{ p(c.factors or NR) }}
{{ h(2, 'Metrics: this model against its baselines and the Bayes/oracle limit', 'metrics') }}
{{ p('Each row is scored on its own patients (first columns); the paired columns compare the fused model with that \
row on exactly the same patients (paired bootstrap, 95% CI). Ceilings are the generator\\'s truth: a bound, never a \
bar to clear.') }}
{% for t in c.tasks %}{{ h(3, t.title ~ ' (' ~ t.patients ~ ' test patients; primary metric ' ~ t.primary_metric ~ \
')') }}
{{ table(['model', 'patients'] + t.metrics + ['fused vs this on the same patients', 'fused − this [95% CI]', \
'verdict'], t.table_rows) }}
{{ p('Verdict: ' ~ t.verdict) }}{% else %}{{ nr() }}{% endfor %}
{{ h(2, 'Evaluation data', 'evaluation-data') }}{% if c.evaluation_data %}{{ p('Split ' ~ c.evaluation_data.split ~ \
' of dataset ' ~ (c.dataset_version or NR) ~ ': ' ~ c.evaluation_data.patients ~ ' patients.') }}{{ \
table(['factor', 'groups (patients)'], c.evaluation_rows) }}{% else %}{{ nr() }}{% endif %}
{{ h(2, 'Training data', 'training-data') }}{% if c.training_rows %}{{ table(['factor', 'groups (patients)'], \
c.training_rows) }}{% else %}{{ nr() }}{% endif %}
{{ h(2, 'Quantitative analyses', 'analyses') }}
{{ h(3, 'Subgroups') }}{% for s in c.subgroups %}{{ p(s.task ~ ' by ' ~ s.family ~ (' (largest gap in ' ~ s.primary \
~ ': ' ~ s.gap_text ~ ')' if s.gap_text else '')) }}{{ table([s.family, 'patients'] + s.metrics, s.table_rows) }}{% \
else %}{{ nr() }}{% endfor %}
{{ h(3, 'Missing modality') }}{% for m in c.missing_modality %}{{ p(m.task ~ ': each modality removed at test time; \
drop = ' ~ m.primary_metric ~ ' with all modalities minus without it') }}{{ table(['modality removed'] + m.metrics \
+ ['drop in ' ~ m.primary_metric, 'attention share'], m.table_rows) }}{% else %}{{ nr() }}{% endfor %}
{{ h(3, 'Plots') }}{% for pl in c.plot_items %}{% if pl.missing %}{{ p(pl.title ~ ': ' ~ pl.missing) }}{% elif md \
%}![{{ pl.title }}]({{ pl.md_src }})

{% else %}<figure><img src="{{ pl.src }}" alt="{{ pl.title }}"><figcaption>{{ pl.title }}</figcaption></figure>
{% endif %}{% else %}{{ nr() }}{% endfor %}
{{ h(2, 'Promotion gate', 'gate') }}{{ p(c.gate_note) }}{% if c.gate_rows %}{{ table(['rule', 'verdict', 'value', \
'detail', 'exception reason'], c.gate_rows) }}{% else %}{{ nr() }}{% endif %}
{{ h(2, 'Approvals', 'approvals') }}{% if c.approval_rows %}{{ table(['time', 'decision', 'alias', 'approver', \
'reason', 'ledger event'], c.approval_rows) }}{% else %}{{ p(c.approvals_note or NR) }}{% endif %}
{{ h(2, 'Lineage', 'lineage') }}{{ table(['what', 'value'], c.lineage_rows) }}
{{ h(2, 'Ethical considerations', 'ethics') }}{% if c.ethical_considerations %}{{ ul(c.ethical_considerations) }}{% \
else %}{{ nr() }}{% endif %}
{{ h(2, 'Caveats and recommendations', 'caveats') }}{% if c.caveats %}{{ ul(c.caveats) }}{% else %}{{ nr() }}{% \
endif %}
"""

_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Model card: {{ c.name }} {{ c.version_label }}</title>
<style>body{font-family:system-ui,sans-serif;max-width:72rem;margin:2rem auto;padding:0 1rem;color:#222}
table{border-collapse:collapse;margin:.5rem 0;font-size:.85rem}td,th{border:1px solid #bbb;padding:.2rem .5rem;
text-align:left;vertical-align:top}th{background:#f0f0f0}.nr{color:#a00;font-style:italic}img{max-width:100%}
figure{display:inline-block;margin:.5rem;max-width:46%;vertical-align:top}figcaption{font-size:.8rem;color:#555}
.verdict{font-size:1.2rem;padding:.5rem;border-radius:.3rem;background:#eee}.approved{background:#dfd}
.refused{background:#fdd}</style></head><body>
{{ body }}</body></html>
"""


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _rows(card: Mapping[str, Any], image_root: Path | None, md_prefix: str) -> dict[str, Any]:
    """The card with every table flattened to rows of strings and every image resolved."""
    c = dict(card)
    version = c.get("version")
    c["version_label"] = f"version {version}" if version else "(staged: the registry assigns the version)"
    c["verdict"] = c.get("verdict") or NOT_JUDGED
    details = c.get("model_details") or {}
    c["details_lines"] = [f"{k.replace('_', ' ')}: {v if v not in (None, '') else NOT_REPORTED}"
                          for k, v in {"name": c.get("name"), "version": version or "assigned at registration",
                                       **details}.items()]
    for t in c.get("tasks") or []:
        t["table_rows"] = [[r["model"], r.get("patients") or "", *r["cells"], r["same_patients"], r["difference"],
                            r["verdict"]] for r in t["rows"]]
    for s in c.get("subgroups") or []:
        s["table_rows"] = [[r["group"], r.get("n"), *r["cells"]] for r in s["rows"]]
        s["primary"] = (s.get("metrics") or [""])[0]
        s["gap_text"] = f"{s['gap']:.3f}" if isinstance(s.get("gap"), float | int) else ""
    for m in c.get("missing_modality") or []:
        m["table_rows"] = [[r["modality"], *r["cells"], r["drop"], r["attention"]] for r in m["rows"]]
    counts = lambda d: [[k, ", ".join(f"{g} {n}" for g, n in sorted(v.items()))] for k, v in sorted(d.items())]  # noqa: E731
    c["evaluation_rows"] = counts((c.get("evaluation_data") or {}).get("counts") or {})
    c["training_rows"] = counts(c.get("training_data") or {})
    gate = c.get("gate") or {}
    c["gate_note"] = gate.get("error") or gate.get("note") or NOT_REPORTED
    c["gate_rows"] = [[r.get("rule"), "pass (excepted)" if r.get("excepted") else "pass" if r.get("passed") else
                       "FAIL", compact(r.get("value")), r.get("detail") or "", r.get("reason") or ""]
                      for r in gate.get("checks") or []]
    c["approval_rows"] = [[a.get("at"), a.get("decision"), a.get("alias"), a.get("approver"), a.get("reason"),
                           a.get("ledger_event") or NOT_REPORTED] for a in c.get("approvals") or []]
    lineage = dict(c.get("lineage") or {})
    finetune = lineage.pop("finetune_run_ids", None) or {}
    contracts = c.get("contract_versions") or {}
    c["lineage_rows"] = [[k.replace("_", " "), v if v not in (None, "") else NOT_REPORTED]
                         for k, v in lineage.items()]
    c["lineage_rows"] += [[f"finetune run id ({t})", v or NOT_REPORTED] for t, v in sorted(finetune.items())]
    c["lineage_rows"] += [["data contracts", ", ".join(f"{k} {v}" for k, v in sorted(contracts.items()))
                           or NOT_REPORTED]]
    items = []
    for pl in c.get("plots") or []:
        item = {"title": pl["title"], "missing": pl.get("missing")}
        if pl.get("path") and not item["missing"]:
            found = image_root / pl["path"] if image_root else None
            if found is None or not found.is_file():
                item["missing"] = "image file not found beside the card"
            else:
                item["src"], item["md_src"] = _data_uri(found), md_prefix + pl["path"]
        items.append(item)
    c["plot_items"] = items
    return c


def compact(v: Any) -> str:
    """One cell for a nested value: {value, ci_low, ci_high, ...} -> "0.410 [0.300, 0.520] (chance 0.5)", other
    mappings -> "key: ...; key: ...", numbers to 3 decimals; missing -> "not reported"."""
    if v is None or v == "" or isinstance(v, jinja2.Undefined):
        return NOT_REPORTED
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.3f}"
    if isinstance(v, Mapping):
        if "value" in v and "ci_low" in v:
            head = f"{compact(v['value'])} [{compact(v.get('ci_low'))}, {compact(v.get('ci_high'))}]"
            rest = {k: x for k, x in v.items() if k not in ("value", "ci_low", "ci_high") and x is not None}
            return head + (f" ({', '.join(f'{k} {compact(x)}' for k, x in rest.items())})" if rest else "")
        return "; ".join(f"{k}: {compact(x)}" for k, x in v.items()) or "none"
    if isinstance(v, list | tuple):
        return ", ".join(compact(x) for x in v) or "none"
    return str(v)


def _environment(autoescape: bool) -> jinja2.Environment:
    env = jinja2.Environment(autoescape=autoescape, undefined=jinja2.ChainableUndefined, keep_trailing_newline=True)
    env.globals["NR"] = NOT_REPORTED
    env.filters["compact"] = compact
    return env


def render_model_card(card: Mapping[str, Any], image_root: Path | None = None,
                      md_image_prefix: str = "") -> tuple[str, str]:
    """(markdown, html) for `card` (tasks/registry/card_content.py's shape); `name` is required, every other section
    may be absent. Plot paths are relative to `image_root`: the HTML embeds them, the Markdown links
    `md_image_prefix` + path."""
    if not card.get("name"):
        raise ValueError("model card needs a name")
    c = _rows(_copy(card), image_root, md_image_prefix)
    markdown = _environment(autoescape=False).from_string(_SECTIONS).render(c=_md_escaped(c), md=True)
    body = _environment(autoescape=True).from_string(_SECTIONS).render(c=c, md=False)
    page = _environment(autoescape=True).from_string(_PAGE).render(c=c, body=jinja2.filters.Markup(body))
    return markdown, page


def _copy(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_copy(v) for v in value]
    return value


def _md_escaped(value: Any) -> Any:
    """Markdown is rendered as HTML by the registry UI: neutralise tags and table pipes in every string (data: URIs
    and image paths included: they hold neither)."""
    if isinstance(value, str):
        return html.escape(value, quote=False).replace("|", "\\|")
    if isinstance(value, Mapping):
        return {_md_escaped(k): _md_escaped(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_md_escaped(v) for v in value]
    return value
