"""Upstream and downstream across landing -> staged -> curated, by uri, run id, event id; renamed copies link."""

from __future__ import annotations

import json

import pytest

from tasks.lineage import artifact_entry, lineage

from .conftest import Chain, write

LANDED = "data/landing/objects/ab/ab01"
STAGED = "data/staged/labs"
CURATED = "data/curated/labs.parquet"


def uris(nodes: list[str]) -> set[str]:
    return {n.removeprefix("artifact:").split("@")[0] for n in nodes if n.startswith("artifact:")}


def events(nodes: list[str]) -> set[str]:
    return {n.removeprefix("event:") for n in nodes if n.startswith("event:")}


def test_by_uri_in_the_middle(chain: Chain):
    result = lineage(chain.ledger, STAGED)
    assert result["matched"] == "uri" and uris(result["roots"]) == {STAGED}
    assert uris(result["upstream"]) == {LANDED}
    assert events(result["upstream"]) == {chain.staged.event_id, chain.landing.event_id}
    assert uris(result["downstream"]) == {CURATED} and events(result["downstream"]) == {chain.curated.event_id}
    json.dumps(result)
    lines = result["text"].splitlines()
    assert lines[0].startswith(f"lineage of {STAGED}")
    assert any(line.strip().startswith("<- [staged]") for line in lines)
    assert any(line.strip().startswith("-> [curated]") for line in lines)
    depth = {line.strip()[:12]: len(line) - len(line.lstrip()) for line in lines}
    assert depth["<- [landing]"] > depth["<- [staged] "]  # an indented tree, not a flat list


def test_by_run_id_of_the_last_stage(chain: Chain):
    result = lineage(chain.ledger, "run-curate")
    assert result["matched"] == "run" and events(result["roots"]) == {chain.curated.event_id}
    assert events(result["upstream"]) == {chain.staged.event_id, chain.landing.event_id}
    assert uris(result["upstream"]) == {LANDED, STAGED}
    assert uris(result["downstream"]) == {CURATED} and events(result["downstream"]) == set()


def test_by_event_id_and_prefix_of_the_first_stage(chain: Chain):
    for query in (chain.landing.event_id, chain.landing.event_id[:10]):
        result = lineage(chain.ledger, query)
        assert result["matched"] == "event" and result["upstream"] == []
        assert events(result["downstream"]) == {chain.staged.event_id, chain.curated.event_id}
        assert uris(result["downstream"]) == {LANDED, STAGED, CURATED}
    kinds = {e["kind"] for e in result["edges"]}
    assert kinds == {"input", "output"}


def test_absolute_path_folder_prefix_and_sha(chain: Chain):
    assert lineage(chain.ledger, str(chain.root / CURATED), root=chain.root)["matched"] == "uri"
    assert uris(lineage(chain.ledger, "data/staged/")["roots"]) == {STAGED}  # a folder of datasets
    sha = chain.curated.outputs[0]["sha256"]
    assert lineage(chain.ledger, sha)["matched"] == "sha256"
    with pytest.raises(LookupError, match="nothing in the lineage ledger"):
        lineage(chain.ledger, "data/nowhere")


def test_renamed_copy_links_by_content(chain: Chain):
    copy = write(chain.root / "exports/labs-copy.parquet", (chain.root / CURATED).read_bytes())
    report = chain.ledger.append("report", "run-report", inputs=[artifact_entry(copy, chain.root)])
    result = lineage(chain.ledger, LANDED)
    assert report.event_id in events(result["downstream"])
    edges = {(e["source"], e["target"]): e["kind"] for e in result["edges"]}
    sha = chain.curated.outputs[0]["sha256"]
    assert edges[(f"artifact:{CURATED}@{sha}", f"artifact:exports/labs-copy.parquet@{sha}")] == "same_content"
    assert "(same content)" in lineage(chain.ledger, "run-report")["text"]


def test_part_of_a_folder_links_to_the_folder(chain: Chain):
    part = chain.root / STAGED / "part-0.parquet"
    reader = chain.ledger.append("qc", "run-qc", inputs=[artifact_entry(part, chain.root)])
    upstream = lineage(chain.ledger, "run-qc")["upstream"]
    assert chain.landing.event_id in events(upstream) and STAGED in uris(upstream)
    assert reader.event_id not in events(lineage(chain.ledger, CURATED)["upstream"])  # a sibling, not an ancestor


def test_rewritten_path_links_only_to_its_last_writer(chain: Chain):
    target = chain.root / CURATED
    target.write_bytes(b"second version")
    second = chain.ledger.append("curated", "run-curate-2", outputs=[artifact_entry(target, chain.root)])
    model = chain.ledger.append("pretrain", "run-train", inputs=[artifact_entry(target, chain.root)])
    upstream = events(lineage(chain.ledger, "run-train")["upstream"])
    assert upstream == {second.event_id} and model.event_id not in upstream
