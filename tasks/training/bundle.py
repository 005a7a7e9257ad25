"""Model artifacts on disk: a backbone bundle and a fine-tuned adapter bundle that names the backbone it needs.

A backbone folder holds `config.json` (the ModelConfig, so no code change is needed to rebuild it),
`weights.safetensors` (safetensors: loading runs no pickle), `tokenizer/` (the WordPiece tokenizer trained on the
curated notes) and `meta.json` (dataset version, code version, training run). An adapter folder holds
`adapter.safetensors` (the LoRA matrices and the task head, nothing else), `adapter.json` (task, LoRA settings) and
`meta.json` whose `backbone` entry records the sha256 of the backbone weights: loading refuses a backbone whose
weights are not those.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, inject_adapter_in_model
from safetensors.torch import load_file, save_file

from models.encoders.concepts import ConceptReader, is_concept_dir
from models.encoders.text import load_tokenizer
from models.model import ModelConfig, MultimodalModel
from tasks.lineage import artifact_sha256

WEIGHTS, ADAPTER = "weights.safetensors", "adapter.safetensors"
HEADS = {"diagnosis": "multiclass", "risk": "binary", "survival": "cox"}  # task -> head module of MultimodalModel
LORA_TARGETS = r".*fusion\..*\.attn$|.*notes\..*\.(query|value)$"  # fusion attention, text attention projections


class BundleError(RuntimeError):
    """A model folder that is incomplete or does not match what it claims to need."""


@dataclass
class LoraSettings:
    r: int = 8
    alpha: int = 16
    dropout: float = 0.0
    target_modules: str = LORA_TARGETS
    full: bool = False  # train every parameter instead (no adapters): the "adapter" file then holds the whole model
    # (the experts recipe saves this way too: each of its phases changes part of the model)


def _write_json(path: Path, obj: dict) -> None:
    path.write_text(json.dumps(obj, indent=1, sort_keys=True, default=str) + "\n")


def _contiguous(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in state.items()}


def save_backbone(directory: Path, model: MultimodalModel, tokenizer: Any, meta: dict) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    _write_json(directory / "config.json", asdict(model.config))
    save_file(_contiguous(model.state_dict()), str(directory / WEIGHTS))
    if tokenizer is not None:
        tokenizer.save_pretrained(str(directory / "tokenizer"))
    _write_json(directory / "meta.json", {"kind": "backbone", **meta})
    return directory


def read_meta(directory: Path) -> dict:
    path = Path(directory) / "meta.json"
    if not path.exists():
        raise BundleError(f"{directory}: no meta.json (not an mmfm model folder)")
    return json.loads(path.read_text())


def load_backbone(directory: Path) -> tuple[MultimodalModel, Any, dict]:
    """(model in eval mode, tokenizer or None, meta) from a backbone folder; offline, no pickle."""
    directory = Path(directory)
    for name in ("config.json", WEIGHTS):
        if not (directory / name).exists():
            raise BundleError(f"{directory}: missing {name}")
    model = MultimodalModel(ModelConfig.from_dict(json.loads((directory / "config.json").read_text())))
    model.load_state_dict(load_file(str(directory / WEIGHTS)))
    tok_dir = directory / "tokenizer"
    tokenizer = None
    if tok_dir.exists():  # the WordPiece tokenizer, or the concept reader's lexicon (models/encoders/concepts.py)
        tokenizer = ConceptReader.load(tok_dir) if is_concept_dir(tok_dir) else load_tokenizer(tok_dir)
    return model.eval(), tokenizer, read_meta(directory)


def backbone_sha256(directory: Path) -> str:
    return artifact_sha256(Path(directory) / WEIGHTS)


# ------------------------------------------------------------------------------------------------ adapters
def add_lora(model: MultimodalModel, task: str, lora: LoraSettings) -> MultimodalModel:
    """Freeze the backbone, inject LoRA adapters (peft) and unfreeze the task's head: only those train (or, with
    `full`, train every parameter: the stronger recipe when labels are plentiful, measured in bench/quality.py)."""
    if task not in HEADS:
        raise ValueError(f"unknown task {task!r}; known: {', '.join(HEADS)}")
    if lora.full:
        for p in model.parameters():
            p.requires_grad_(True)
        return model
    model.lock_encoders()  # frozen towers stay in eval mode (no dropout) while the adapters train
    for p in model.parameters():
        p.requires_grad_(False)
    if lora.r > 0:
        config = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                            target_modules=lora.target_modules)
        model = inject_adapter_in_model(config, model)  # new lora_* parameters are trainable
    for p in getattr(model, HEADS[task]).parameters():
        p.requires_grad_(True)
    return model


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def save_adapter(directory: Path, model: MultimodalModel, task: str, lora: LoraSettings, meta: dict) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    # a whole fine-tuned model (full / experts) includes its buffers too (the omics basis fitted on this data)
    save_file(_contiguous(model.state_dict() if lora.full else trainable_state(model)), str(directory / ADAPTER))
    _write_json(directory / "adapter.json", {"task": task, "lora": asdict(lora)})
    _write_json(directory / "meta.json", {"kind": "adapter", "task": task, **meta})
    return directory


def load_adapter(directory: Path, backbone_dir: Path) -> tuple[MultimodalModel, Any, dict]:
    """Backbone + adapter -> (model in eval mode, tokenizer, adapter meta); refuses a backbone it was not made for."""
    directory = Path(directory)
    meta = read_meta(directory)
    need = meta.get("backbone", {}).get("sha256")
    have = backbone_sha256(backbone_dir)
    if need != have:
        raise BundleError(f"{directory}: adapter needs backbone weights sha256 {str(need)[:12]}, "
                          f"{backbone_dir} has {have[:12]}")
    model, tokenizer, _ = load_backbone(backbone_dir)
    spec = json.loads((directory / "adapter.json").read_text())
    model = add_lora(model, spec["task"], LoraSettings(**spec["lora"]))
    state = load_file(str(directory / ADAPTER))
    missing = set(trainable_state(model)) - set(state)
    if missing:
        raise BundleError(f"{directory}: adapter lacks {len(missing)} tensors, e.g. {sorted(missing)[0]}")
    model.load_state_dict(state, strict=False)
    return model.eval(), tokenizer, meta
