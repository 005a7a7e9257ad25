"""Registry governance that open-source MLflow lacks: a promotion gate, artifact hashes, a PHI scan and model cards.

Pure functions here (gate, integrity, phi_scan, model_card, pyfunc, records); the registry's MLflow side lives
beside them: client.py (naming a version), staging.py (what a version holds, registering it, loading it verified),
promotion.py (gate decision, pending marker, alias history, rollback), scoring.py (batch scoring), and the audit
report (audit_gather.py collects the evidence, audit_render.py writes it). flows/register.py and flows/promote.py
wire them through tasks/stage/run.py.

    tags = manifest_tags(hash_tree(model_dir))          # -> client.set_model_version_tag(name, version, k, v)
    verify_tree(model_dir, manifest_from_tags(tags))    # before load: raises IntegrityError naming files
    decision = evaluate_gate(candidate, champion, GatePolicy.from_params(params))
    markdown, html = render_model_card(card)
"""

from __future__ import annotations

from tasks.registry.gate import Candidate, GateDecision, GatePolicy, evaluate_gate
from tasks.registry.integrity import IntegrityError, hash_tree, manifest_from_tags, manifest_tags, verify_tree
from tasks.registry.model_card import render_model_card
from tasks.registry.phi_scan import Finding, scan_artifacts

__all__ = [
    "Candidate", "Finding", "GateDecision", "GatePolicy", "IntegrityError", "evaluate_gate", "hash_tree",
    "manifest_from_tags", "manifest_tags", "render_model_card", "scan_artifacts", "verify_tree",
]
