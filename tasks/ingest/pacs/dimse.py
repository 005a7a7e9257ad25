"""DIMSE client (pynetdicom): C-FIND to find studies, C-GET to fetch them, for PACSs that speak no DICOMweb.

Why apart: a different protocol with its own failure modes (associations, DIMSE status codes) and its own guard:
nothing but loopback is contacted unless the caller passes `allow_remote`, checked before any socket opens, so a
mistyped host never receives a query. Received instances go through the same content-addressed writer as WADO-RS.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset
from pynetdicom import AE, build_role, evt, sop_class
from pynetdicom.association import Association

from tasks.ingest.pacs.errors import PacsError, _check_uid, _is_uid
from tasks.ingest.pacs.multipart import write_content_addressed

log = logging.getLogger(__name__)

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
