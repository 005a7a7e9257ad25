"""What an operator sees while a flow runs: mmfm's own lines and a progress bar, not Prefect's console log.

Why: Prefect prints every run's state changes, a temporary server's start and stop, and a failed run's
"Encountered exception" line on stderr, before and around the one line the CLI has to say. Its run database keeps
all of them (the API log handler is untouched): only the console handler is told to drop records of Prefect's own
loggers, unless the user asked for them (`mmfm -v`). The progress bar counts what Prefect reports as finished (each
task run: an ingested batch of series, a FHIR export, an omics matrix, a scored split, a drift report; each subflow:
a pipeline stage), so it moves as the work does, with nothing invented; it is drawn on a terminal only (stderr), so
piped output and `--json` stay clean.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager

PREFECT_NAMES = ("prefect", "uvicorn", "fastapi")


class NotPrefect(logging.Filter):
    """Console filter: records of Prefect's loggers (and its server's) stay off the console."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.name.startswith(PREFECT_NAMES)


def mute_prefect_console() -> None:
    """Add NotPrefect to every Prefect console handler (call after `import prefect`: it installs them)."""
    from prefect.logging.handlers import PrefectConsoleHandler

    names = [n for n in list(logging.Logger.manager.loggerDict) if n.startswith(PREFECT_NAMES)]
    for logger in [logging.getLogger(), *map(logging.getLogger, names)]:
        for handler in logger.handlers:
            if isinstance(handler, PrefectConsoleHandler) and not any(isinstance(f, NotPrefect)
                                                                        for f in handler.filters):
                handler.addFilter(NotPrefect())


class FinishedRuns(logging.Handler):
    """Advances a progress bar by one for each task or subflow run Prefect reports as finished."""

    def __init__(self, bar, task_id, label: str) -> None:
        super().__init__(logging.INFO)
        self.bar, self.task_id, self.label, self.done = bar, task_id, label, 0

    def emit(self, record: logging.LogRecord) -> None:
        if not record.getMessage().startswith("Finished in state"):
            return
        name = getattr(record, "task_run_name", None) or getattr(record, "flow_run_name", None)
        if record.name == "prefect.flow_runs" and getattr(record, "flow_name", None) == self.label:
            return  # the flow itself: the bar ends with it
        self.done += 1
        self.bar.update(self.task_id, advance=1,
                        description=f"{self.label}: {self.done} step(s) done" + (f", last {name}" if name else ""))


@contextmanager
def flow_progress(label: str, total: int | None = None):
    """A transient progress bar on stderr (terminal only) fed by Prefect's finished task and subflow runs."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from flows.cli.common import console

    con = console()
    bar = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn(), console=con, transient=True, disable=not con.is_terminal)
    task_id = bar.add_task(f"{label}: starting", total=total)
    handler = FinishedRuns(bar, task_id, label)
    loggers = [logging.getLogger("prefect.task_runs"), logging.getLogger("prefect.flow_runs")]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        with bar:
            yield bar
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
