"""Shared fixtures. Telemetry is switched off before anything from the stack is imported."""

from __future__ import annotations

from tasks.settings import quiet_telemetry

quiet_telemetry()
