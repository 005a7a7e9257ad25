"""OpenLineage RunEvents from ledger events: shape, NDJSON export, and a POST to a loopback test server."""

from __future__ import annotations

import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from tasks.lineage.openlineage import SCHEMA_URL, export_openlineage, send_openlineage, to_openlineage

from .conftest import Chain


def test_run_event_shape(chain: Chain):
    ev = to_openlineage(chain.staged)
    assert ev["eventType"] == "COMPLETE" and ev["eventTime"] == chain.staged.time
    assert ev["schemaURL"] == SCHEMA_URL and SCHEMA_URL.startswith("https://openlineage.io/spec/2-0-2/OpenLineage.json")
    assert ev["producer"].startswith("https://")
    assert uuid.UUID(ev["run"]["runId"])
    assert ev["run"]["runId"] == to_openlineage(chain.staged)["run"]["runId"]  # stable across exports
    assert ev["run"]["runId"] != to_openlineage(chain.curated)["run"]["runId"]
    assert ev["job"]["namespace"] == "mmfm" and ev["job"]["name"] == "staged"
    [source], [target] = ev["inputs"], ev["outputs"]
    assert (source["namespace"], source["name"]) == ("mmfm", "data/landing/objects/ab/ab01")
    assert target["name"] == "data/staged/labs"
    sha = chain.staged.outputs[0]["sha256"]
    assert target["facets"]["mmfm_sha256"]["sha256"] == sha
    assert target["facets"]["version"]["datasetVersion"] == sha
    ledger_facet = ev["run"]["facets"]["mmfm_ledger"]
    assert (ledger_facet["eventId"], ledger_facet["hash"], ledger_facet["runId"]) == (
        chain.staged.event_id, chain.staged.hash, "run-stage")
    for facet in [*ev["run"]["facets"].values(), *ev["job"]["facets"].values(), *target["facets"].values()]:
        assert facet["_producer"] and facet["_schemaURL"].startswith("https://")
    assert to_openlineage(chain.staged, namespace="site-a")["job"]["namespace"] == "site-a"


def test_export_writes_one_event_per_line(chain: Chain, tmp_path: Path):
    out = tmp_path / "export" / "lineage.ndjson"
    assert export_openlineage(chain.ledger, out) == 3
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [e["job"]["name"] for e in lines] == ["landing", "staged", "curated"]


class _Receiver(BaseHTTPRequestHandler):
    received: list[tuple[str, dict]] = []
    status = 201

    def do_POST(self):  # noqa: N802 (http.server's naming)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append((self.path, json.loads(body)))
        self.send_response(type(self).status)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture()
def receiver(monkeypatch):
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    handler = type("Receiver", (_Receiver,), {"received": [], "status": 201})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield handler, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_send_posts_to_the_lineage_endpoint(chain: Chain, receiver):
    handler, url = receiver
    assert send_openlineage(chain.ledger.events(), url + "/") == 3
    assert [path for path, _ in handler.received] == ["/api/v1/lineage"] * 3
    assert [body["job"]["name"] for _, body in handler.received] == ["landing", "staged", "curated"]
    assert handler.received[1][1] == to_openlineage(chain.staged)


def test_send_raises_when_refused(chain: Chain, receiver):
    handler, url = receiver
    handler.status = 500
    with pytest.raises(httpx.HTTPStatusError):
        send_openlineage([to_openlineage(chain.landing)], url)
