"""PACS client for ingest: find studies (QIDO-RS, C-FIND), fetch them (WADO-RS, C-GET), upload for tests (STOW-RS).

Plain functions, no Prefect: the ingest flow wraps each call in a task, so this package stays testable on its own.

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
hold a PatientID) nor a response body (a PACS error page may echo patient data); logs carry counts only.

Where things live (import them from here):
    errors     PacsError, is_retryable, the UID checks every request makes
    dicomweb   find_studies (QIDO-RS), retrieve_study (WADO-RS), stow_instances (STOW-RS), StudyRef, display_url
    multipart  the streamed multipart/related parser and the content-addressed `<sha256>.dcm` writer
    dimse      dimse_find_studies (C-FIND), dimse_get_study (C-GET), loopback_address (pynetdicom)
"""

from __future__ import annotations

from tasks.ingest.pacs.dicomweb import Auth, StudyRef, display_url, find_studies, retrieve_study, stow_instances
from tasks.ingest.pacs.dimse import STORAGE_CLASSES, dimse_find_studies, dimse_get_study, loopback_address
from tasks.ingest.pacs.errors import PacsError, is_retryable
from tasks.ingest.pacs.multipart import iter_multipart, multipart_boundary, write_content_addressed

__all__ = [
    "STORAGE_CLASSES", "Auth", "PacsError", "StudyRef", "dimse_find_studies", "dimse_get_study", "display_url",
    "find_studies", "is_retryable", "iter_multipart", "loopback_address", "multipart_boundary", "retrieve_study",
    "stow_instances", "write_content_addressed",
]
