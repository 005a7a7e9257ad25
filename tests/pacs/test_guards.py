"""Client guards that need no PACS: the streamed multipart parser, UID and loopback checks, retry classification."""

from __future__ import annotations

import socket
from pathlib import Path

import pynetdicom
import pytest
from pydicom.data import get_testdata_file

from tasks.ingest.pacs import (
    PacsError,
    dimse_find_studies,
    dimse_get_study,
    is_retryable,
    iter_multipart,
    loopback_address,
    multipart_boundary,
    retrieve_study,
)
from tasks.ingest.pacs.multipart import _write_parts as write_parts

CT = Path(get_testdata_file("CT_small.dcm")).read_bytes()
MR = Path(get_testdata_file("MR_small.dcm")).read_bytes()
BOUNDARY = "b0undary-42"


def _body(*parts: bytes, preamble: bytes = b"", epilogue: bytes = b"\r\n") -> bytes:
    sections = [b"--" + BOUNDARY.encode() + b"\r\nContent-Type: application/dicom\r\n\r\n" + p + b"\r\n" for p in parts]
    return preamble + b"".join(sections) + b"--" + BOUNDARY.encode() + b"--" + epilogue


def _chunks(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def _parts(events) -> list[bytes]:
    parts, current = [], None
    for event in events:
        if isinstance(event, dict):
            current = []
        elif event is None:
            parts.append(b"".join(current))
        else:
            current.append(event)
    return parts


@pytest.mark.parametrize(
    "content_type",
    [
        f'multipart/related; type="application/dicom"; boundary={BOUNDARY}',
        f'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.1; boundary="{BOUNDARY}"',
        f"Multipart/Related;boundary={BOUNDARY};type=application/dicom;transfer-syntax=*",
    ],
)
def test_boundary_whatever_the_other_parameters(content_type):
    assert multipart_boundary(content_type) == BOUNDARY


@pytest.mark.parametrize("content_type", ["application/dicom", "multipart/related; type=application/dicom", ""])
def test_no_boundary_is_an_error(content_type):
    with pytest.raises(PacsError):
        multipart_boundary(content_type)


@pytest.mark.parametrize("size", [1, 2, 7, 13, 64, 4096, 1 << 20])
@pytest.mark.parametrize("preamble", [b"", b"a preamble\r\n"])
def test_parts_survive_any_chunking(size, preamble):
    body = _body(CT, MR, preamble=preamble, epilogue=b"\r\nepilogue")
    assert _parts(iter_multipart(_chunks(body, size), BOUNDARY)) == [CT, MR]


def test_headers_are_read_and_empty_answers_yield_nothing():
    events = list(iter_multipart([_body(b"x")], BOUNDARY))
    assert events[0] == {"content-type": "application/dicom"}
    assert list(iter_multipart([b"--" + BOUNDARY.encode() + b"--\r\n"], BOUNDARY)) == []


@pytest.mark.parametrize("cut", [5, 200, len(_body(CT)) - 10])
def test_truncated_answer_raises_and_leaves_no_files(tmp_path, cut):
    with pytest.raises(PacsError, match="ended"):
        write_parts(iter_multipart(_chunks(_body(CT)[:cut], 64), BOUNDARY), tmp_path, path="/x")
    assert list(tmp_path.iterdir()) == []


def test_non_dicom_parts_are_refused(tmp_path):
    with pytest.raises(PacsError, match="not a DICOM"):
        write_parts(iter_multipart([_body(b"<html>PatientName</html>")], BOUNDARY), tmp_path, path="/x")
    other_type = _body(CT).replace(b"application/dicom", b"application/json")
    with pytest.raises(PacsError, match="application/json"):
        write_parts(iter_multipart([other_type], BOUNDARY), tmp_path, path="/x")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("uid", ["../../system", "1.2.3?x=1", "1.2.3/instances", "1." + "2" * 70, ""])
def test_study_uid_must_be_a_uid(tmp_path, uid):
    with pytest.raises(ValueError):
        retrieve_study("http://127.0.0.1:9", uid, tmp_path)


@pytest.fixture
def no_network(monkeypatch):
    """Any connection attempt fails the test (raised as AssertionError, so it cannot pass for a PacsError)."""

    def refuse(*args, **kwargs):
        raise AssertionError("a connection was attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(pynetdicom.AE, "associate", refuse)


@pytest.mark.parametrize("host", ["192.0.2.10", "pacs.example.org", "0.0.0.0", "::ffff:192.0.2.10", "127.0.0.1.nip.io"])
def test_non_loopback_dimse_host_refused_before_connecting(no_network, tmp_path, host):
    with pytest.raises(PacsError, match="non-loopback") as err:
        dimse_find_studies(host, 104, "PACS")
    assert not err.value.retryable
    with pytest.raises(PacsError, match="non-loopback"):
        dimse_get_study(host, 104, "PACS", "1.2.3", tmp_path)


@pytest.mark.parametrize(("host", "address"), [("localhost", "127.0.0.1"), ("127.0.0.1", "127.0.0.1"), ("::1", "::1")])
def test_loopback_hosts_accepted(host, address):
    assert loopback_address(host) == address
    assert loopback_address("192.0.2.10", allow_remote=True) == "192.0.2.10"


def test_retryable_only_for_pacs_errors():
    assert is_retryable(PacsError("x", retryable=True))
    assert not is_retryable(PacsError("x", status=401)) and not is_retryable(ValueError("x"))
