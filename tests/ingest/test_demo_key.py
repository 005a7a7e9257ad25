"""The demo's pseudonym key: the same for every fresh workspace of one synthetic cohort (so two clones split alike),
private (0600), and never used when a real key is set."""

from __future__ import annotations

import os

from tasks.ingest.state import KEY_ENV, ensure_demo_key


def test_demo_key_follows_the_cohort_seed_and_a_real_key_wins(tmp_path, monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    created, a = ensure_demo_key(tmp_path / "one" / ".mmfm", seed=7)
    assert created and oct(a.stat().st_mode & 0o777) == "0o600"
    monkeypatch.delenv(KEY_ENV)
    _, b = ensure_demo_key(tmp_path / "two" / ".mmfm", seed=7)
    monkeypatch.delenv(KEY_ENV)
    _, c = ensure_demo_key(tmp_path / "three" / ".mmfm", seed=8)
    assert a.read_text() == b.read_text() != c.read_text()
    monkeypatch.setenv(KEY_ENV, "a-real-key")
    created, _ = ensure_demo_key(tmp_path / "four" / ".mmfm", seed=7)
    assert not created and os.environ[KEY_ENV] == "a-real-key" and not (tmp_path / "four").exists()
