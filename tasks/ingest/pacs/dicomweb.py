"""DICOMweb client: find studies (QIDO-RS), fetch them (WADO-RS), upload for tests and demos (STOW-RS).

Why DICOMweb first: it is plain HTTPS, so the same code talks to any DICOMweb PACS; uploads go through STOW-RS
(`POST {base}/studies`), the standard, rather than Orthanc's own `POST /instances`, which would tie tests and demos to
Orthanc. Every call is single-shot (see the package docstring for why retries belong to Prefect).

PHI: a `StudyRef` keeps the Study Instance UID (needed to fetch) and two counts, nothing about the patient; errors
name the URL path (UIDs masked) and status, never the query string (filters may hold a PatientID) nor a response
body (a PACS error page may echo patient data). httpx itself logs every request's full URL, query included, on the
`httpx` logger at INFO: keep that logger at WARNING (the default under Prefect) wherever QIDO filters hold
identifiers.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from tasks.ingest.pacs.errors import _UID_SEGMENT, PacsError, _check_uid, _is_uid
from tasks.ingest.pacs.multipart import _write_parts, iter_multipart, multipart_boundary

log = logging.getLogger(__name__)

Auth = tuple[str, str] | httpx.Auth | None
DICOM_JSON = "application/dicom+json"
STUDY_UID, MODALITIES, N_INSTANCES = "0020000D", "00080061", "00201208"  # DICOM JSON keys (PS3.18 F.2)
REFERENCED_SOPS, FAILED_SOPS, REFERENCED_SOP_UID = "00081199", "00081198", "00081155"


def display_url(url: str) -> str:
    """A PACS base URL as messages may show it: scheme, host, port and path; never a user, password or query."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError):
        return "(unparseable PACS URL)"
    port = f":{parsed.port}" if parsed.port else ""
    return f"{parsed.scheme}://{parsed.host}{port}{_UID_SEGMENT.sub('/{uid}', parsed.path)}"


@dataclass(frozen=True)
class StudyRef:
    """What ingest needs to decide and to fetch. Deliberately no patient fields: QIDO answers carry PatientName,
    PatientID and birth date, and they are dropped here, before anything could keep or log them."""

    study_instance_uid: str
    modalities: tuple[str, ...] = ()
    n_instances: int | None = None


def find_studies(
    base_url: str,
    *,
    auth: Auth = None,
    filters: Mapping[str, str] | None = None,
    timeout: float = 30.0,
    page_size: int | None = None,
) -> list[StudyRef]:
    """QIDO-RS `GET {base}/studies`. `filters` are QIDO query keys (`{"StudyDate": "20240101-20240131",
    "ModalitiesInStudy": "CT"}`). `page_size` pages with limit/offset, for PACSs that cap a single answer."""
    url = f"{base_url.rstrip('/')}/studies"
    params = {**(filters or {}), "includefield": f"{MODALITIES},{N_INSTANCES}"}
    refs: dict[str, StudyRef] = {}
    offset = 0
    with _client(auth, timeout) as client:
        while True:
            page = _qido_page(client, url, params, offset=offset, limit=page_size)
            before, offset = len(refs), offset + len(page)
            refs.update((ref.study_instance_uid, ref) for ref in page)
            # stop on a short page, or when the PACS ignored offset and sent nothing new
            if page_size is None or len(page) < page_size or len(refs) == before:
                break
    log.info("QIDO-RS found %d studies", len(refs))
    return list(refs.values())


def retrieve_study(
    base_url: str,
    study_uid: str,
    dest_dir: Path,
    *,
    auth: Auth = None,
    timeout: float = 60.0,
    transfer_syntax: str | None = "*",
) -> list[Path]:
    """WADO-RS `GET {base}/studies/{uid}`: every instance of the study, streamed part by part to `<sha256>.dcm` files
    in `dest_dir`. `transfer_syntax="*"` asks for the bytes as stored (no transcoding by the PACS); None leaves the
    choice to the server (the standard's default is Explicit VR Little Endian)."""
    _check_uid(study_uid)
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    url = f"{base_url.rstrip('/')}/studies/{study_uid}"
    accept = 'multipart/related; type="application/dicom"'
    if transfer_syntax:
        accept += f"; transfer-syntax={transfer_syntax}"
    with (
        _client(auth, timeout) as client,
        _transport_errors(url),
        client.stream("GET", url, headers={"Accept": accept}) as resp,
    ):
        _raise_for_status(resp)
        boundary = multipart_boundary(resp.headers.get("content-type", ""), path=resp.url.path)
        paths = _write_parts(iter_multipart(resp.iter_bytes(), boundary), dest_dir, path=resp.url.path)
    log.info("WADO-RS retrieved %d instances", len(paths))
    return paths


