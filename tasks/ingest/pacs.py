"""PACS client for ingest: find studies (QIDO-RS, C-FIND), fetch them (WADO-RS, C-GET), upload for tests (STOW-RS).

Plain functions, no Prefect: the ingest flow wraps each call in a task, so this module stays testable on its own.

Retries: every call here is **single-shot**. Prefect's task retries (house style `retries=3,
retry_delay_seconds=[2, 5, 15]`; params.yaml `ingest.pacs.retry_delays` changes them) are the one retry mechanism:
a client that also retried inside would multiply attempts (3 x 3) and hide minutes of back-off inside one task run
where the UI cannot show them. Each failure raises
`PacsError` whose `retryable` says whether trying again can help (connection errors, timeouts, HTTP 5xx and 429, a
DIMSE association that never came up), so the flow retries only those::

    def transient_pacs_error(task, task_run, state) -> bool:
        return is_retryable(state.result(raise_on_failure=False))

    @task(retries=3, retry_delay_seconds=[2, 5, 15], retry_condition_fn=transient_pacs_error)
    def fetch(url: str, uid: str, dest: Path) -> list[Path]:
        return retrieve_study(url, uid, dest, auth=...)

Retrying is safe because files are content-addressed (`<sha256>.dcm`) and renamed into place only when complete: a
retried retrieval rewrites the same names and a failed one leaves no truncated `.dcm`.

PHI: a `StudyRef` keeps the Study Instance UID (needed to fetch) and two counts, nothing about the patient; file names
are hashes of content; `PacsError` names the URL path (UIDs masked) and status, never the query string (filters may
hold a PatientID) nor a response body (a PACS error page may echo patient data); logs carry counts only. Mind that httpx
itself logs every request's full URL, query included, on the `httpx` logger at INFO: keep that logger at WARNING (the
default under Prefect) wherever QIDO filters hold identifiers.
Writes: DICOMweb uploads go through STOW-RS (`POST {base}/studies`), the standard, so the same code talks to any
DICOMweb PACS (Orthanc's own `POST /instances` would tie tests and demos to Orthanc).
"""

from __future__ import annotations

import email.message
import hashlib
import ipaddress
import logging
import os
import re
import tempfile
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset
from pynetdicom import AE, build_role, evt, sop_class
from pynetdicom.association import Association

log = logging.getLogger(__name__)

Auth = tuple[str, str] | httpx.Auth | None
DICOM_JSON = "application/dicom+json"
STUDY_UID, MODALITIES, N_INSTANCES = "0020000D", "00080061", "00201208"  # DICOM JSON keys (PS3.18 F.2)
REFERENCED_SOPS, FAILED_SOPS, REFERENCED_SOP_UID = "00081199", "00081198", "00081155"
_UID = re.compile(r"[0-9]+(\.[0-9]+)*")
_MAX_HEADER_BYTES = 64 * 1024  # a part's headers or the preamble; bounds memory against a malformed answer


_UID_SEGMENT = re.compile(r"/[0-9]+(\.[0-9]+)+(?=/|$)")


class PacsError(RuntimeError):
    """A PACS call failed. `status` is the HTTP status (DICOMweb) or the DIMSE status (C-FIND/C-GET), None when no
    answer came; `retryable` says whether trying again later can help. UIDs in `path` read `{uid}`: a Study
    Instance UID identifies a patient's study (PS3.15 replaces it on de-identification), so it stays out of
    messages, and therefore out of Prefect's logs of failed and retried task runs."""

    def __init__(self, what: str, *, path: str = "", status: int | None = None, retryable: bool = False) -> None:
        path = _UID_SEGMENT.sub("/{uid}", path)
        self.path, self.status, self.retryable = path, status, retryable
        where = f" [{path}]" if path else ""
        code = f" (status {status})" if status is not None else ""
        super().__init__(f"{what}{where}{code}")


def is_retryable(exc: BaseException | object) -> bool:
    """Whether a task that failed with `exc` should go on to its retry policy (see the module docstring)."""
    return isinstance(exc, PacsError) and exc.retryable


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


def new_studies(found: Iterable[StudyRef], already: set[str]) -> list[StudyRef]:
    """The studies not ingested yet, in the PACS's order, each once: a study already landed is not fetched again."""
    seen = set(already)
    fresh = []
    for ref in found:
        if ref.study_instance_uid not in seen:
            seen.add(ref.study_instance_uid)
            fresh.append(ref)
    return fresh


