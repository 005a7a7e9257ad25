"""The PACS client against a real Orthanc on loopback: STOW-RS up, QIDO-RS/C-FIND to find, WADO-RS/C-GET back.

Data: pydicom's bundled CT_small and MR_small (one study each) and a three-instance CT series built from CT_small
(new study, series and SOP UIDs, distinct pixels), so "exactly the uploaded instances" is checked on more than one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from tasks.ingest.pacs import (
    PacsError,
    StudyRef,
    dimse_find_studies,
    dimse_get_study,
    find_studies,
    is_retryable,
    retrieve_study,
    stow_instances,
)
from tests.pacs.orthanc import OrthancServer

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


@dataclasses.dataclass(frozen=True)
class Uploaded:
    """What went up: study UID -> {SOP Instance UID: file}."""

    studies: dict[str, dict[str, Path]]
    series_study: str  # the three-instance study

    def pixels(self, study: str) -> dict[str, np.ndarray]:
        return {sop: pydicom.dcmread(path).pixel_array for sop, path in self.studies[study].items()}


def _series_from_ct(folder: Path, n: int = 3) -> list[Path]:
    """n CT instances in one new study and series, each with its own SOP UID and different pixels."""
    study, series = generate_uid(), generate_uid()
    paths = []
    for i in range(n):
        ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.InstanceNumber = study, series, i + 1
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.PixelData = (ds.pixel_array + i).astype(ds.pixel_array.dtype).tobytes()
        paths.append(folder / f"series-{i}.dcm")
        ds.save_as(paths[-1], enforce_file_format=True)
    return paths


@pytest.fixture(scope="session")
def uploaded(orthanc: OrthancServer, tmp_path_factory: pytest.TempPathFactory) -> Uploaded:
    folder = tmp_path_factory.mktemp("upload")
    paths = [Path(shutil.copy(get_testdata_file(name), folder / name)) for name in ("CT_small.dcm", "MR_small.dcm")]
    paths += _series_from_ct(folder)
    stored = stow_instances(orthanc.dicomweb_url, paths, auth=orthanc.auth)
    studies: dict[str, dict[str, Path]] = {}
    for path in paths:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        studies.setdefault(ds.StudyInstanceUID, {})[ds.SOPInstanceUID] = path
    assert sorted(stored) == sorted(sop for study in studies.values() for sop in study)
    series_study = pydicom.dcmread(paths[-1], stop_before_pixels=True).StudyInstanceUID
    return Uploaded(studies, series_study)


def _received(paths: list[Path]) -> dict[str, np.ndarray]:
    return {pydicom.dcmread(p).SOPInstanceUID: pydicom.dcmread(p).pixel_array for p in paths}


def _assert_exactly(paths: list[Path], uploaded: Uploaded, study: str) -> None:
    received, sent = _received(paths), uploaded.pixels(study)
    assert sorted(received) == sorted(sent)
    for sop, pixels in sent.items():
        np.testing.assert_array_equal(received[sop], pixels)
    for path in paths:  # content-addressed names, nothing half-written left beside them
        assert path.name == hashlib.sha256(path.read_bytes()).hexdigest() + ".dcm"
    assert not list(paths[0].parent.glob(".*.part"))


def test_find_studies_sees_uploaded_studies_and_keeps_no_patient_fields(orthanc, uploaded):
    refs = {ref.study_instance_uid: ref for ref in find_studies(orthanc.dicomweb_url, auth=orthanc.auth)}
    assert set(uploaded.studies) <= set(refs)
    assert refs[uploaded.series_study] == StudyRef(uploaded.series_study, ("CT",), 3)
    assert {f.name for f in dataclasses.fields(StudyRef)} == {"study_instance_uid", "modalities", "n_instances"}


def test_find_studies_filters_and_pages(orthanc, uploaded):
    mr = find_studies(orthanc.dicomweb_url, auth=orthanc.auth, filters={"ModalitiesInStudy": "MR"})
    assert [ref.modalities for ref in mr] == [("MR",)]
    paged = find_studies(orthanc.dicomweb_url, auth=orthanc.auth, page_size=1)
    assert {ref.study_instance_uid for ref in paged} == set(uploaded.studies)


@pytest.mark.parametrize("transfer_syntax", ["*", None])
def test_retrieve_study_returns_exactly_the_uploaded_instances(orthanc, uploaded, tmp_path, transfer_syntax):
    for study in uploaded.studies:
        dest = tmp_path / study
        paths = retrieve_study(orthanc.dicomweb_url, study, dest, auth=orthanc.auth, transfer_syntax=transfer_syntax)
        _assert_exactly(paths, uploaded, study)
        again = retrieve_study(orthanc.dicomweb_url, study, dest, auth=orthanc.auth, transfer_syntax=transfer_syntax)
        assert again == paths and len(list(dest.iterdir())) == len(paths)  # idempotent: same names, no duplicates


def test_known_studies_are_not_fetched_again(orthanc, uploaded, tmp_path, monkeypatch):
    landed: set[str] = set()

    def ingest() -> int:
        found = find_studies(orthanc.dicomweb_url, auth=orthanc.auth)
        todo = [ref for ref in found if ref.study_instance_uid not in landed]
        for ref in todo:
            retrieve_study(orthanc.dicomweb_url, ref.study_instance_uid, tmp_path / "landing", auth=orthanc.auth)
            landed.add(ref.study_instance_uid)
        return len(todo)

    assert ingest() == len(uploaded.studies)
    assert ingest() == 0


def test_stow_of_a_non_dicom_file_is_refused(orthanc, tmp_path):
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"\0" * 128 + b"DICM" + b"not a data set" * 8)
    with pytest.raises(PacsError) as err:
        stow_instances(orthanc.dicomweb_url, [junk], auth=orthanc.auth)
    assert err.value.status == 400 and not err.value.retryable


def test_wrong_credentials_raise_401_without_body(orthanc, uploaded):
    with pytest.raises(PacsError) as err:
        find_studies(orthanc.dicomweb_url, auth=(orthanc.user, "wrong"), filters={"PatientID": "4MR1"})
    assert err.value.status == 401 and not err.value.retryable
    assert "/dicom-web/studies" in str(err.value) and "4MR1" not in str(err.value)  # path, never the query


def test_error_message_never_carries_the_response_body(orthanc, uploaded, tmp_path):
    with pytest.raises(PacsError) as err:  # Orthanc's 404 body is JSON describing the missing study
        retrieve_study(orthanc.dicomweb_url, "1.2.3.4", tmp_path, auth=orthanc.auth)
    assert err.value.status == 404 and "inexistent" not in str(err.value).lower()
    assert list(tmp_path.iterdir()) == []


def test_stopped_server_fails_fast_and_retryable(orthanc_factory):
    server = orthanc_factory()
    assert find_studies(server.dicomweb_url, auth=server.auth) == []
    server.stop()
    started = time.monotonic()
    with pytest.raises(PacsError) as err:
        find_studies(server.dicomweb_url, auth=server.auth, timeout=2.0)
    assert time.monotonic() - started < 2.0  # single-shot: retries belong to the Prefect task
    assert err.value.status is None and is_retryable(err.value)


def test_silent_server_times_out_in_bounded_time(tmp_path):
    with socket.socket() as listener:  # accepts connections (backlog) but never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        started = time.monotonic()
        with pytest.raises(PacsError) as err:
            retrieve_study(f"http://127.0.0.1:{listener.getsockname()[1]}", "1.2.3", tmp_path, timeout=0.5)
    assert time.monotonic() - started < 3.0 and is_retryable(err.value)


@pytest.fixture
def http_status_server() -> Iterator[str]:
    """A loopback HTTP server answering every request with the status in its path and a body full of 'PHI'."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            status = int(self.path.strip("/").split("/")[0])
            self.send_response(status)
            self.send_header("Content-Length", "29")
            self.end_headers()
            self.wfile.write(b"PatientName=Doe^Jane 19700101")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(("status", "retryable"), [(503, True), (500, True), (429, True), (403, False), (302, False)])
