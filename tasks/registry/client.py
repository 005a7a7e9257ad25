"""Talking to the MLflow registry: naming a version, and what an unreachable tracking server looks like.

One outage policy for every stage (tasks/stage/run.py applies it): an MLflow call that fails for want of a server
(refused, dropped or timed-out connection, after the client's own bounded retries: tasks.settings) becomes
`TrackingUnreachable`, whose message is one line naming the tracking URI. An answer from the server (403, a missing
model, ...) is not an outage and passes through unchanged.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager

DEFAULT_NAME = "mmfm-multimodal"


class TrackingUnreachable(RuntimeError):
    """The tracking server did not answer, after MLflow's own bounded retries; the message names its URI."""


def transport_failure(exc: BaseException) -> BaseException | None:
    """The refused, dropped or timed-out connection behind `exc`, if that is what it is (rather than an answer from
    the server). The whole cause chain is searched: MLflow re-raises one as something else ("Failed to get logged
    model with ID ...")."""
    import requests

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
    import os
    from urllib.parse import urlsplit

    import mlflow

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


def tracking_guarded(fn: Callable) -> Callable:
    """`tracking_errors` as a decorator."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with tracking_errors():
            return fn(*args, **kwargs)

    return wrapper


def parse_ref(ref: str, client) -> tuple[str, str]:
    """NAME/VERSION, NAME@alias or models:/... -> (name, version)."""
    ref = ref.removeprefix("models:/")
    if "@" in ref:
        name, alias = ref.split("@", 1)
        return name, client.get_model_version_by_alias(name, alias).version
    if "/" in ref:
        name, version = ref.rsplit("/", 1)
        return name, version
    raise ValueError(f"{ref!r}: name a model version as NAME/VERSION or NAME@alias")