# ---------------------------------------------------------------- DICOMweb


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


def _is_uid(value: object) -> bool:
    return isinstance(value, str) and len(value) <= 64 and _UID.fullmatch(value) is not None


def _check_uid(uid: str) -> None:
    """A UID goes into a URL path: refuse anything but digits and dots (no `../`, no query)."""
    if not _is_uid(uid):
        raise ValueError("not a DICOM UID (digits and dots, at most 64 characters)")


# ---------------------------------------------------------------- multipart/related, streamed


def multipart_boundary(content_type: str, *, path: str = "") -> str:
    """The boundary of a `multipart/related` Content-Type, whatever other parameters (type, transfer-syntax) it has
    and whether quoted or not."""
    header = email.message.Message()
    header["content-type"] = content_type
    boundary = header.get_param("boundary")
    if header.get_content_type() != "multipart/related" or not isinstance(boundary, str) or not boundary:
        raise PacsError("answer is not multipart/related with a boundary", path=path)
    return boundary


def iter_multipart(chunks: Iterable[bytes], boundary: str) -> Iterator[dict[str, str] | bytes | None]:
    """Parse a multipart body as it streams in (RFC 2046), in bounded memory: for each part, yield its headers (a
    dict, lower-case names), then its body as one or more `bytes`, then `None` at its end. Raises PacsError if the
    stream ends before the closing delimiter."""
    stream = _Stream(chunks)
    delim = b"\r\n--" + boundary.encode("ascii")
    stream.consume(stream.find(delim, _MAX_HEADER_BYTES) + len(delim))  # the preamble
    while True:
        stream.need(2)
        if stream.buf[:2] == b"--":  # the close delimiter; an epilogue after it is ignored
            return
        end = stream.find(b"\r\n\r\n", _MAX_HEADER_BYTES)  # starts at the delimiter line's own CRLF
        yield _parse_headers(bytes(stream.buf[:end]))
        stream.consume(end + 4)
        yield from _part_body(stream, delim)
        yield None


def _part_body(stream: _Stream, delim: bytes) -> Iterator[bytes]:
    """Yield data up to the next delimiter, holding back only a tail that could be the start of it."""
    while (idx := stream.buf.find(delim)) < 0:
        safe = len(stream.buf) - len(delim) + 1
        if safe > 0:
            yield bytes(stream.buf[:safe])
            stream.consume(safe)
        if not stream.more():
            raise PacsError("multipart answer ended inside a part (truncated transfer)")
    if idx:
        yield bytes(stream.buf[:idx])
    stream.consume(idx + len(delim))


def _parse_headers(block: bytes) -> dict[str, str]:
    lines = block.decode("latin-1").split("\r\n")
    pairs = (line.partition(":") for line in lines[1:])  # lines[0]: padding after the delimiter
    return {name.strip().lower(): value.strip() for name, sep, value in pairs if sep}


