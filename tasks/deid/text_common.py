"""What every free-text detector returns: a span of the original text, its kind and what replaces it."""

from __future__ import annotations

from typing import NamedTuple


class Span(NamedTuple):
    start: int
    end: int
    kind: str
    replacement: str
