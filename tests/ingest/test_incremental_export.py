"""Incremental bulk exports (issue 17 item 5): an export whose Patient.ndjson is unchanged (so not ingested again) or
absent resolves its resources' patients through the workspace's patient links, with the pseudonym and date offset
of their first ingest; the links hold neither FHIR ids nor MRNs, and exist only once an extract is published."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta
from pathlib import Path

from tasks.deid import Pseudonymizer
from tasks.ingest.fhir import ingest_fhir
from tasks.ingest.landing import land
from tasks.ingest.publish import new_part, publish
from tasks.ingest.state import IngestState
from tasks.workspace import Workspace

SITE = "site-a"
KEYS = Pseudonymizer(b"k" * 32)
MR = {"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]}}
IDS = {"fhir-patient-alpha": "MRN-ALPHA-0001", "fhir-patient-beta": "MRN-BETA-0002"}


def patient(pid: str) -> dict:
    return {"resourceType": "Patient", "id": pid, "identifier": [{**MR, "value": IDS[pid]}], "gender": "male",
            "birthDate": "1960-05-05"}


def encounter(eid: str, pid: str) -> dict:
    return {"resourceType": "Encounter", "id": eid, "status": "finished", "subject": {"reference": f"Patient/{pid}"},
            "class": {"code": "AMB"}, "period": {"start": "2021-03-04T08:00:00Z"}}


def condition(cid: str, pid: str) -> dict:
    return {"resourceType": "Condition", "id": cid, "subject": {"reference": f"Patient/{pid}"},
            "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "J18.9"}]}}


def export(folder: Path, files: dict[str, list[dict]], deleted: list[str] = ()) -> Path:
    folder.mkdir(parents=True)
    for name, lines in files.items():
        (folder / name).write_text("".join(json.dumps(x) + "\n" for x in lines))
    if deleted:
        bundle = {"resourceType": "Bundle", "type": "transaction",
                  "entry": [{"request": {"method": "DELETE", "url": url}} for url in deleted]}
        (folder / "deleted.ndjson").write_text(json.dumps(bundle) + "\n")
        manifest = {"transactionTime": "2024-01-01T00:00:00Z", "deleted": [{"url": "deleted.ndjson"}],
                    "output": [{"type": n.split(".")[0], "url": n, "count": len(x)} for n, x in files.items()]}
        (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def ingest_and_publish(ws: Workspace, src: Path, run: str, publish_it: bool = True):
    part, skipped = new_part(land(src, ws.landing, "fhir", SITE), IngestState(ws.state), always=("manifest.json",))
    result = ingest_fhir(part, ws.landing, KEYS, SITE)
    if publish_it:
        publish(ws, part, result, skipped, this_run=run)
    return part, result


def test_incremental_exports_resolve_patients_of_earlier_ingests(tmp_path):
    ws = Workspace(tmp_path / "ws")
    IngestState(ws.state)
    patients = [patient("fhir-patient-alpha"), patient("fhir-patient-beta")]
    alpha, beta = (KEYS.patient(SITE, IDS[p]) for p in IDS)
    _, first = ingest_and_publish(ws, export(tmp_path / "e1", {"Patient.ndjson": patients}), "run-1")
    assert {r["patient_id"] for r in first.rows["patients"]} == {alpha, beta}

    # Patient.ndjson unchanged: landing keeps it, the ingest state skips it, so the part holds no Patient at all
    part, second = ingest_and_publish(ws, export(tmp_path / "e2", {
        "Patient.ndjson": patients, "Encounter.ndjson": [encounter("enc-1", "fhir-patient-alpha")],
        "Condition.ndjson": [condition("cond-1", "fhir-patient-beta"), condition("cond-2", "fhir-patient-gamma")]}),
        "run-2")
    assert [f.rel_path for f in part.files] == ["Condition.ndjson", "Encounter.ndjson"]
    assert [(r.rule, r.location) for r in second.rejections] == [("ref.patient", "line 2")]  # gamma: nobody
    (enc,) = second.rows["encounters"]
    (cond,) = second.rows["conditions"]
    assert (enc["patient_id"], cond["patient_id"]) == (alpha, beta)  # the first ingest's pseudonyms
    shifted = datetime.fromisoformat(enc["start"].replace("Z", "+00:00")).date()
    assert shifted == date(2021, 3, 4) + timedelta(days=KEYS.date_offset_days(alpha))  # and its date offset

    # no Patient.ndjson at all, and an earlier patient withdrawn by the export's deleted list
    _, third = ingest_and_publish(ws, export(tmp_path / "e3", {"Condition.ndjson": [condition("cond-3", "fhir-patient-"
                                                                                           "alpha")]},
                                            deleted=["Patient/fhir-patient-beta"]), "run-3")
    assert not third.rejections and third.rows["conditions"][0]["patient_id"] == alpha
    assert third.rows["deletions"] == [{"resource_type": "Patient", "site": SITE, "resource_id": beta}]

    state = (ws.state / "ingest.db").read_bytes() + json.dumps(IngestState(ws.state).patient_links(SITE)).encode()
    for secret in (*IDS, *IDS.values()):
        assert secret.encode() not in state  # keyed ids and pseudonyms only
    assert set(IngestState(ws.state).patient_links(SITE).values()) == {alpha, beta}
    assert IngestState(ws.state).patient_links("site-b") == {}  # per site: another site's ids mean other people


def test_links_exist_only_once_the_extract_is_published(tmp_path):
    """A run killed between ingest and publish leaves no link to a patient that was never published."""
    ws = Workspace(tmp_path / "ws")
    IngestState(ws.state)
    ingest_and_publish(ws, export(tmp_path / "e1", {"Patient.ndjson": [patient("fhir-patient-alpha")]}), "run-1",
                       publish_it=False)
    assert IngestState(ws.state).patient_links(SITE) == {}
    _, later = ingest_and_publish(ws, export(tmp_path / "e2", {"Condition.ndjson": [condition("c1",
                                                                                             "fhir-patient-alpha")]}),
                                  "run-2")
    assert [r.rule for r in later.rejections] == ["ref.patient"]