class _Stream:
    """A byte buffer refilled on demand from an iterator of chunks. It starts with CRLF so that a delimiter at the
    very start of the body looks like every other one."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self.buf = bytearray(b"\r\n")

    def more(self) -> bool:
        for chunk in self._chunks:
            if chunk:
                self.buf += chunk
                return True
        return False

    def need(self, n: int) -> None:
        while len(self.buf) < n:
            if not self.more():
                raise PacsError("multipart answer ended early (truncated transfer)")

    def find(self, needle: bytes, limit: int) -> int:
        start = 0
        while (idx := self.buf.find(needle, start)) < 0:
            if len(self.buf) > limit:
                raise PacsError("malformed multipart answer (delimiter or header end not found)")
            start = max(0, len(self.buf) - len(needle) + 1)
            self.need(len(self.buf) + 1)
        return idx

    def consume(self, n: int) -> None:
        del self.buf[:n]


def _write_parts(events: Iterable[dict[str, str] | bytes | None], dest_dir: Path, *, path: str) -> list[Path]:
    """Write each application/dicom part to a content-addressed file; a part of any other type is an error."""
    written: dict[Path, None] = {}  # ordered, and a part sent twice is one file
    current: _HashedFile | None = None
    try:
        for event in events:
            if isinstance(event, dict):
                part_type = event.get("content-type", "application/dicom").split(";")[0].strip().lower()
                if part_type != "application/dicom":
                    raise PacsError(f"WADO-RS part of type {part_type!r}, expected application/dicom", path=path)
                current = _HashedFile(dest_dir)
            elif event is None:
                written[current.commit()] = None
                current = None
            else:
                current.write(event)
    finally:
        if current is not None:
            current.discard()
    return list(written)


class _HashedFile:
    """A temp file in the destination folder, hashed while written, renamed to `<sha256>.dcm` once complete.
    Same folder, so the rename is atomic: a crash leaves a hidden `.part` file, never a truncated `.dcm`.
    mkstemp's 0600 mode suits files that hold PHI."""

    def __init__(self, folder: Path) -> None:
        fd, name = tempfile.mkstemp(dir=folder, prefix=".", suffix=".part")
        self._tmp, self._file, self._sha = Path(name), os.fdopen(fd, "wb"), hashlib.sha256()
        self._head = b""

    def write(self, data: bytes) -> None:
        self._sha.update(data)
        self._file.write(data)
        if len(self._head) < 132:
            self._head += data[: 132 - len(self._head)]

    def commit(self) -> Path:
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        if self._head[128:132] != b"DICM":  # PS3.10: 128-byte preamble, then the magic
            self.discard()
            raise PacsError("received data that is not a DICOM Part 10 file")
        final = self._tmp.with_name(f"{self._sha.hexdigest()}.dcm")
        os.replace(self._tmp, final)
        return final

    def discard(self) -> None:
        self._file.close()
        self._tmp.unlink(missing_ok=True)


def write_content_addressed(data: bytes, dest_dir: Path) -> Path:
    """One DICOM Part 10 file, atomically, as `<sha256>.dcm` (used by the C-GET storage handler)."""
    part = _HashedFile(dest_dir)
    try:
        part.write(data)
    except BaseException:
        part.discard()
        raise
    return part.commit()


# ---------------------------------------------------------------- DIMSE (pynetdicom)

# Storage classes C-GET accepts back by default (each needs an SCP role negotiated; an association holds 128 contexts).
STORAGE_CLASSES = (
    sop_class.CTImageStorage, sop_class.EnhancedCTImageStorage, sop_class.MRImageStorage,
    sop_class.EnhancedMRImageStorage, sop_class.ComputedRadiographyImageStorage,
    sop_class.DigitalXRayImageStorageForPresentation, sop_class.DigitalXRayImageStorageForProcessing,
    sop_class.DigitalMammographyXRayImageStorageForPresentation, sop_class.UltrasoundImageStorage,
    sop_class.UltrasoundMultiFrameImageStorage, sop_class.SecondaryCaptureImageStorage,
    sop_class.PositronEmissionTomographyImageStorage, sop_class.NuclearMedicineImageStorage,
)
_FIND_MODEL = sop_class.StudyRootQueryRetrieveInformationModelFind
_GET_MODEL = sop_class.StudyRootQueryRetrieveInformationModelGet
_PENDING = (0xFF00, 0xFF01)


def loopback_address(host: str, *, allow_remote: bool = False) -> str:
    """The address to connect to, refusing anything but loopback unless `allow_remote`: checked before any socket is
    opened, so a mistyped host never receives a query. `localhost` becomes 127.0.0.1 (no resolver involved)."""
    if host.lower() == "localhost":
        return "127.0.0.1"
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name
        loopback = False
    if loopback or allow_remote:
        return host
    raise PacsError(f"refusing DIMSE to non-loopback host {host!r} (pass allow_remote=True to allow it)")


def dimse_find_studies(
    host: str,
    port: int,
    called_aet: str,
    calling_aet: str = "MMFM",
    *,
    filters: Mapping[str, str] | None = None,
    allow_remote: bool = False,
    timeout: float = 30.0,
) -> list[str]:
    """C-FIND at STUDY level (Study Root): the Study Instance UIDs matching `filters` ({keyword: value}). Only the
    UID is requested, so no patient attribute comes back (nor reaches pynetdicom's DEBUG identifier logs)."""
    address = loopback_address(host, allow_remote=allow_remote)
    ae = _application_entity(calling_aet, timeout)
    ae.add_requested_context(_FIND_MODEL)
    query = _study_query(filters)
    uids: dict[str, None] = {}
    with _association(ae, address, port, called_aet) as assoc:
        for status, identifier in assoc.send_c_find(query, _FIND_MODEL):
            code = _dimse_status(status, "C-FIND")
            if code in _PENDING and identifier is not None and _is_uid(identifier.get("StudyInstanceUID")):
                uids[identifier.StudyInstanceUID] = None
            elif code not in _PENDING and code != 0x0000:
                raise PacsError(f"C-FIND failed with status 0x{code:04X}", status=code, retryable=_busy(code))
    log.info("C-FIND found %d studies", len(uids))
    return list(uids)


