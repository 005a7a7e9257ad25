"""Keyed pseudonyms: determinism, key requirements, error messages without the key."""

from __future__ import annotations

import pytest

from tasks.deid import KEY_ENV, Pseudonymizer, PseudonymKeyError, key_from_settings
from tests.deid.conftest import TEST_KEY


@pytest.mark.parametrize("bad", [b"", b"short", "not-bytes-but-long-enough-string-0123456789"])
def test_short_or_empty_key_refused(bad):
    with pytest.raises(PseudonymKeyError, match="pseudonym_key"):
        Pseudonymizer(bad)


def test_env_key_required_and_never_echoed(monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    with pytest.raises(PseudonymKeyError) as info:
        key_from_settings()
    assert KEY_ENV in str(info.value)
    monkeypatch.setenv(KEY_ENV, "CANARYKEY-short")
    with pytest.raises(PseudonymKeyError) as info:
        key_from_settings()
    assert "CANARYKEY" not in str(info.value) and "at least 32 bytes" in str(info.value)
    monkeypatch.setenv(KEY_ENV, TEST_KEY.decode())
    assert key_from_settings() == TEST_KEY


def test_key_not_in_repr(keys):
    assert TEST_KEY.decode() not in repr(keys) and "key" not in repr(keys)


def test_patient_pseudonym_is_keyed_and_stable(keys):
    p = keys.patient("site01", "MRN1")
    assert p == keys.patient(" site01", "MRN1 ") and p.startswith("P") and len(p) == 21
    assert p != keys.patient("site02", "MRN1") != Pseudonymizer(TEST_KEY + b"x").patient("site01", "MRN1")


def test_date_offset_range_and_never_zero(keys):
    offsets = {keys.date_offset_days(keys.patient("s", str(i))) for i in range(2000)}
    assert min(offsets) >= -3650 and max(offsets) <= -365 and 0 not in offsets and len(offsets) > 1000


def test_uid_mapping(keys):
    uid = "1.2.826.0.1.3680043.8.498.1"
    new = keys.uid(uid)
    assert new == keys.uid(uid + "\x00") and new.startswith("2.25.") and len(new) <= 64
    assert new != keys.uid(uid + "1") and new.split(".")[2][0] != "0"
    assert all(len(keys.uid(str(i))) <= 64 for i in range(500))
