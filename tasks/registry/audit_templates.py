"""The audit report's two templates (Markdown, HTML): summary first, then contents, then the sections in the order
the data travelled, hash tables last in each section (collapsed in HTML).

Why apart from tasks.registry.audit_render: the markup is long and changes for layout reasons only; the renderer
decides what goes in each cell. HTML is self-contained (inline CSS, no script, no external URL) and carries the
shared verdict element `id="mmfm-verdict"` that the offline browser test reads.
"""

MD = """# Audit report: {{ m.name }} version {{ m.version }}

Requested as `{{ m.ref }}`; generated {{ generated }}. From raw extract sha256 to today's alias; counts, hashes, ids
and pseudonyms only.

## Summary

**Verdict: {{ s.verdict }}.** {{ s.headline }}
{% if s.gaps %}
{% for g in s.gaps %}- Gap: {{ g }}
{% endfor %}{% endif %}{% for n in s.notes %}- Note: {{ n }}
{% endfor %}
**Chain from raw extracts to the alias**

| {{ chain.headers|join(" | ") }} |
|{% for h in chain.headers %}---|{% endfor %}
{% for r in chain.rows %}| {{ r|join(" | ") }} |
{% endfor %}
**Approvals**

{% if approvals.rows %}| {{ approvals.headers|join(" | ") }} |
|{% for h in approvals.headers %}---|{% endfor %}
{% for r in approvals.rows %}| {{ r|join(" | ") }} |
{% endfor %}{% else %}no approval or refusal recorded
{% endif %}
**Monitoring: {{ s.monitoring_status }}**

{% if monitoring.rows %}| {{ monitoring.headers|join(" | ") }} |
|{% for h in monitoring.headers %}---|{% endfor %}
{% for r in monitoring.rows %}| {{ r|join(" | ") }} |
{% endfor %}{% endif %}
**Artifacts**

{% for a in links %}- {{ a.kind }}: {% if a.href %}[{{ a.label }}]({{ a.href }}){% else %}{{ a.label }}
  ({{ a.missing }}){% endif %}
{% endfor %}
## Contents

{% for sec in sections %}- [{{ sec.title }}](#{{ sec.anchor }})
{% endfor %}{% for sec in sections %}
## {{ sec.title }}
{% if sec.intro %}
{{ sec.intro }}
{% endif %}{% if sec.facts %}
{% for k, v in sec.facts %}- **{{ k }}**: {{ v }}
{% endfor %}{% endif %}{% for t in sec.tables %}
**{{ t.caption }}**

{% if t.rows %}| {{ t.headers|join(" | ") }} |
|{% for h in t.headers %}---|{% endfor %}
{% for r in t.rows %}| {{ r|join(" | ") }} |
{% endfor %}{% else %}{{ t.empty }}
{% endif %}{% endfor %}{% if sec.bullets %}
{% for b in sec.bullets %}- {{ b }}
{% endfor %}{% endif %}{% endfor %}"""

_TABLE = """{% macro table(t) %}{% if t.rows %}<table{% if t.css %} class="{{ t.css }}"{% endif %}>
<caption>{{ t.caption }}</caption>
<tr>{% for h in t.headers %}<th>{{ h }}</th>{% endfor %}</tr>
{% for r in t.rows %}<tr>{% for c in r %}<td>{{ c }}</td>{% endfor %}</tr>
{% endfor %}</table>{% else %}<p><strong>{{ t.caption }}</strong>: {{ t.empty }}</p>{% endif %}{% endmacro %}"""

HTML = _TABLE + """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Audit report: {{ m.name }} version {{ m.version }}</title>
<style>body{font-family:system-ui,sans-serif;max-width:84rem;margin:2rem auto;padding:0 1rem;color:#222}
table{border-collapse:collapse;margin:.5rem 0;font-size:.85rem}td,th{border:1px solid #bbb;padding:.2rem .5rem;
text-align:left;vertical-align:top;overflow-wrap:break-word}th{background:#f0f0f0}.ok{color:#060}.bad{color:#a00}
h2{border-bottom:1px solid #ccc;margin-top:2rem}caption{text-align:left;font-weight:bold;padding:.3rem 0}
#summary{border:2px solid #888;border-radius:6px;padding:.5rem 1rem;background:#fafafa}
.verdict{font-size:1.3rem;padding:.3rem .6rem;border-radius:4px;display:inline-block}
.verdict.complete{background:#e3f4e3;color:#060}.verdict.gaps{background:#fbe3e3;color:#a00}
table.chain td:nth-child(3){font-family:monospace;font-size:.72rem}
details{margin:.4rem 0}summary{cursor:pointer;color:#335}nav ol{columns:2}</style>
</head><body>
<h1>Audit report: {{ m.name }} version {{ m.version }}</h1>
<p>Requested as <code>{{ m.ref }}</code>; generated {{ generated }}. From raw extract sha256 to today's alias;
counts, hashes, ids and pseudonyms only.</p>
<section id="summary"><h2>Summary</h2>
<p><span id="mmfm-verdict" data-verdict="{{ s.verdict }}" class="verdict {{ s.verdict }}">Verdict:
{{ s.verdict }}</span>
{{ s.headline }}</p>
{% if s.gaps or s.notes %}<ul>{% for g in s.gaps %}<li class="bad">Gap: {{ g }}</li>{% endfor %}
{% for n in s.notes %}<li>Note: {{ n }}</li>{% endfor %}</ul>{% endif %}
{{ table(chain) }}
{{ table(approvals) }}
<h3>Monitoring: {{ s.monitoring_status }}</h3>
{% if monitoring.rows %}{{ table(monitoring) }}{% endif %}
<h3>Artifacts</h3>
<ul>{% for a in links %}<li>{{ a.kind }}: {% if a.href %}<a href="{{ a.href }}">{{ a.label }}</a>{% else %}{{ a.label }}
({{ a.missing }}){% endif %}</li>{% endfor %}</ul>
</section>
<nav id="contents"><h2>Contents</h2><ol>{% for sec in sections %}<li><a href="#{{ sec.anchor }}">{{ sec.title }}</a>
</li>{% endfor %}</ol></nav>
{% for sec in sections %}<section id="{{ sec.anchor }}"><h2>{{ sec.title }}</h2>
{% if sec.intro %}<p>{{ sec.intro }}</p>{% endif %}
{% if sec.facts %}<ul>{% for k, v in sec.facts %}<li><strong>{{ k }}</strong>: {{ v }}</li>{% endfor %}</ul>{% endif %}
{% for t in sec.tables if not t.collapse %}{{ table(t) }}
{% endfor %}{% if sec.bullets %}<ul>{% for b in sec.bullets %}<li class="bad">{{ b }}</li>{% endfor %}</ul>{% endif %}
{% for t in sec.tables if t.collapse %}<details><summary>{{ t.caption }} ({{ t.rows|length }} rows)</summary>
{{ table(t) }}</details>
{% endfor %}</section>
{% endfor %}</body></html>
"""