def stow_instances(base_url: str, paths: Sequence[Path], *, auth: Auth = None, timeout: float = 60.0) -> list[str]:
    """STOW-RS `POST {base}/studies` of DICOM Part 10 files in one request (tests and demos: it reads them all into
    memory). Returns the SOP Instance UIDs the PACS stored; raises if it refused any."""
    if not paths:
        return []
    url = f"{base_url.rstrip('/')}/studies"
    boundary = f"mmfm-{uuid.uuid4().hex}"
    head, tail = f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode(), f"--{boundary}--\r\n".encode()
    body = b"".join(head + Path(p).read_bytes() + b"\r\n" for p in paths) + tail
    content_type = f'multipart/related; type="application/dicom"; boundary={boundary}'
    with _client(auth, timeout) as client, _transport_errors(url):
        resp = client.post(url, content=body, headers={"Content-Type": content_type, "Accept": DICOM_JSON})
    _raise_for_status(resp)
    answer = _json(resp)
    failed = _values(answer, FAILED_SOPS)
    if failed:
        refused = f"STOW-RS refused {len(failed)} of {len(paths)} instances"
        raise PacsError(refused, path=resp.url.path, status=resp.status_code)
    return [uid for item in _values(answer, REFERENCED_SOPS) for uid in _values(item, REFERENCED_SOP_UID)]


def _client(auth: Auth, timeout: float) -> httpx.Client:
    # trust_env=False: no proxy or .netrc picked up from the environment, so PHI goes only where base_url says;
    # no redirects: a 3xx is reported, not followed somewhere else with our credentials.
    return httpx.Client(auth=auth, timeout=timeout, trust_env=False, follow_redirects=False)


@contextmanager
def _transport_errors(url: str) -> Iterator[None]:
    """Turn httpx's transport errors into PacsError, keeping only the error type and the URL path."""
    path = httpx.URL(url).path
    try:
        yield
    except httpx.TimeoutException as exc:
        raise PacsError(f"no answer in time ({type(exc).__name__})", path=path, retryable=True) from None
    except httpx.UnsupportedProtocol as exc:
        raise PacsError(f"bad PACS URL ({type(exc).__name__})", path=path) from None
    except httpx.TransportError as exc:  # refused, reset, DNS, broken HTTP: worth another try later
        detail = f": {exc}" if isinstance(exc, httpx.ConnectError) else ""  # an OS message, e.g. Connection refused
        raise PacsError(f"connection failed ({type(exc).__name__}{detail})", path=path, retryable=True) from None
    except httpx.HTTPError as exc:  # e.g. a body that does not decode: report the kind, not the content
        raise PacsError(f"bad HTTP answer ({type(exc).__name__})", path=path) from None


def _raise_for_status(resp: httpx.Response) -> None:
    """Status and reason phrase only: the body of an error page may echo patient data."""
    if not resp.is_success:
        status = resp.status_code
        raise PacsError(f"{resp.request.method} answered {resp.reason_phrase or 'error'}", path=resp.url.path,
                        status=status, retryable=status == 429 or status >= 500)


def _json(resp: httpx.Response) -> object:
    if resp.status_code == 204 or not resp.content:
        return []
    try:
        return resp.json()
    except ValueError:
        raise PacsError("answer is not JSON", path=resp.url.path, status=resp.status_code) from None


def _qido_page(client: httpx.Client, url: str, params: dict, *, offset: int, limit: int | None) -> list[StudyRef]:
    query = {**params, "limit": limit, "offset": offset} if limit else params
    with _transport_errors(url):
        resp = client.get(url, params=query, headers={"Accept": DICOM_JSON})
    _raise_for_status(resp)
    items = _json(resp)
    if not isinstance(items, list):
        raise PacsError("QIDO-RS answer is not a list", path=resp.url.path, status=resp.status_code)
    return [_study_ref(item, resp.url.path) for item in items]


def _study_ref(item: object, path: str) -> StudyRef:
    """Keep three attributes of a QIDO result and drop the rest (patient name, ID, birth date...)."""
    uids = _values(item, STUDY_UID)
    if len(uids) != 1 or not _is_uid(uids[0]):
        raise PacsError("QIDO-RS result without a valid StudyInstanceUID", path=path)
    count = _values(item, N_INSTANCES)
    try:
        n_instances = int(count[0]) if count else None
    except (TypeError, ValueError):
        n_instances = None
    return StudyRef(uids[0], tuple(str(m) for m in _values(item, MODALITIES)), n_instances)


def _values(item: object, tag: str) -> list:
    element = item.get(tag) if isinstance(item, dict) else None
    values = element.get("Value", []) if isinstance(element, dict) else []
    return values if isinstance(values, list) else []

