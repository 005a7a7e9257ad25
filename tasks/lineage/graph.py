"""`lineage()`: the upstream and downstream of an artifact, run or event, walked over the ledger as one graph.

Why apart: the walk reads events and never writes; its linking rules (same bytes, same path, containing folder) are
the one place where "what did this come from" is decided, for the CLI and for the audit report alike. A registered
version is a node too (`models:/NAME/VERSION` at its artifact manifest's sha256, produced by `register`), so the
approvals, refusals and rollbacks of a version, and what scored with it, are its downstream; a raw extract is found
by the sha256s its landing manifest lists (`extract_lineage`).
"""

from __future__ import annotations

import json
from collections import deque
from pathlib import Path

from tasks.lineage.hashing import EMPTY_SHA256, sha256_file
from tasks.lineage.ledger import Event, Ledger

EVENT_FIELDS = ("event_id", "stage", "run_id", "time", "actor", "code_version")
# facts an event node carries, so a reader sees the decision (who approved what, why) and not only that a stage ran
EVENT_FACTS = ("decision", "alias", "approver", "approver_authenticated", "reason", "model_version", "from_version",
               "to_version", "dataset_version", "ungated", "status")
MODEL_STAGES = ("promote", "rollback", "predict", "monitor")  # events about a registered version


def model_uri(model_version: str) -> str:
    """How the ledger names a registered version (NAME/VERSION): the external URI `models:/NAME/VERSION`."""
    return f"models:/{model_version}"


def model_inputs(event: Event, registered: dict[str, str]) -> list[dict]:
    """The versions an event is about, named as `register` produced them, when the event does not name them itself
    (events written before promote/rollback/predict recorded their model version as an input)."""
    if event.stage not in MODEL_STAGES or any(e["uri"].startswith("models:/") for e in event.inputs):
        return []
    facts = event.facts or {}
    named = [facts.get("model_version") or (event.params or {}).get("model")]  # monitor names it in params
    if event.stage == "rollback" and isinstance(named[0], str):
        named.append(f"{named[0].rsplit('/', 1)[0]}/{facts.get('from_version')}")
    return [{"uri": model_uri(mv), "sha256": registered[mv]} for mv in named if mv in registered]