def dimse_get_study(
    host: str,
    port: int,
    called_aet: str,
    study_uid: str,
    dest_dir: Path,
    calling_aet: str = "MMFM",
    *,
    storage_classes: Sequence[str] = STORAGE_CLASSES,
    allow_remote: bool = False,
    timeout: float = 60.0,
) -> list[Path]:
    """C-GET of a whole study over one association; each instance arrives as a C-STORE on that association and is
    written as `<sha256>.dcm`. Only uncompressed transfer syntaxes are offered, so the PACS decompresses (losslessly)
    rather than ever being allowed to re-encode lossy; the bytes, hence the names, may differ from WADO-RS's."""
    _check_uid(study_uid)
    address = loopback_address(host, allow_remote=allow_remote)
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    ae = _application_entity(calling_aet, timeout)
    ae.add_requested_context(_GET_MODEL)
    for storage in storage_classes:
        ae.add_requested_context(storage)
    roles = [build_role(storage, scp_role=True) for storage in storage_classes]
    stored: dict[Path, None] = {}
    failures: list[str] = []
    handlers = [(evt.EVT_C_STORE, _store_handler(dest_dir, stored, failures))]
    query = _study_query({"StudyInstanceUID": study_uid})
    with _association(ae, address, port, called_aet, ext_neg=roles, evt_handlers=handlers) as assoc:
        final = [_dimse_status(status, "C-GET") for status, _ in assoc.send_c_get(query, _GET_MODEL)][-1:]
    if failures or final != [0x0000]:
        code = final[0] if final else None
        ended = f"ended with status 0x{code:04X}" if code is not None else "ended without a final status"
        why = f" ({', '.join(sorted(set(failures)))})" if failures else ""
        raise PacsError(f"C-GET {ended}: {len(stored)} stored, {len(failures)} not written{why}", status=code,
                        retryable=code is not None and _busy(code) and not failures)
    log.info("C-GET retrieved %d instances", len(stored))
    return list(stored)


def _store_handler(dest_dir: Path, stored: dict[Path, None], failures: list[str]) -> Callable[[evt.Event], int]:
    def handle(event: evt.Event) -> int:
        try:
            stored[write_content_addressed(event.encoded_dataset(include_meta=True), dest_dir)] = None
        except (OSError, PacsError) as exc:  # a full disk, a bad file: refuse this one and report it after
            failures.append(type(exc).__name__)
            return 0xA700  # Out of Resources
        return 0x0000

    return handle


def _application_entity(calling_aet: str, timeout: float) -> AE:
    ae = AE(ae_title=calling_aet)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    return ae


def _study_query(filters: Mapping[str, str] | None) -> Dataset:
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = ""
    for keyword, value in (filters or {}).items():
        if tag_for_keyword(keyword) is None:
            raise ValueError(f"not a DICOM keyword: {keyword!r}")
        setattr(query, keyword, value)
    return query


@contextmanager
def _association(ae: AE, address: str, port: int, called_aet: str, **kwargs: object) -> Iterator[Association]:
    assoc = ae.associate(address, port, ae_title=called_aet, **kwargs)
    if not assoc.is_established:
        # refused connection or silence: worth a retry; a rejection by the PACS (unknown AE title...) is not
        raise PacsError(f"no DICOM association with {called_aet}", retryable=not assoc.is_rejected)
    try:
        yield assoc
    finally:
        if assoc.is_established:
            assoc.release()


def _busy(code: int) -> bool:
    """0xA7xx, "Out of Resources": the PACS is busy or short of space, which later may change."""
    return code >> 8 == 0xA7


def _dimse_status(status: Dataset, operation: str) -> int:
    """The status code of a response; an empty status means the association died (timeout, abort)."""
    if "Status" not in status:
        raise PacsError(f"{operation}: no response (association aborted or timed out)", retryable=True)
    return int(status.Status)
