"""MLflow wiring shared by every stage: where the tracking store is, which dataset version a run trained on, the
tags every run carries so a model can be traced back to its data and code, and the one outage policy.

Outage policy (tasks/stage/run.py applies it to every stage): an MLflow call that fails for want of a server
(refused, dropped or timed-out connection, after the client's own bounded retries: tasks.settings) becomes
`TrackingUnreachable`, whose message is one line naming the tracking URI. An answer from the server (403, a missing
model, ...) is not an outage and passes through unchanged.

Embedded default: SQLite under <workspace>/.mmfm/mlflow.db with artifacts in .mmfm/mlartifacts; MLFLOW_TRACKING_URI
(an `mlflow server`, with MLFLOW_TRACKING_USERNAME/PASSWORD when it has basic-auth) replaces both.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import mlflow
import requests
from mlflow.entities import Metric

from tasks import tags
from tasks.lineage import code_version
from tasks.settings import get_settings
from tasks.versioning.dataset import current

_SET_HERE: set[str] = set()  # URIs configure() chose: mlflow.set_tracking_uri exports them to the environment


def configure(root: Path) -> str:
    """Point MLflow at the workspace's tracking store; returns the URI.

    mlflow.set_tracking_uri also writes MLFLOW_TRACKING_URI into os.environ; a value we put there ourselves must not
    be mistaken for the user's choice when the next workspace in this process is configured."""
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        if os.environ.get(var) in _SET_HERE:
            del os.environ[var]
    settings = get_settings(Path(root))
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    uri = settings.tracking_uri
    if not settings.mlflow_tracking_uri:
        _SET_HERE.add(uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    if uri.startswith("sqlite:"):
        settings.state_dir.mkdir(parents=True, exist_ok=True)
    return uri


def experiment_id(root: Path, name: str) -> str:
    """The experiment's id, created with the workspace's artifact location on the embedded store."""
    settings = get_settings(Path(root))
    found = mlflow.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    location = settings.artifact_location if settings.tracking_uri.startswith("sqlite:") else None
    return mlflow.create_experiment(name, artifact_location=location)


def dataset_facts(root: Path) -> dict:
    """The curated data a run uses, as the facts every stage records (tasks/versioning/dataset.py decides them)."""
    return current(root).facts()


def run_tags(root: Path, stage: str, facts: dict | None = None) -> dict[str, str]:
    """Tags of every training/evaluation run: stage, dataset version and hash, contract versions, code version."""
    facts = facts or dataset_facts(root)
    return {tags.STAGE: stage, tags.DATASET_VERSION: facts["dataset_version"], tags.CURATED_MD5: facts["curated_md5"],
            tags.CONTRACT_VERSIONS: json.dumps(facts.get("contract_versions", {}), sort_keys=True),
            tags.CODE_VERSION: code_version()}


def log_curve(values: list[float] | dict[int, float], key: str) -> None:
    """A loss curve as one MLflow metric with a step per point (list index + 1, or the dict's steps), in one call."""
    points = values.items() if isinstance(values, dict) else enumerate(values, start=1)
    now = int(time.time() * 1000)
    metrics = [Metric(key, float(v), now, int(step)) for step, v in points]
    run = mlflow.active_run()
    for start in range(0, len(metrics), 1000):  # the tracking API takes at most 1000 metrics per batch
        mlflow.MlflowClient().log_batch(run.info.run_id, metrics=metrics[start:start + 1000])


class TrackingUnreachable(RuntimeError):
    """The tracking server did not answer, after MLflow's own bounded retries; the message names its URI."""


def transport_failure(exc: BaseException) -> BaseException | None:
    """The refused, dropped or timed-out connection behind `exc`, if that is what it is (rather than an answer from
    the server). The whole cause chain is searched: MLflow re-raises one as something else ("Failed to get logged
    model with ID ...")."""
    transport = (requests.ConnectionError, requests.Timeout, requests.exceptions.RetryError,
                 requests.exceptions.ChunkedEncodingError)
    chain, seen = [exc], set()
    while chain:
        e = chain.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, transport) or "Max retries exceeded" in str(e):
            return e
        chain += [e.__cause__, e.__context__]
    return None


def unreachable_message(failure: BaseException) -> str:
    """One line naming the tracking URI (without user or password) and how the connection failed."""
    uri = urlsplit(mlflow.get_tracking_uri())
    shown = f"{uri.scheme}://{uri.hostname}{f':{uri.port}' if uri.port else ''}{uri.path}"
    text = str(failure).lower()
    reasons = (("error responses", "server errors"), ("refused", "connection refused"), ("timed out", "timed out"),
               ("timeout", "timed out"), ("reset", "connection reset"), ("without response", "connection dropped"))
    why = next((w for k, w in reasons if k in text), "no answer")
    retries = os.environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "7")
    return (f"MLflow tracking server {shown} unreachable ({why}, after {retries} retries with back-off); rerun once "
            "it answers")


@contextmanager
def tracking_errors() -> Iterator[None]:
    """A block whose MLflow calls fail for want of a server raises TrackingUnreachable, decided here where the
    exception's cause chain is still whole."""
    try:
        yield
    except TrackingUnreachable:
        raise
    except Exception as exc:
        failure = transport_failure(exc)
        if failure is None:
            raise
        raise TrackingUnreachable(unreachable_message(failure)) from exc