class _Graph:
    """Events and artifact versions (uri@sha256) as one DAG: artifact -input-> event -output-> artifact.

    An input links to the events that produced exactly that uri@sha256 (a shared node). Failing that, to earlier
    outputs with the same bytes under another name (`same_content`: a copy or rename; the empty file's hash is too
    common to mean anything and is not linked); failing that, to the last earlier writer of the same path
    (`same_uri`: the bytes changed in between) or of a folder containing it or contained in it (`contains`).
    """

    def __init__(self, events: list[Event]):
        self.nodes: dict[str, dict] = {}
        self.edges: dict[tuple[str, str], str] = {}
        self.succ: dict[str, list[str]] = {}
        self.pred: dict[str, list[str]] = {}
        self._by_sha: dict[str, list[str]] = {}
        self._by_uri: dict[str, str] = {}
        registered: dict[str, str] = {}  # NAME/VERSION -> artifact manifest sha256, from register events
        for ev in events:
            facts = {k: ev.facts[k] for k in EVENT_FACTS if k in (ev.facts or {})}
            enode = self._node(f"event:{ev.event_id}", {"type": "event", **{k: getattr(ev, k) for k in EVENT_FIELDS},
                                                        **({"facts": facts} if facts else {})})
            for entry in [*ev.inputs, *model_inputs(ev, registered)]:
                anode = self._artifact(entry)
                for source, kind in self._producers(entry, anode):
                    self._edge(source, anode, kind)
                self._edge(anode, enode, "input")
            outputs = list(ev.outputs)
            mv, manifest = (ev.facts or {}).get("model_version"), (ev.facts or {}).get("artifact_manifest_sha256")
            if ev.stage == "register" and isinstance(mv, str) and isinstance(manifest, str):
                registered[mv] = manifest  # register produced the version: the node promote, predict... consume
                outputs.append({"uri": model_uri(mv), "sha256": manifest})
            for entry in outputs:
                anode = self._artifact(entry)
                self._edge(enode, anode, "output")
                self._by_sha.setdefault(entry["sha256"], []).append(anode)
                self._by_uri[entry["uri"]] = anode

    def _node(self, node_id: str, attrs: dict) -> str:
        self.nodes.setdefault(node_id, {"id": node_id, **attrs})
        return node_id

    def _artifact(self, entry: dict) -> str:
        uri, sha = entry["uri"], entry["sha256"]
        return self._node(f"artifact:{uri}@{sha}", {"type": "artifact", "uri": uri, "sha256": sha})

    def _edge(self, source: str, target: str, kind: str) -> None:
        if source != target and (source, target) not in self.edges:
            self.edges[(source, target)] = kind
            self.succ.setdefault(source, []).append(target)
            self.pred.setdefault(target, []).append(source)

    def _producers(self, entry: dict, anode: str) -> list[tuple[str, str]]:
        if anode in self.pred:  # produced exactly: the shared node already links producer and consumer
            return []
        if entry["sha256"] != EMPTY_SHA256 and entry["sha256"] in self._by_sha:
            return [(n, "same_content") for n in self._by_sha[entry["sha256"]]]
        uri = entry["uri"]
        return [(n, "same_uri" if u == uri else "contains") for u, n in self._by_uri.items()
                if u == uri or u.startswith(uri + "/") or uri.startswith(u + "/")]

    def walk(self, starts: list[str], forward: bool) -> list[str]:
        step, seen, order, todo = (self.succ if forward else self.pred), set(starts), [], deque(starts)
        while todo:
            for n in step.get(todo.popleft(), []):
                if n not in seen:
                    seen.add(n)
                    order.append(n)
                    todo.append(n)
        return order

    def label(self, node_id: str) -> str:
        n = self.nodes[node_id]
        if n["type"] == "artifact":
            return f"{n['uri']} @ {n['sha256'][:12]}"
        head = f"[{n['stage']}] run {n['run_id']} · event {n['event_id'][:12]} · {n['time']} · {n['actor']}"
        return head + decision_text(n.get("facts") or {})

    def tree(self, root: str, forward: bool) -> list[str]:
        """Indented tree; a node met twice is printed once more as '(see above)' and not expanded again."""
        step, arrow = (self.succ, "->") if forward else (self.pred, "<-")
        lines, seen, todo = [], {root}, [(n, 2, root) for n in reversed(step.get(root, []))]
        while todo:
            node, depth, parent = todo.pop()
            kind = self.edges[(parent, node) if forward else (node, parent)]
            note = "" if kind in ("input", "output") else f" ({kind.replace('_', ' ')})"
            again = node in seen
            lines.append(f"{'  ' * depth}{arrow} {self.label(node)}{note}{' (see above)' if again else ''}")
            if not again:
                seen.add(node)
                todo += [(child, depth + 1, node) for child in reversed(step.get(node, []))]
        return lines


def decision_text(facts: dict) -> str:
    """What an event decided, for the tree: an approval, refusal or rollback with its approver and reason; a dataset
    version; a scoring or monitoring run that used an alias the gate did not set."""
    if facts.get("decision") == "rolled_back":
        text = (f" · ROLLED BACK {facts.get('alias')} {facts.get('from_version')} -> {facts.get('to_version')} "
                f"by {facts.get('approver')}")
    elif facts.get("decision"):
        text = f" · {str(facts['decision']).upper()} for {facts.get('alias')} by {facts.get('approver')}"
    elif facts.get("dataset_version") and "model_version" not in facts:
        return f" · dataset version {facts['dataset_version']}"
    else:
        return " · UNGATED alias" if facts.get("ungated") else ""
    verified = " (authenticated)" if facts.get("approver_authenticated") else ""
    return f"{text}{verified}: {facts.get('reason')}"


def _resolve(graph: _Graph, events: list[Event], query: str) -> tuple[str, list[str]]:
    q = query.strip()
    exact = [e for e in events if e.event_id == q]
    by_id = exact or ([e for e in events if e.event_id.startswith(q)] if len(q) >= 8 else [])
    if len(by_id) == 1:
        return "event", [f"event:{by_id[0].event_id}"]
    runs = [f"event:{e.event_id}" for e in events if e.run_id == q]
    if runs:
        return "run", runs
    uri = q.removeprefix("./").rstrip("/")
    artifacts = [n for n, d in graph.nodes.items() if d["type"] == "artifact" and uri
                 and (d["uri"] == uri or d["uri"].startswith(uri + "/"))]
    if artifacts:
        return "uri", artifacts
    shas = [n for n, d in graph.nodes.items() if d["type"] == "artifact" and d["sha256"] == q.lower()]
    if shas:
        return "sha256", shas
    raise LookupError(f"nothing in the lineage ledger matches {query!r} (tried event id, run id, uri, sha256, "
                      "model version)")


