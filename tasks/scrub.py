"""Exceptions as they may leave a stage: named by their class and a rule, never by a message that may quote input.

Why: the message of an exception raised while an extract is read can quote what was read. pydantic's
ValidationError prints `input_value=...`, `datetime.fromisoformat` the string it refused (a bulk-export manifest's
`transactionTime`), `int()` the literal, KeyError its key, OSError its file name (an extract's file names can hold
a name or an MRN: `Smith_John_MRN123.dcm`), json.JSONDecodeError keeps the whole document in `.doc`. Everything that
leaves the workspace (Prefect's run database: state messages, logs, events; the CLI's stderr; a ticket pasted from
it) must hold none of that (docs/privacy.md).

`scrub(exc, where)` keeps an exception whose message is value-free by construction (its class, or a base class,
sets `value_free = True` or is named in VALUE_FREE) and turns any other into a PipelineError naming the step, the
rule and the exception's class. The original stays in the new error's `__context__` (hidden: raise it `from None`),
so a person debugging on the workspace's own terminal (`--debug`) still sees it; nothing else prints it.
"""

from __future__ import annotations

import json

# exception classes whose messages name rules, types, counts and places, never values (matched by class name along
# the MRO, so this floor module imports none of them): ingest's refusals and format errors, de-identification's
# errors, PACS errors (UIDs masked), the workspace lock, and the CLI's self-explaining errors
VALUE_FREE = frozenset({
    "PipelineError", "IngestRefused", "OmicsFormatError", "DeidError", "PacsError", "WorkspaceBusy", "StageError",
    "CuratedChanged", "PublishError", "NoSpaceLeft", "PromotionRefused", "TrackingUnreachable", "ValidationBlocked",
})

# (class name along the MRO, rule, what it means): the first match wins, so subclasses come before their bases
RULES = (
    ("JSONDecodeError", "input.json", "malformed JSON"),
    ("UnicodeError", "input.encoding", "text that is not valid in its encoding"),
    ("ValidationError", "input.structure", "does not match the expected structure"),
    ("KeyError", "input.missing_key", "a required key is missing"),
    ("IndexError", "input.missing_item", "an expected item is missing"),
    ("FileNotFoundError", "io.not_found", "a file or folder is missing"),
    ("PermissionError", "io.permission", "a file or folder is not accessible"),
    ("OSError", "io.error", "reading or writing a file failed"),
    ("MemoryError", "resource.memory", "out of memory"),
    ("TypeError", "input.type", "a value of an unexpected type"),
    ("ValueError", "input.value", "a malformed or out-of-range value"),
)
NO_SPACE = 28  # errno ENOSPC: worth its own rule (the fix is not in the input)


class PipelineError(RuntimeError):
    """A step failed; the message names the step, the rule and the original exception's class, never a value."""

    value_free = True

    def __init__(self, rule: str, where: str, detail: str = "") -> None:
        self.rule, self.where, self.detail = rule, where, detail
        super().__init__(f"{where}: {rule}" + (f" ({detail})" if detail else ""))

    def __reduce__(self):  # picklable with its fields (Dask/Ray workers send it back to the flow)
        return type(self), (self.rule, self.where, self.detail)


def _names(exc: BaseException) -> list[str]:
    return [cls.__name__ for cls in type(exc).__mro__]


def is_value_free(exc: BaseException) -> bool:
    """Whether `exc`'s message is value-free by construction (see VALUE_FREE and the `value_free` attribute)."""
    return bool(getattr(exc, "value_free", False)) or not VALUE_FREE.isdisjoint(_names(exc))


def rule_of(exc: BaseException) -> tuple[str, str]:
    """(rule, what it means) for an exception that may quote values, from its class only."""
    if isinstance(exc, OSError) and exc.errno == NO_SPACE:
        return "io.no_space", "no space left on device"
    names = _names(exc)
    for name, rule, what in RULES:
        if name in names:
            return rule, what
    return "internal.error", "an unexpected error"


def scrub(exc: BaseException, where: str) -> BaseException:
    """`exc` itself when value-free (its chained causes hidden), else a PipelineError for it. Raise the result
    `from None`: what Prefect logs of a failed run (the exception, its traceback, the state message) is then free
    of values; the original stays reachable as `__context__` for a debugger in this process."""
    if is_value_free(exc):
        if exc.__cause__ is not None:  # a cause may quote values: keep it reachable, never printed
            exc.__context__, exc.__cause__ = exc.__cause__, None
        exc.__suppress_context__ = True
        return exc
    rule, what = rule_of(exc)
    err = PipelineError(rule, where, f"{type(exc).__name__}: {what}; its message is withheld, it may quote input")
    err.__context__, err.__suppress_context__ = exc, True
    return err


def one_line(exc: BaseException) -> str:
    """An error line for a person: the message of a value-free exception, else its class and rule only."""
    if is_value_free(exc):
        return str(exc)
    rule, what = rule_of(exc)
    return f"{type(exc).__name__} ({rule}: {what}); its message is withheld, it may quote input values (--debug)"


def carries_values(exc: BaseException) -> bool:
    """Whether `exc` is of a kind whose message routinely quotes what was read (parser and schema errors, missing
    keys, file names): the CLI shows these by class and rule only, even from stages that read no extract."""
    if isinstance(exc, OSError):
        return exc.filename is not None or exc.filename2 is not None
    return isinstance(exc, json.JSONDecodeError | UnicodeError | KeyError) or "ValidationError" in _names(exc)
