"""MultimodalModel: one encoder per modality, fusion across modalities, task heads, pre-training losses.

A batch is a dict (data_contracts/model_io.yaml): any subset of `image_3d` (B, 1, 16, 48, 48), `image_2d`
(B, 1, 64, 64), `labs` (B, T, 3), `notes` (B, T) token ids, `omics` (B, G), and `mask` (B, 5) bool, True where the
sample has the modality, columns in MODALITIES order. Without `mask`, every modality in the batch counts as present.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from models.encoders.image import ImageEncoder, ImageEncoderConfig
from models.encoders.labs import LabsEncoder, LabsEncoderConfig
from models.encoders.omics import OmicsEncoder, OmicsEncoderConfig
from models.encoders.text import TextEncoder, TextEncoderConfig
from models.fusion import Fusion, FusionConfig
from models.heads import BinaryHead, CoxHead, HeadsConfig, MulticlassHead
from models.losses import info_nce, masked_modality_loss

MODALITIES = ("image_3d", "image_2d", "labs", "notes", "omics")  # column order of batch["mask"]


@dataclass
class ModelConfig:
    image_3d: ImageEncoderConfig | None = None
    image_2d: ImageEncoderConfig | None = None
    labs: LabsEncoderConfig | None = None
    notes: TextEncoderConfig | None = None
    omics: OmicsEncoderConfig | None = None
    fusion: FusionConfig = field(default_factory=FusionConfig)
    heads: HeadsConfig = field(default_factory=HeadsConfig)
    modality_dropout: float = 0.0  # per sample and modality, in training; one present modality always stays
    temperature: float = 0.1  # InfoNCE

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        kinds = {"image_3d": ImageEncoderConfig, "image_2d": ImageEncoderConfig, "labs": LabsEncoderConfig,
                 "notes": TextEncoderConfig, "omics": OmicsEncoderConfig, "fusion": FusionConfig,
                 "heads": HeadsConfig}
        known = {k: v for k, v in d.items() if not k.startswith("_")}
        return cls(**{k: (kinds[k](**v) if k in kinds and v is not None else v) for k, v in known.items()})


ENCODERS = {"image_3d": ImageEncoder, "image_2d": ImageEncoder, "labs": LabsEncoder, "notes": TextEncoder,
            "omics": OmicsEncoder}


class MultimodalModel(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.modalities = [m for m in MODALITIES if getattr(config, m) is not None]
        self.encoders = nn.ModuleDict({m: ENCODERS[m](getattr(config, m)) for m in self.modalities})
        width = config.fusion.width
        self.fusion = Fusion(config.fusion, {m: getattr(config, m).width for m in self.modalities})
        self.multiclass = MulticlassHead(width, config.heads.n_classes, config.heads.dropout)
        self.binary = BinaryHead(width, config.heads.dropout)
        self.cox = CoxHead(width, config.heads.dropout)
        self.mmm_query = nn.Embedding(len(self.modalities), width)  # which modality to predict
        self.mmm_predictor = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, width), nn.GELU(),
                                           nn.Linear(width, width))

    def presence(self, batch: dict) -> dict[str, torch.Tensor]:
        """modality -> (B,) bool for the modalities this model encodes and the batch carries."""
        mask = batch.get("mask")
        out = {}
        for m in self.modalities:
            if m not in batch:
                continue
            x = batch[m]
            out[m] = (torch.as_tensor(mask[:, MODALITIES.index(m)], device=x.device).bool() if mask is not None
                      else torch.ones(x.shape[0], dtype=torch.bool, device=x.device))
        return out

    def encode(self, batch: dict) -> tuple[dict, dict, dict]:
        """Run each encoder: tokens m -> (B, T_m, D_m), token masks m -> (B, T_m), presence m -> (B,)."""
        present = self.presence(batch)
        tokens, masks = {}, {}
        for m in present:
            tokens[m], masks[m] = self.encoders[m].encode(batch[m])
        return tokens, masks, present

    def modality_dropout(self, present: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Drop each present modality with probability p; a sample keeps at least one of those it had."""
        p = self.config.modality_dropout
        if not self.training or p <= 0 or not present:
            return present
        names = list(present)
        has = torch.stack([present[m] for m in names], 1)  # (B, M)
        kept = has & (torch.rand(has.shape, device=has.device) >= p)
        # where everything was dropped, restore one of the original modalities at random
        empty = ~kept.any(1) & has.any(1)
        pick = torch.multinomial(has.float() + 1e-9 * (~has).float(), 1).squeeze(1)  # (B,)
        restore = torch.zeros_like(has).scatter_(1, pick.unsqueeze(1), True) & empty.unsqueeze(1)
        kept = kept | restore
        return {m: kept[:, i] for i, m in enumerate(names)}

    def forward(self, batch: dict) -> dict:
        """batch -> fused (B, W), pooled/unimodal/attention per modality, class_logits (B, C), class_probs (B, C),
        binary_logit (B,), risk (B,) Cox log-risk."""
        tokens, masks, present = self.encode(batch)
        out = self.fusion(tokens, masks, self.modality_dropout(present))
        return {**out, **self.heads(out["fused"])}

    def heads(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = self.multiclass(z)
        return {"class_logits": logits, "class_probs": logits.softmax(-1), "binary_logit": self.binary(z),
                "risk": self.cox(z)}

    def pretrain_losses(self, batch: dict) -> dict[str, torch.Tensor]:
        """InfoNCE between every pair of present modalities + masked-modality modelling: for each sample with two
        or more modalities, drop one at random and predict its (pre-fusion) pooled embedding from the rest."""
        tokens, masks, present = self.encode(batch)
        out = self.fusion(tokens, masks, self.modality_dropout(present))
        contrastive = info_nce(out["unimodal"], out["present"], self.config.temperature)
        names = list(out["unimodal"])
        has = torch.stack([out["present"][m] for m in names], 1)  # (B, M)
        valid = has.sum(1) >= 2
        drop = torch.multinomial(has.float() + 1e-9, 1).squeeze(1)  # (B,) a present modality when there is one
        dropped = torch.zeros_like(has).scatter_(1, drop.unsqueeze(1), True) & valid.unsqueeze(1)
        rest = self.fusion(tokens, masks, {m: has[:, i] & ~dropped[:, i] for i, m in enumerate(names)})
        query = self.mmm_query(torch.tensor([self.modalities.index(m) for m in names], device=has.device))[drop]
        pred = self.mmm_predictor(rest["fused"] + query)  # (B, W)
        target = torch.stack([out["unimodal"][m] for m in names], 1)[torch.arange(has.shape[0]), drop]  # (B, W)
        mmm = masked_modality_loss(pred, target, valid)
        return {"info_nce": contrastive, "masked_modality": mmm, "loss": contrastive + mmm}

    def train(self, mode: bool = True) -> MultimodalModel:
        super().train(mode)
        for enc in self.encoders.values():  # a locked tower stays in eval mode (no dropout) while the rest trains
            if getattr(enc, "locked", False):
                enc.eval()
        return self

    def lock_encoders(self) -> None:
        """Freeze every encoder (fine-tuning trains fusion adapters and heads only)."""
        for enc in self.encoders.values():
            enc.lock()
