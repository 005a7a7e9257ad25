"""Fixtures of the contract tests: a fresh copy of the batch that keeps every contract (tests/contracts/batch.py)."""

from __future__ import annotations

import polars as pl
import pytest

from tests.contracts.batch import make_batch


@pytest.fixture()
def batch() -> dict[str, pl.DataFrame]:
    return make_batch()
