"""The lineage ledger: one append-only, hash-chained table of what every stage read and wrote (docs/architecture.md §7).

    <workspace>/.mmfm/lineage.db   SQLite, table `events`, one row per finished stage run

Each row carries `prev_hash` (the previous row's `hash`) and `hash = sha256(canonical JSON of the row)`, the first
row chaining to GENESIS. Editing, deleting, inserting or reordering a row therefore breaks the chain and `verify`
says where. SQLite triggers refuse UPDATE and DELETE, so history can only be changed by editing the file by hand,
which `verify` then detects. Artifacts are named by workspace-relative URI + sha256 and `verify` re-hashes them,
catching an in-place byte flip that keeps size and mtime (which `dvc status`, trusting mtime, does not notice).

No PHI, ever. URIs are workspace-relative paths (landing names files by content address, not by original name) and
hashes are one-way. `params` and `facts` hold settings and aggregate counts; callers must never put data values in
them (identifiers, names, patient dates, free text): the ledger is append-only, so PHI written there could not be
removed without breaking the chain.

Where things live (import them from here; the submodules are the package's own layout):
    hashing       canonical_json, event_hash, tree_sha256, artifact_sha256, artifact_entry, is_external, entry checks
    provenance    code_version (git revision of the running code), default_actor
    ledger        Event, Ledger (the SQLite table and its append), record and describes (what stages call)
    verification  verify, VerifyReport, Problem: the chain and artifact checks
    graph         lineage(): upstream and downstream walk over events, artifact versions and registered model
                  versions (models:/NAME/VERSION); extract_lineage(): a raw extract found by its files' sha256s
    openlineage   export and send as OpenLineage RunEvents (import from tasks.lineage.openlineage; not re-exported,
                  so the ledger never loads it)
"""

from __future__ import annotations

from tasks.lineage.graph import lineage
from tasks.lineage.hashing import (
    EMPTY_SHA256,
    artifact_entry,
    artifact_sha256,
    canonical_json,
    event_hash,
    is_external,
    tree_sha256,
)
from tasks.lineage.ledger import GENESIS, LEDGER_FILE, Event, Ledger, describes, record
from tasks.lineage.provenance import code_version, default_actor
from tasks.lineage.verification import Problem, VerifyReport, verify

__all__ = [
    "EMPTY_SHA256", "GENESIS", "LEDGER_FILE", "Event", "Ledger", "Problem", "VerifyReport", "artifact_entry",
    "artifact_sha256", "canonical_json", "code_version", "default_actor", "describes", "event_hash", "is_external",
    "lineage", "record", "tree_sha256", "verify",
]
