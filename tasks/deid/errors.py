"""Errors of the de-identification boundary. Their messages name rules, tags and keywords, never values:
an exception travels into logs, Prefect's UI and quarantine records, all of which are outside the boundary."""

from __future__ import annotations


class DeidError(ValueError):
    """Input that cannot be de-identified safely; the caller quarantines it (the message names the rule)."""

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(f"[{rule}] {message}")
        self.rule = rule


class PseudonymKeyError(DeidError):
    """The secret key is missing, empty or too short."""

    def __init__(self, message: str) -> None:
        super().__init__("pseudonym_key", message)
