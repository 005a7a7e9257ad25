from __future__ import annotations

import pytest

from tasks.deid import Pseudonymizer

TEST_KEY = b"mmfm-test-key-not-a-secret-0123456789"


@pytest.fixture
def keys() -> Pseudonymizer:
    return Pseudonymizer(TEST_KEY)