def test_http_errors_say_whether_to_retry(http_status_server, status, retryable):
    with pytest.raises(PacsError) as err:
        find_studies(f"{http_status_server}/{status}")
    assert (err.value.status, err.value.retryable) == (status, retryable)
    assert "Doe" not in str(err.value) and "1970" not in str(err.value)


def test_dimse_find_and_get_round_trip(orthanc, uploaded, tmp_path):
    found = dimse_find_studies("127.0.0.1", orthanc.dicom_port, orthanc.aet)
    assert set(uploaded.studies) <= set(found)
    mr = find_studies(orthanc.dicomweb_url, auth=orthanc.auth, filters={"ModalitiesInStudy": "MR"})
    by_filter = dimse_find_studies("localhost", orthanc.dicom_port, orthanc.aet, filters={"ModalitiesInStudy": "MR"})
    assert by_filter == [ref.study_instance_uid for ref in mr] and len(by_filter) == 1
    for study in uploaded.studies:
        paths = dimse_get_study("127.0.0.1", orthanc.dicom_port, orthanc.aet, study, tmp_path / study)
        _assert_exactly(paths, uploaded, study)


def test_dimse_failures_are_pacs_errors(orthanc, tmp_path):
    with pytest.raises(PacsError) as err:  # nothing listens there
        dimse_find_studies("127.0.0.1", _closed_port(), orthanc.aet, timeout=2.0)
    assert err.value.retryable
    with pytest.raises(PacsError, match="C-GET") as err:  # Orthanc answers 0xC000 for a study it does not hold
        dimse_get_study("127.0.0.1", orthanc.dicom_port, orthanc.aet, "1.2.3.4", tmp_path)
    assert err.value.status is not None and not err.value.retryable
    assert list(tmp_path.iterdir()) == []


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
