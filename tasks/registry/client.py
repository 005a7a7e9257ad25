"""Naming things in the MLflow registry: the default model name and the references a user may type
(NAME/VERSION, NAME@alias, models:/...). What an unreachable tracking server looks like is tasks/tracking.py's."""

from __future__ import annotations

DEFAULT_NAME = "mmfm-multimodal"


def parse_ref(ref: str, client) -> tuple[str, str]:
    """NAME/VERSION, NAME@alias or models:/... -> (name, version)."""
    ref = ref.removeprefix("models:/")
    if "@" in ref:
        name, alias = ref.split("@", 1)
        return name, client.get_model_version_by_alias(name, alias).version
    if "/" in ref:
        name, version = ref.rsplit("/", 1)
        return name, version
    raise ValueError(f"{ref!r}: name a model version as NAME/VERSION or NAME@alias")
