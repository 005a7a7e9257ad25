"""Model cards in Markdown (for the registry description and the repo) and HTML (a standalone page for review).

Why both from one dict: the reviewer reads the HTML, the registry shows the Markdown, and they must not drift.
Every section always renders; an absent one says "not reported", because a silently missing subgroup table reads
as "nothing to see" when it means "nobody looked". HTML is autoescaped (fields come from configs and humans);
the page is self-contained (inline CSS, no external assets) so it opens offline in a hospital network.

The promotion gate's evidence rules (chance, baselines, exceptions) are judged on the card's own evaluation when it is
staged, each rule with its measured value, verdict and any declared exception; the final decision (with the champion,
integrity and PHI checks) is recorded at promotion, in the registry and the ledger.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Any

import jinja2

NOT_REPORTED = "not reported"

_MACROS = """
{%- macro value(v) -%}
{%- if v is undefined or v is none or v == '' -%}{{ NR }}{%- elif v is number and v is not integer -%}{{ '%.3f' % v }}
{%- else -%}{{ v }}{%- endif -%}
{%- endmacro -%}
{%- macro ci(v) -%}
{%- if v.ci_low is undefined or v.ci_low is none -%}{{ NR }}
{%- else -%}{{ value(v.ci_low) }} – {{ value(v.ci_high) }}{%- endif -%}
{%- endmacro -%}
{%- macro verdict(r) -%}
{{ 'pass (excepted)' if r.excepted else ('pass' if r.passed else 'FAIL') }}
{%- endmacro -%}
{%- macro kv(d) -%}
{%- if d is mapping -%}
{%- for k, v in d|dictsort %}{{ k }} {{ value(v) }}{{ ', ' if not loop.last }}{% endfor -%}
{%- else -%}{{ value(d) }}{%- endif -%}
{%- endmacro -%}
"""

_MD = _MACROS + """# Model card: {{ c.name }} v{{ c.version }}

## Intended use
{{ value(c.intended_use) }}

## Out of scope
{{ value(c.out_of_scope) }}

## Versions
- Dataset version: {{ value(c.dataset_version) }}
- Code version: {{ value(c.code_version) }}
{% if c.contract_versions %}{% for k, v in c.contract_versions|dictsort %}- Contract {{ k }}: {{ v }}
{% endfor %}{% else %}- Contract versions: {{ NR }}
{% endif %}
## Training data
{% if c.training_data %}{% for family, counts in c.training_data|dictsort %}
**{{ family }}**: {% for group, n in counts|dictsort %}{{ group }} {{ n }}{{ ", " if not loop.last }}{% endfor %}
{% endfor %}{% else %}{{ NR }}
{% endif %}
## Metrics
{% if c.metrics %}| metric | value | 95% CI |
|---|---|---|
{% for m, v in c.metrics|dictsort %}| {{ m }} | {{ value(v.value) }} | {{ ci(v) }} |
{% endfor %}{% else %}{{ NR }}
{% endif %}
## Missing modality
{% if c.missing_modality %}| modality removed | metrics |
|---|---|
{% for mod, ms in c.missing_modality|dictsort %}| {{ mod }} | {{ kv(ms) }} |
{% endfor %}{% else %}{{ NR }}
{% endif %}
## Subgroups
{% if c.subgroups %}{% for family, groups in c.subgroups|dictsort %}
**{{ family }}**

| group | values |
|---|---|
{% for g, vals in groups|dictsort %}| {{ g }} | {{ kv(vals) }} |
{% endfor %}{% endfor %}{% else %}{{ NR }}
{% endif %}
## Baselines
{% if c.baselines %}{% for name, ms in c.baselines|dictsort %}- {{ name }}: {{ ms|compact }}
{% endfor %}{% else %}{{ NR }}
{% endif %}
## Fused model vs baselines
{% if c.comparisons %}Paired bootstrap on the same patients: fused minus baseline, 95% CI.

