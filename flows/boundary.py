"""What a flow lets Prefect's run database know: no extract path among a run's parameters, no exception text that may
quote input (docs/privacy.md).

Prefect stores every flow run's parameters (`flow_run.parameters`) and, for a failed task or flow run, the
exception's message in its state, its log lines (with the traceback) and its events: on the workspace's own SQLite
database, or on a shared Prefect server that operators browse. An extract's folder and file names can name a
patient, and an exception raised while reading an extract can quote what it read. So:

- `private_flow(name, private=("source",))` makes a flow whose parameters named in `private` reach Prefect as
  WITHHELD. The flow body still receives the real value, in this process: callers (the CLI, `flows.ingest.run`,
  tests) pass paths as before. A withheld run cannot be retried from Prefect's UI (the stored parameter is not a
  path): rerun the command instead; ingest is idempotent. A *deployment* must not carry such a path in its own
  parameters either (Prefect stores those as given): deploy `pipeline` (sources come from the workspace's
  params.yaml / extracts/), or read the path from the worker's environment (flows/monitor.py: MMFM_MONITOR_SOURCE).
- `guarded(...)` / `guarded_task(...)`: an exception leaving a task or flow body goes through tasks.scrub.scrub and
  is raised `from None`; Prefect then logs "PipelineError: <step>: <rule> (<class>: ...)" and a traceback of code
  lines only, never the original message or its chained causes.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable
from typing import Any

from prefect import Flow, task

from tasks.scrub import scrub

WITHHELD = "<withheld>"


def guarded(fn: Callable, where: str) -> Callable:
    """`fn`, raising only value-free exceptions (tasks.scrub.scrub), `from None`; the signature is kept for Prefect."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - the boundary: whatever it was, it leaves without its values
            raise scrub(exc, where) from None

    # Prefect validates parameters against the signature, resolving string annotations (`from __future__ import
    # annotations`) in the wrapper's module globals: give it the annotations resolved where `fn` was written
    wrapper.__signature__ = inspect.signature(fn, eval_str=True)
    return wrapper


class PrivateFlow(Flow):
    """A Prefect flow whose parameters named in `private` are stored by Prefect as WITHHELD (see the module)."""

    private: tuple[str, ...] = ()

    def serialize_parameters(self, parameters: dict[str, Any]) -> dict[str, Any]:
        """What Prefect sends to its API when it creates the run: the private parameters withheld (None stays)."""
        shown = super().serialize_parameters(parameters)
        return {k: WITHHELD if k in self.private and v is not None else v for k, v in shown.items()}

    def with_options(self, **kwargs: Any) -> PrivateFlow:
        new = super().with_options(**kwargs)  # Prefect builds a plain Flow: keep this class and its private names
        new.__class__ = type(self)
        new.private = self.private
        return new


def private_flow(name: str, private: Iterable[str] = (), guard: bool = True,
                 **options: Any) -> Callable[[Callable], PrivateFlow]:
    """`@flow(name=...)` whose `private` parameters Prefect never stores and (with `guard`) whose exceptions leave
    value-free. Without `guard` (monitor, predict: stages that read no extract themselves, whose MLflow errors the
    CLI names) only the parameters are withheld; the extract they prepare is read by the guarded ingest flows."""

    def decorate(fn: Callable) -> PrivateFlow:
        made = PrivateFlow(fn=guarded(fn, name) if guard else fn, name=name, **options)
        made.private = tuple(private)
        return made

    return decorate


def guarded_task(name: str, **options: Any) -> Callable:
    """`@task(name=...)` whose exceptions leave value-free (the task's retry condition still sees PacsError etc.:
    those are value-free and pass unchanged)."""

    def decorate(fn: Callable):
        return task(name=name, **options)(guarded(fn, name))

    return decorate
