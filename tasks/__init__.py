"""Prefect tasks and plain functions that do mmfm's work, grouped by concern. Flows wire them; they import
models/ and data_contracts/, never flows/."""
