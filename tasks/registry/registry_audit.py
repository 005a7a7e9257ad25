"""The registry checked against the lineage ledger: what `mmfm audit verify` adds to the ledger's own re-hashing.

Why: the ledger is append-only and hash-chained, the registry is not: an alias moved in the MLflow UI or a tag edited
by anyone with EDIT leaves no trace in MLflow. Every alias and every mmfm-owned version tag the ledger can vouch for
is compared with it, and each difference is one line naming the model, the alias or tag, what the registry says and
what the ledger says:

- aliases: each alias of each model this workspace registered must point where the last ledger event that set it
  left it (an approved promote, a rollback, or register for `challenger`); an alias the ledger never set, or one it
  set that is gone, fails too (tasks/registry/gated.py reads the ledger);
- registration tags: `mmfm.sha256.manifest` (the artifact manifest; its chunks must hash to it), `mmfm.lineage_event`
  and `mmfm.dataset_version` against the version's register event;
- decision tags `mmfm.{approved,refused,rolled_back}.<alias>.<stamp>`: each must be the record of a ledger event
  (same version, decision, alias, time and approver), and each promote/rollback event must still have its tag.
Models the ledger does not name (another workspace's, on a shared server) are listed in a note, not judged.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from tasks import tags
from tasks.lineage.ledger import Event, Ledger
from tasks.registry.gated import GATE_STAGES, ledger_aliases
from tasks.registry.integrity import MANIFEST_HASH_TAG, IntegrityError, manifest_from_tags

DECISIONS = ("approved", "refused", "rolled_back")


@dataclass
class RegistryCheck:
    models_checked: list[str] = field(default_factory=list)
    aliases_checked: int = 0
    tags_checked: int = 0
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict:
        return {"ok": self.ok, "models_checked": self.models_checked, "aliases_checked": self.aliases_checked,
                "tags_checked": self.tags_checked, "problems": list(self.problems), "notes": list(self.notes)}

    def text(self) -> str:
        lines = [f"registry {'OK' if self.ok else 'FAILED'} against the ledger: {len(self.models_checked)} model(s), "
                 f"{self.aliases_checked} alias(es), {self.tags_checked} mmfm tag(s) checked"]
        return "\n".join(lines + [f"  {p}" for p in self.problems] + [f"  note: {n}" for n in self.notes])


def _stamp(at: str) -> str:
    """The tag-key stamp of a decision made at `at` (tasks/registry/promotion.py writes both from one clock)."""
    return datetime.fromisoformat(at).strftime("%Y%m%dT%H%M%SZ")


def _decision_tags(events: list[Event]) -> dict[tuple[str, str, str], Event]:
    """{(model, version, tag key): the promote/rollback event whose record it is}."""
    expected = {}
    for ev in events:
        facts = ev.facts or {}
        if ev.stage not in GATE_STAGES or not facts.get("at") or not facts.get("alias"):
            continue
        decision = facts.get("decision") or ("rolled_back" if ev.stage == "rollback" else None)
        version = str(facts.get("to_version")) if ev.stage == "rollback" else \
            str(facts.get("model_version", "")).rsplit("/", 1)[-1]
        name = str(facts.get("model_version", "")).rsplit("/", 1)[0]
        if decision in DECISIONS and name and version:
            expected[(name, version, tags.key(f"{decision}.{facts['alias']}.{_stamp(facts['at'])}"))] = ev
    return expected


def _check_aliases(client, name: str, setters: dict, report: RegistryCheck) -> None:
    from tasks.registry.promotion import PROMOTING

    model = client.get_registered_model(name)
    aliases = {a: str(v) for a, v in (model.aliases or {}).items()}
    for alias, version in sorted(aliases.items()):
        report.aliases_checked += 1
        said = setters.get((name, alias))
        if said is None:
            report.problems.append(f"alias {name}@{alias} points to version {version}; the ledger records no mmfm "
                                   "event that set it (set outside mmfm)")
        elif said.version != version:
            pending = " (a promotion was interrupted: rerun it to complete)" if \
                model.tags.get(f"{PROMOTING}{alias}") else " (moved outside mmfm)"
            report.problems.append(f"alias {name}@{alias} points to version {version}; the ledger says "
                                   f"{said.describe()}{pending}")
    for (model_name, alias), said in sorted(setters.items()):
        if model_name == name and alias not in aliases:
            report.problems.append(f"alias {name}@{alias} is gone; the ledger says {said.describe()} "
                                   "(deleted outside mmfm)")


def _check_version_tags(name: str, version, registered: Event | None, decisions: dict,
                        report: RegistryCheck) -> None:
    where = f"{name}/{version.version}"
    vtags = version.tags or {}
    if registered is not None:
        facts = registered.facts or {}
        for key, want in ((MANIFEST_HASH_TAG, facts.get("artifact_manifest_sha256")),
                          (tags.key("lineage_event"), registered.event_id),
                          (tags.DATASET_VERSION, facts.get("dataset_version"))):
            if want is None:
                continue
            report.tags_checked += 1
            if vtags.get(key) != want:
                report.problems.append(f"tag {key} of {where} is {vtags.get(key)!r}; the ledger's register event "
                                       f"{registered.event_id[:12]} says {want!r} (changed outside mmfm)")
        try:
            manifest_from_tags(vtags)
        except IntegrityError as err:
            report.problems.append(f"tags {tags.key('sha256')}.* of {where}: {err}")
    elif vtags.get(tags.REGISTRATION) == "incomplete":
        report.problems.append(f"{where}: registration incomplete (no register event in the ledger); rerun "
                               "`mmfm register` to complete it")
    elif any(k.startswith(tags.NS) for k in vtags):
        report.problems.append(f"{where} carries mmfm tags but the ledger records no register event for it "
                               "(created or tagged outside mmfm)")
    for key, value in sorted(vtags.items()):
        if key.split(".")[1:2] and key.split(".")[1] in DECISIONS and key.startswith(tags.NS):
            report.tags_checked += 1
            event = decisions.get((name, str(version.version), key))
            recorded = json.loads(value) if value.startswith("{") else {}
            if event is None:
                report.problems.append(f"tag {key} of {where} matches no promote/rollback event in the ledger "
                                       "(written outside mmfm)")
            elif recorded.get("approver") != event.facts.get("approver") or \
                    recorded.get("decision", "rolled_back") != event.facts.get("decision", "rolled_back"):
                report.problems.append(f"tag {key} of {where} says {recorded.get('decision')} by "
                                       f"{recorded.get('approver')!r}; the ledger's event {event.event_id[:12]} says "
                                       f"{event.facts.get('decision')} by {event.facts.get('approver')!r}")
    for (model_name, v, key), event in sorted(decisions.items(), key=lambda kv: kv[0]):
        if model_name == name and v == str(version.version) and key not in vtags:
            report.problems.append(f"tag {key} of {where} is gone; the ledger's {event.stage} event "
                                   f"{event.event_id[:12]} recorded it (deleted outside mmfm)")


def check_registry(root: Path, client) -> RegistryCheck:
    """Compare every alias and mmfm tag of the models this workspace's ledger names with the ledger."""
    events = Ledger.of_workspace(root).events()
    report = RegistryCheck()
    registered = {ev.facts["model_version"]: ev for ev in events
                  if ev.stage == "register" and isinstance((ev.facts or {}).get("model_version"), str)}
    names = sorted({mv.rsplit("/", 1)[0] for mv in registered})
    setters, decisions = ledger_aliases(events), _decision_tags(events)
    others = sorted(m.name for m in client.search_registered_models() if m.name not in names)
    if others:
        report.notes.append(f"not registered by this workspace, not checked: {', '.join(others)}")
    for name in names:
        report.models_checked.append(name)
        _check_aliases(client, name, setters, report)
        for version in client.search_model_versions(f"name='{name}'"):
            _check_version_tags(name, version, registered.get(f"{name}/{version.version}"), decisions, report)
    return report
