"""Which version each alias should hold by the ledger's account, and the check `predict`/`monitor` make before they
score with an alias.

Why: an alias is a registry pointer that anyone with MANAGE on the model can move (the MLflow UI's "Promote model"
button, `MlflowClient().set_registered_model_alias`) with no gate and no record. The lineage ledger is the record:
a `promote` event whose decision is `approved`, or a `rollback` event, says which version the gate gave which alias;
a `register` event says which version mmfm made `challenger` (set by mmfm, but not through the gate). What the
registry says and the ledger does not is a move made outside mmfm: `mmfm audit verify` fails on it
(tasks/registry/registry_audit.py), and `require_gated` refuses to score with it unless the caller allows it.

A reference to an explicit version (NAME/VERSION, models:/NAME/VERSION) is what the user asked for by name: it is
allowed without a gate check.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tasks.lineage.ledger import Event, Ledger
from tasks.registry.integrity import MANIFEST_HASH_TAG

GATE_STAGES = ("promote", "rollback")


class UngatedAlias(RuntimeError):
    """An alias points to a version the gate did not give it (moved outside mmfm, or never promoted). The message
    names the model, the alias, the version it points to and what the ledger says."""


@dataclass(frozen=True)
class AliasRecord:
    """The ledger's last word on one alias of one model."""

    name: str
    alias: str
    version: str
    stage: str  # promote | rollback | register
    event_id: str

    @property
    def gated(self) -> bool:
        return self.stage in GATE_STAGES

    def describe(self) -> str:
        how = "through the gate" if self.gated else "at registration, not through the gate"
        return f"version {self.version} ({self.stage} event {self.event_id[:12]}, {how})"


def split_ref(ref: str) -> tuple[str, str | None, str | None]:
    """NAME/VERSION, NAME@alias, models:/NAME/VERSION or models:/NAME@alias -> (name, version, alias); one of
    version and alias is None. Raises ValueError for anything else."""
    body = ref.strip().removeprefix("models:/")
    if "@" in body:
        name, alias = body.split("@", 1)
        if name and alias:
            return name, None, alias
    elif "/" in body:
        name, version = body.rsplit("/", 1)
        if name and version.isdigit():
            return name, version, None
    raise ValueError(f"{ref!r}: name a model version as NAME/VERSION, NAME@alias, models:/NAME/VERSION or "
                     "models:/NAME@alias")


def _model_version(event: Event) -> tuple[str, str] | None:
    mv = (event.facts or {}).get("model_version")
    if not isinstance(mv, str) or "/" not in mv:
        return None
    name, version = mv.rsplit("/", 1)
    return name, version


def alias_setting(event: Event) -> AliasRecord | None:
    """The alias an event set, if it set one: an approved promote, a rollback, a register."""
    mv, facts = _model_version(event), event.facts or {}
    if mv is None:
        return None
    name, version = mv
    if event.stage == "promote" and facts.get("decision") == "approved" and facts.get("alias"):
        return AliasRecord(name, facts["alias"], version, event.stage, event.event_id)
    if event.stage == "rollback" and facts.get("alias"):
        return AliasRecord(name, facts["alias"], str(facts.get("to_version") or version), event.stage, event.event_id)
    if event.stage == "register" and (event.params or {}).get("alias"):
        return AliasRecord(name, event.params["alias"], version, event.stage, event.event_id)
    return None


def ledger_aliases(events: list[Event]) -> dict[tuple[str, str], AliasRecord]:
    """{(model, alias): the last ledger event that set it}, in ledger order."""
    found: dict[tuple[str, str], AliasRecord] = {}
    for event in events:
        setting = alias_setting(event)
        if setting is not None:
            found[(setting.name, setting.alias)] = setting
    return found


def version_entry(client, name: str, version: str) -> dict | None:
    """The ledger entry naming a registered version: `models:/NAME/VERSION` with its artifact manifest's sha256
    (what `register` recorded as artifact_manifest_sha256); None when the version carries no manifest."""
    sha = client.get_model_version(name, str(version)).tags.get(MANIFEST_HASH_TAG)
    return {"uri": f"models:/{name}/{version}", "sha256": sha} if sha else None


def ungated_message(name: str, alias: str, current: str, expected: AliasRecord | None) -> str:
    if expected is not None and expected.gated:
        said = f"the ledger says the gate gave it {expected.describe()}"
    elif expected is not None:
        said = f"the ledger records no gate decision for it (last set {expected.describe()})"
    else:
        said = "the ledger records no mmfm event that set it"
    return (f"{name}@{alias} points to version {current}, but {said}: it was moved outside mmfm or never promoted. "
            f"Promote it through the gate (`mmfm promote {name}/{current}`), name the version explicitly "
            f"({name}/{current}), or pass --allow-ungated to predict/monitor")


def require_gated(root: Path, client, model_ref: str, allow_ungated: bool = False) -> dict:
    """Resolve a model reference and, for an alias, check that the gate set it (the ledger of workspace `root`).

    Returns {"name", "version", "alias", "gated"}: `alias` is None for an explicit version (allowed without a check,
    `gated` True: nothing was overridden); `gated` is False only when an alias the gate did not set was let through
    by `allow_ungated` (then `warning` says why; record `ungated: true` with the run). Raises UngatedAlias naming
    the model, the alias, the version it points to and what the ledger says, unless `allow_ungated`.
    """
    name, version, alias = split_ref(model_ref)
    if alias is None:
        return {"name": name, "version": str(version), "alias": None, "gated": True}
    current = str(client.get_model_version_by_alias(name, alias).version)
    expected = ledger_aliases(Ledger.of_workspace(root).events()).get((name, alias))
    if expected is not None and expected.gated and expected.version == current:
        return {"name": name, "version": current, "alias": alias, "gated": True}
    message = ungated_message(name, alias, current, expected)
    if not allow_ungated:
        raise UngatedAlias(message)
    return {"name": name, "version": current, "alias": alias, "gated": False, "warning": message}
