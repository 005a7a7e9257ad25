"""Studies from a PACS, over DICOMweb (QIDO-RS + WADO-RS) or DIMSE (C-FIND + C-GET): the two protocols behind one
interface, the bounded retry options of their requests, and fetching a run's studies all or nothing.

A source's `find()` lists Study Instance UIDs and `retrieve(uid, dest)` writes one study's instances into `dest`;
both raise tasks.ingest.pacs.PacsError (`retryable` when a retry may help). The ingest flow wraps them as Prefect
tasks with these retry options and lands what arrives through the DICOM ingest path.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from prefect.futures import wait

from tasks.ingest.pacs import (
    PacsError,
    dimse_find_studies,
    dimse_get_study,
    display_url,
    find_studies,
    is_retryable,
    retrieve_study,
)

DEFAULT_DELAYS = [2, 5, 15]  # seconds between retries of a failed PACS request (params.yaml ingest.pacs.retry_delays)
BATCH = 8  # retrievals in flight at once: a PACS that dies costs at most this many retry sequences


@dataclass(frozen=True)
class DicomWeb:
    url: str
    auth: tuple[str, str] | None = None
    find_op = "QIDO-RS"
    get_op = "WADO-RS"

    @property
    def name(self) -> str:
        """How messages name the PACS (credentials and query strings left out)."""
        return display_url(self.url)

    @property
    def key(self) -> str:
        """What the ingest state records the studies as fetched from (pseudonymised before it is stored)."""
        return self.url

    def find(self) -> list[str]:
        return [s.study_instance_uid for s in find_studies(self.url, auth=self.auth)]

    def retrieve(self, study_uid: str, dest: Path) -> list[Path]:
        return retrieve_study(self.url, study_uid, dest, auth=self.auth)


@dataclass(frozen=True)
class Dimse:
    host: str
    port: int
    called_aet: str
    calling_aet: str = "MMFM"
    allow_remote: bool = False
    find_op = "C-FIND"
    get_op = "C-GET"

    @property
    def name(self) -> str:
        return f"{self.called_aet}@{self.host}:{self.port}"

    @property
    def key(self) -> str:
        return f"dimse://{self.called_aet}@{self.host}:{self.port}"

    def find(self) -> list[str]:
        return dimse_find_studies(self.host, self.port, self.called_aet, self.calling_aet,
                                  allow_remote=self.allow_remote)

    def retrieve(self, study_uid: str, dest: Path) -> list[Path]:
        return dimse_get_study(self.host, self.port, self.called_aet, study_uid, dest, self.calling_aet,
                               allow_remote=self.allow_remote)


PacsSource = DicomWeb | Dimse


def parse_dimse(address: str, called_aet: str | None, calling_aet: str = "MMFM") -> Dimse:
    """`HOST:PORT` + the PACS's AE title (`--dimse`, `--aet`) as a Dimse source; ValueError naming what is wrong."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--dimse {address!r}: expected HOST:PORT, e.g. 127.0.0.1:4242")
    if not called_aet:
        raise ValueError("--dimse needs --aet, the PACS's AE title (e.g. ORTHANC)")
    for flag, aet in (("--aet", called_aet), ("--calling-aet", calling_aet)):
        if not 0 < len(aet) <= 16 or not aet.isascii() or "\\" in aet or not aet.strip():
            raise ValueError(f"{flag} {aet!r}: an AE title is 1 to 16 ASCII characters")
    return Dimse(host.strip("[]"), int(port), called_aet, calling_aet)


def retry_options(params: dict) -> dict:
    """Prefect retry options of the PACS tasks: params.yaml `ingest.pacs.retry_delays`, seconds, one per retry
    (default [2, 5, 15]: three retries with back-off). Always bounded: at most 10 retries of at most 600 s each."""
    pacs = (params.get("ingest") or {}).get("pacs") or {}
    delays = pacs.get("retry_delays", DEFAULT_DELAYS)
    if not (isinstance(delays, list) and len(delays) <= 10 and all(
            isinstance(d, int | float) and not isinstance(d, bool) and 0 <= d <= 600 for d in delays)):
        raise ValueError("params.yaml ingest.pacs.retry_delays: a list of at most 10 delays in seconds (each 0 to "
                         "600), one per retry, e.g. [2, 5, 15]")
    return {"retries": len(delays), "retry_delay_seconds": list(delays) or 0}


def transient(task, task_run, state) -> bool:
    """Prefect `retry_condition_fn`: retry a PACS request only when its failure may pass (see is_retryable)."""
    try:
        state.result()
    except Exception as exc:  # noqa: BLE001 - the failure is what we classify
        return is_retryable(exc)
    return False


def retried(exc: BaseException, retry: dict) -> str:
    """The part of a message saying how often a failed request was retried (nothing for a failure never retried)."""
    return f", {retry['retries']} retries after {retry['retry_delay_seconds']} s" if is_retryable(exc) else ""


def find_failed(source: PacsSource, exc: PacsError, retry: dict) -> PacsError:
    return PacsError(f"PACS {source.name}: finding studies failed ({source.find_op}{retried(exc, retry)}): {exc}")


def fetch_all(submit: Callable[[str, Path], object], source: PacsSource, todo: Sequence[str], scratch: Path,
              retry: dict) -> None:
    """Retrieve every study into `scratch` (`submit(uid, dest)` -> a Prefect future), or raise one PacsError naming
    the PACS and how many did not arrive.

    In batches of BATCH, stopping after the first batch with a study that could not be retrieved: against a PACS
    that went away, the run ends after one batch's retries instead of every study's (1000 studies x 22 s). Each batch
    is waited for in full, so no retrieval is still writing into `scratch` when the caller removes it."""
    for start in range(0, len(todo), BATCH):
        batch = list(enumerate(todo))[start:start + BATCH]
        futures = [submit(uid, scratch / f"{i:05d}") for i, uid in batch]
        wait(futures)
        failures = [f.state.result(raise_on_failure=False) for f in futures if not f.state.is_completed()]
        if failures:
            untried = len(todo) - start - len(batch)
            raise PacsError(f"PACS {source.name}: {len(failures)} of {len(todo)} studies not retrieved "
                            f"({source.get_op}{retried(failures[0], retry)}"
                            f"{f', {untried} not tried' if untried else ''}): {failures[0]}; nothing was ingested, "
                            "rerun once the PACS answers")
