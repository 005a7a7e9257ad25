"""PacsError, the retry classification, and the UID rules every PACS request shares, DICOMweb and DIMSE alike.

Why apart: both protocols and the multipart parser raise PacsError, and both put Study Instance UIDs on the wire;
one module that all three import keeps them from importing each other. A UID identifies a patient's study, so the
error masks it here, once, for every message that could reach Prefect's logs.
"""

from __future__ import annotations

import re

_UID = re.compile(r"[0-9]+(\.[0-9]+)*")
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
    """Whether a task that failed with `exc` should go on to its retry policy (see the tasks.ingest.pacs docstring)."""
    return isinstance(exc, PacsError) and exc.retryable


def _is_uid(value: object) -> bool:
    return isinstance(value, str) and len(value) <= 64 and _UID.fullmatch(value) is not None


def _check_uid(uid: str) -> None:
    """A UID goes into a URL path: refuse anything but digits and dots (no `../`, no query)."""
    if not _is_uid(uid):
        raise ValueError("not a DICOM UID (digits and dots, at most 64 characters)")
