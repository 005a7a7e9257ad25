"""What every `mmfm` command shares: the app, the common options, output, and error handling (DESIGN.md §7).

Contract for every command: `--workspace DIR` (default: the current directory) and `--json`, which makes the last
line of stdout one JSON object summarising what happened. Exit 0: the stage did its job (quarantined input is not a
failure); exit 1: it could not, with one line on stderr naming why (`--debug` for the traceback). That line never
quotes input: an exception whose message may quote what was read (a parser's, a schema's, a file name) is shown by
its class and rule only (tasks.scrub); `--debug` shows the original, on this terminal only (docs/privacy.md).
The command modules (data, ingest, models, registry, audit) import only this module; flows/cli/__init__.py imports
them to register their commands. Heavy libraries (Prefect, MLflow, torch, MONAI, polars, rich) are imported inside
the functions that need them, so `mmfm --help` stays fast.
"""

from __future__ import annotations

import functools
import importlib
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from tasks.scrub import carries_values, one_line
from tasks.settings import bounded_mlflow_retries, quiet_telemetry
from tasks.workspace_lock import WAIT_ENV, WorkspaceBusy

# errors whose message already says what happened and what to do (matched by name: importing their modules would
# load Prefect/DVC into every CLI start)
SELF_EXPLAINING = ("CuratedChanged", "PublishError", "NoSpaceLeft", "PromotionRefused", "TrackingUnreachable",
                   "PipelineError")

app = typer.Typer(
    name="mmfm", no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
    help="Governed multimodal medical foundation model: ingest, de-identify, validate, version, train, register, "
         "monitor.",
)

WorkspaceOpt = Annotated[Path, typer.Option("--workspace", "-w", help="Workspace directory (git + DVC repo).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON summary as the last line of stdout.")]
DebugOpt = Annotated[bool, typer.Option("--debug", help="Show the full traceback on error.")]
WaitOpt = Annotated[float | None, typer.Option(
    "--wait", help="Seconds to wait for another process holding the workspace (default 0: refuse at once, naming it; "
                   f"also {WAIT_ENV}).")]


class StageError(Exception):
    """A stage could not do its job; the message names the rule or input at fault (and never quotes PHI)."""


def console(stderr: bool = True):
    """Progress and errors go to stderr; human summaries to stdout (replaced by the JSON line under --json)."""
    from rich.console import Console

    return Console(stderr=stderr)


def say(text: object, **kwargs) -> None:
    """One human line on stdout (never under --json: `emit` renders only without it)."""
    console(stderr=False).print(text, **kwargs)


def command(fn: Callable) -> Callable:
    """Run a command with telemetry off; turn any failure into one line on stderr and exit 1 (unless --debug)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        quiet_telemetry()
        bounded_mlflow_retries()  # a dead tracking server fails in about a minute, not MLflow's 4 (every command)
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except Exception as exc:  # noqa: BLE001 - the CLI boundary: one clear line, not a traceback
            if kwargs.get("debug"):
                reveal(exc)
                raise
            from rich.markup import escape

            console().print(f"[bold red]error:[/] {escape(error_line(exc))}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None

    return wrapper


def error_line(exc: BaseException) -> str:
    """The one stderr line for a failed command: never a message that may quote input (tasks.scrub)."""
    if carries_values(exc):
        return one_line(exc)
    clean = isinstance(exc, StageError | ValueError | WorkspaceBusy) or type(exc).__name__ in SELF_EXPLAINING
    return ("" if clean else f"{type(exc).__name__}: ") + str(exc)


def reveal(exc: BaseException) -> None:
    """--debug: the traceback shows the original exception a stage boundary hid (tasks.scrub), on this terminal only
    (Prefect's database got the value-free one)."""
    if exc.__context__ is not None:
        exc.__suppress_context__ = False


def mlflow_errors(fn: Callable) -> Callable:
    """MLflow errors as one line: a tracking server that does not answer (after the client's bounded retries, see
    tasks.settings.MLFLOW_CLIENT_BOUNDS) is named by its URI; permission errors (403/401 from a basic-auth server)
    and other refusals quote MLflow's first line."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        import requests
        from mlflow.exceptions import MlflowException

        from tasks.tracking import TrackingUnreachable, transport_failure, unreachable_message

        bounded_mlflow_retries()
        try:
            return fn(*args, **kwargs)
        except TrackingUnreachable as exc:
            raise StageError(str(exc)) from None
        except (MlflowException, requests.RequestException) as exc:
            failure = transport_failure(exc)
            if failure is not None:
                raise StageError(unreachable_message(failure)) from None
            if isinstance(exc, requests.RequestException):
                raise
            raise StageError(f"MLflow refused: {str(exc).splitlines()[0][:300]}") from None

    return wrapper


def lock_wait(seconds: float | None) -> None:
    """--wait: how long the workspace lock (tasks.workspace_lock) may be waited for by every flow this command runs."""
    if seconds is not None:
        os.environ[WAIT_ENV] = str(seconds)


def emit(result: dict, as_json: bool, render: Callable[[dict], None]) -> None:
    """Human summary on stderr/stdout, or the JSON object as the very last line of stdout."""
    if as_json:
        sys.stdout.write(json.dumps(result, default=str) + "\n")
    else:
        render(result)


def progress_bar(total: int, description: str):
    """A rich progress bar on stderr, so stdout stays clean for --json."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                   console=console(), transient=True)
    return bar, bar.add_task(description, total=total)


def use_workspace(workspace: Path) -> Path:
    """Point Prefect's home at the workspace's state folder (before Prefect is imported) and return the root."""
    root = workspace.resolve()
    if not (root / ".dvc").is_dir():
        raise StageError(f"{root} is not an mmfm workspace: run `mmfm init {workspace}` first")
    os.environ.setdefault("PREFECT_HOME", str(root / ".mmfm" / "prefect"))
    return root


class OneLine(logging.Filter):
    """Logging filter: Prefect logs a failed run's traceback; the CLI shows one line instead (unless --debug)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        return True


def quiet_tracebacks(debug: bool) -> None:
    if debug:
        return
    for name in ("prefect", "prefect.flow_runs", "prefect.task_runs", "prefect.engine"):
        for handler in logging.getLogger(name).handlers:
            handler.addFilter(OneLine())


def threads() -> None:
    """One intra-op thread per core we may use: oversubscribed BLAS threads slow CPU training several-fold."""
    import torch

    torch.set_num_threads(max(1, len(os.sched_getaffinity(0))))


def run_flow(module: str, fn: str, as_json: bool, debug: bool, render: Callable[[dict], None], **params) -> dict:
    """Import `module` (a flow: only now, so Prefect loads only when a command runs), call `fn(**params)`, emit."""
    stage = getattr(importlib.import_module(module), fn)
    quiet_tracebacks(debug)  # after the import: `from prefect import flow` is what sets up Prefect's log handlers
    summary = stage(**params)
    emit(summary, as_json, render)
    return summary