| task | baseline | metric | fused | baseline | difference (95% CI) | patients |
|---|---|---|---|---|---|---|
{% for r in c.comparisons %}| {{ r.task }} | {{ r.name }} | {{ value(r.metric) }} | {{ value(r.a) }} |
{{- ' ' }}{{ value(r.b) }} | {{ r.difference }} | {{ value(r.n) }} |
{% endfor %}{% else %}{{ NR }}
{% endif %}
## Promotion gate
{% if c.gate and c.gate.checks %}{{ c.gate.note }}

| rule | verdict | value | detail | exception reason |
|---|---|---|---|---|
{% for r in c.gate.checks %}| {{ r.rule }} | {{ verdict(r) }} | {{ r.value|compact }} | {{ r.detail }} |
{{- ' ' }}{{ r.reason or '' }} |
{% endfor %}{% elif c.gate and c.gate.error %}{{ c.gate.error }}
{% else %}{{ NR }}
{% endif %}
## Limitations
{% if c.limitations %}{% for item in c.limitations %}- {{ item }}
{% endfor %}{% else %}{{ NR }}
{% endif %}
## Lineage
{% if c.lineage %}- Ledger event: {{ value(c.lineage.ledger_event_id) }}
- MLflow run: {{ value(c.lineage.mlflow_run_id) }}
- Approvals: {{ c.lineage.approvals|join(", ") if c.lineage.approvals else NR }}
{% else %}{{ NR }}
{% endif %}
## Plots
{% if c.plots %}{% for p in c.plots %}![{{ p }}]({{ p }})
{% endfor %}{% else %}{{ NR }}
{% endif %}"""

_HTML = _MACROS + """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Model card: {{ c.name }} v{{ c.version }}</title>
<style>body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}
table{border-collapse:collapse;margin:.5rem 0}td,th{border:1px solid #bbb;padding:.25rem .6rem;text-align:left}
th{background:#f0f0f0}.nr{color:#a00;font-style:italic}img{max-width:100%}</style></head><body>
{%- macro nr() %}<p class="nr">{{ NR }}</p>{% endmacro %}
<h1>Model card: {{ c.name }} v{{ c.version }}</h1>
<h2>Intended use</h2>{% if c.intended_use %}<p>{{ c.intended_use }}</p>{% else %}{{ nr() }}{% endif %}
<h2>Out of scope</h2>{% if c.out_of_scope %}<p>{{ c.out_of_scope }}</p>{% else %}{{ nr() }}{% endif %}
<h2>Versions</h2><ul><li>Dataset version: {{ value(c.dataset_version) }}</li>
<li>Code version: {{ value(c.code_version) }}</li>
{% if c.contract_versions %}{% for k, v in c.contract_versions|dictsort %}<li>Contract {{ k }}: {{ v }}</li>{% endfor %}
{% else %}<li>Contract versions: {{ NR }}</li>{% endif %}</ul>
<h2>Training data</h2>{% if c.training_data %}{% for family, counts in c.training_data|dictsort %}
<p><strong>{{ family }}</strong>: {{ kv(counts) }}</p>{% endfor %}{% else %}{{ nr() }}{% endif %}
<h2>Metrics</h2>{% if c.metrics %}<table><tr><th>metric</th><th>value</th><th>95% CI</th></tr>
{% for m, v in c.metrics|dictsort %}<tr><td>{{ m }}</td><td>{{ value(v.value) }}</td>
<td>{{ ci(v) }}</td></tr>{% endfor %}</table>{% else %}{{ nr() }}{% endif %}
<h2>Missing modality</h2>{% if c.missing_modality %}<table><tr><th>modality removed</th><th>metrics</th></tr>
{% for mod, ms in c.missing_modality|dictsort %}<tr><td>{{ mod }}</td><td>{{ kv(ms) }}</td></tr>{% endfor %}
</table>{% else %}{{ nr() }}{% endif %}
<h2>Subgroups</h2>{% if c.subgroups %}{% for family, groups in c.subgroups|dictsort %}<h3>{{ family }}</h3>
<table><tr><th>group</th><th>values</th></tr>{% for g, vals in groups|dictsort %}<tr><td>{{ g }}</td>
<td>{{ kv(vals) }}</td></tr>{% endfor %}</table>{% endfor %}{% else %}{{ nr() }}{% endif %}
<h2>Baselines</h2>{% if c.baselines %}<ul>{% for name, ms in c.baselines|dictsort %}
<li>{{ name }}: {{ ms|compact }}</li>{% endfor %}</ul>{% else %}{{ nr() }}{% endif %}
<h2>Fused model vs baselines</h2>{% if c.comparisons %}<p>Paired bootstrap on the same patients: fused minus baseline,
95% CI.</p><table><tr><th>task</th><th>baseline</th><th>metric</th><th>fused</th><th>baseline</th>
<th>difference (95% CI)</th><th>patients</th></tr>{% for r in c.comparisons %}<tr><td>{{ r.task }}</td>
<td>{{ r.name }}</td><td>{{ value(r.metric) }}</td><td>{{ value(r.a) }}</td><td>{{ value(r.b) }}</td>
<td>{{ r.difference }}</td><td>{{ value(r.n) }}</td></tr>{% endfor %}</table>{% else %}{{ nr() }}{% endif %}
<h2>Promotion gate</h2>{% if c.gate and c.gate.checks %}<p>{{ c.gate.note }}</p>
<table><tr><th>rule</th><th>verdict</th><th>value</th><th>detail</th><th>exception reason</th></tr>
{% for r in c.gate.checks %}<tr><td>{{ r.rule }}</td><td>{{ verdict(r) }}</td><td>{{ r.value|compact }}</td>
<td>{{ r.detail }}</td><td>{{ r.reason or '' }}</td></tr>{% endfor %}</table>
{%- elif c.gate and c.gate.error %}<p>{{ c.gate.error }}</p>{% else %}{{ nr() }}{% endif %}
<h2>Limitations</h2>{% if c.limitations %}<ul>{% for item in c.limitations %}<li>{{ item }}</li>{% endfor %}</ul>
{% else %}{{ nr() }}{% endif %}
<h2>Lineage</h2>{% if c.lineage %}<ul><li>Ledger event: {{ value(c.lineage.ledger_event_id) }}</li>
<li>MLflow run: {{ value(c.lineage.mlflow_run_id) }}</li>
<li>Approvals: {{ c.lineage.approvals|join(", ") if c.lineage.approvals else NR }}</li></ul>
{%- else %}{{ nr() }}{% endif %}
<h2>Plots</h2>{% if c.plots %}{% for p in c.plots %}<figure><img src="{{ p }}" alt="{{ p }}">
<figcaption>{{ p }}</figcaption></figure>{% endfor %}{% else %}{{ nr() }}{% endif %}
</body></html>
"""


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
    env = jinja2.Environment(autoescape=autoescape, undefined=jinja2.ChainableUndefined, trim_blocks=False,
                             keep_trailing_newline=True)
    env.globals["NR"] = NOT_REPORTED
    env.filters["compact"] = compact
    return env


def render_model_card(card: Mapping[str, Any]) -> tuple[str, str]:
    """(markdown, html) for `card`; `name` and `version` are required, every other section may be absent.

    Plot paths are relative to the card (the HTML references them, it does not embed them).
    """
    missing = [k for k in ("name", "version") if not card.get(k)]
    if missing:
        raise ValueError(f"model card needs {' and '.join(missing)}")
    c = _with_defaults(card)
    markdown = _environment(autoescape=False).from_string(_MD).render(c=_md_escaped(c))
    html = _environment(autoescape=True).from_string(_HTML).render(c=c)
    return markdown, html


def _md_escaped(value: Any) -> Any:
    """Markdown is rendered as HTML by the registry UI: neutralise tags and table pipes in every string."""
    if isinstance(value, str):
        return html.escape(value, quote=False).replace("|", "\\|")
    if isinstance(value, Mapping):
        return {_md_escaped(k): _md_escaped(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_md_escaped(v) for v in value]
    return value


def _with_defaults(card: Mapping[str, Any]) -> dict[str, Any]:
    """Metric entries may be bare numbers; normalise them to {value, ci_low, ci_high} so templates stay simple."""
    c = dict(card)
    metrics = c.get("metrics") or {}
    c["metrics"] = {k: (v if isinstance(v, Mapping) else {"value": v}) for k, v in metrics.items()}
    return c