def lineage(ledger: Ledger, uri_or_id: str, root: Path | None = None) -> dict:
    """Upstream and downstream of an artifact URI (or a folder prefix of URIs), a run id, an event id (or an
    unambiguous prefix of 8+ characters), a sha256 or a registered version (`models:/NAME/VERSION`, the node
    `register` produced; promote, rollback, predict and monitor events consume it). With `root`, an absolute path
    inside it is accepted too.

    Returns {query, matched, roots, nodes, edges, upstream, downstream, text}: node ids are `event:<id>` and
    `artifact:<uri>@<sha256>`; edge kinds are input, output, same_content, same_uri, contains (see `_Graph`); event
    nodes carry the decision facts (approver, reason, alias, dataset version) under `facts`; `text` is an indented
    tree for the CLI. Raises LookupError when nothing matches.
    """
    events = ledger.events()
    graph = _Graph(events)
    query = uri_or_id
    if root is not None and Path(uri_or_id).is_absolute() and Path(uri_or_id).is_relative_to(Path(root).absolute()):
        query = Path(uri_or_id).relative_to(Path(root).absolute()).as_posix()
    matched, roots = _resolve(graph, events, query)
    return _answer(graph, query, matched, roots)


def landing_manifests(root: Path, shas: set[str]) -> list[str]:
    """Workspace-relative URIs of the landing manifests (data/landing/<source>/<extract id>.json) that list a file
    with one of these sha256s: how ingest recorded the extract in the ledger (its event's input)."""
    found = []
    for manifest in sorted((Path(root) / "data" / "landing").glob("*/*.json")):
        try:
            files = json.loads(manifest.read_text()).get("files") or []
        except (OSError, ValueError, AttributeError):
            continue
        if any(isinstance(f, dict) and f.get("sha256") in shas for f in files):
            found.append(manifest.relative_to(root).as_posix())
    return found


def extract_lineage(ledger: Ledger, root: Path, path: Path) -> dict:
    """The lineage of a raw extract (a file or a folder as received, e.g. under extracts/ or incoming/), matched by
    content: every file is hashed and the landing manifests listing those sha256s are the roots, so what was
    published from it (staged parts, curated data, the dataset version, models) is downstream. The extract's path
    and file names appear nowhere in the answer (they may carry PHI): the query reads `extract (N files)`."""
    path = Path(path)
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file() and not p.is_symlink())
    shas = {sha256_file(f) for f in files}
    manifests = set(landing_manifests(root, shas))
    graph = _Graph(ledger.events())
    roots = [n for n, d in graph.nodes.items() if d["type"] == "artifact" and d["uri"] in manifests]
    query = f"extract ({len(files)} file{'s' if len(files) != 1 else ''}, matched by sha256)"
    if not roots:
        raise LookupError(f"no file of this extract ({len(files)} files) was ingested into this workspace "
                          "(no landing manifest lists its sha256s)")
    return _answer(graph, query, "extract", roots)


def _answer(graph: _Graph, query: str, matched: str, roots: list[str]) -> dict:
    up, down = graph.walk(roots, forward=False), graph.walk(roots, forward=True)
    keep = set(roots) | set(up) | set(down)
    text = [f"lineage of {query} ({matched}: {len(roots)} match{'es' if len(roots) > 1 else ''})"]
    for r in roots:
        text.append(graph.label(r))
        for title, forward in (("upstream", False), ("downstream", True)):
            body = graph.tree(r, forward)
            text += [f"  {title}:{'' if body else ' none'}", *body]
    return {"query": query, "matched": matched, "roots": roots,
            "nodes": [n for i, n in graph.nodes.items() if i in keep],
            "edges": [{"source": s, "target": t, "kind": k} for (s, t), k in graph.edges.items()
                      if s in keep and t in keep],
            "upstream": up, "downstream": down, "text": "\n".join(text)}
