"""Named architectures: `create_model("tiny")` reads models/configs/tiny.json (open_clip style)."""

from __future__ import annotations

import json
from pathlib import Path

from models.model import ModelConfig, MultimodalModel

CONFIG_DIR = Path(__file__).parent / "configs"


def list_models() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.json"))


def model_config(name: str) -> ModelConfig:
    path = CONFIG_DIR / f"{name}.json"
    if not path.exists():
        raise ValueError(f"unknown model config {name!r}; known: {list_models()}")
    return ModelConfig.from_dict(json.loads(path.read_text()))


def create_model(name: str) -> MultimodalModel:
    return MultimodalModel(model_config(name))
