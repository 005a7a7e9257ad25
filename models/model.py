"""MultimodalModel: one encoder per modality, fusion across modalities, task heads, pre-training losses.

A batch is a dict (data_contracts/model_io.yaml): any subset of `image_3d` (B, 1, 16, 48, 48), `image_2d`
(B, 1, 64, 64), `labs` (B, T, 3), `notes` (B, T) token ids or (B, F) concept flags, `omics` (B, G), `demographics`
(B, 2) [age, male], and `mask` (B, 5) bool, True where the sample has the modality, columns in MODALITIES order.
Without `mask`, every modality in the batch counts as present; demographics are present whenever carried.

Two read-outs (`readout` in the config):
- "experts" (the shipped configs): experts, then fusion. Each modality (and demographics) has its own linear heads on
  its encoder's pooled tokens: per-task evidence. The task output is the sum of the present experts' evidence, so a
  missing modality drops out exactly (as in a Bayes posterior under missingness at random), plus the cross-modal
  fusion transformer's heads as an interaction term, zero-initialised: it adds nothing until trained, last.
  tasks/training/experts.py trains the demographics prior first, then each modality's expert on top of it
  (separately, each with its own stopping), then the interaction. Why: trained jointly on a few hundred patients the
  strongest modality (labs) wins and the others overfit; separately trained experts summed beat the joint model by
  about 0.05 macro AUROC (measured while the recipe was chosen; docs/model.md has today's figures).
- "fusion": the fused CLS embedding alone feeds the heads (the earlier recipe; kept to read old bundles and to
  measure against).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from models.encoders.concepts import ConceptEncoder, ConceptEncoderConfig
from models.encoders.demographics import DemographicsEncoder, DemographicsEncoderConfig
from models.encoders.image import ImageEncoder, ImageEncoderConfig
from models.encoders.labs import LabsEncoder, LabsEncoderConfig
from models.encoders.omics import OmicsEncoder, OmicsEncoderConfig
from models.encoders.text import TextEncoder, TextEncoderConfig
from models.fusion import Fusion, FusionConfig
from models.heads import BinaryHead, CoxHead, HeadsConfig, MulticlassHead
from models.layers import masked_mean
from models.losses import findings_loss, info_nce, masked_modality_loss

MODALITIES = ("image_3d", "image_2d", "labs", "notes", "omics")  # column order of batch["mask"]
EXPERTS = ("demographics", *MODALITIES)  # every input with an expert of its own (readout "experts")
TASK_HEADS = ("multiclass", "binary", "cox")


@dataclass
class ModelConfig:
    image_3d: ImageEncoderConfig | None = None
    image_2d: ImageEncoderConfig | None = None
    labs: LabsEncoderConfig | None = None
    notes: TextEncoderConfig | None = None
    omics: OmicsEncoderConfig | None = None
    notes_concepts: ConceptEncoderConfig | None = None  # notes read as concept flags instead of `notes` tokens
    demographics: DemographicsEncoderConfig | None = None
    fusion: FusionConfig = field(default_factory=FusionConfig)
    heads: HeadsConfig = field(default_factory=HeadsConfig)
    modality_dropout: float = 0.0  # per sample and modality, in training; one present modality always stays
    temperature: float = 0.1  # InfoNCE
    readout: str = "fusion"  # "experts" | "fusion" (module docstring)
    # image modality -> levels of each report finding it is pre-trained to predict (tasks/training/findings.py)
    findings: dict[str, list[int]] | None = None
    contrastive: bool = True  # pre-training adds cross-modal InfoNCE + masked-modality modelling

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        kinds = {"image_3d": ImageEncoderConfig, "image_2d": ImageEncoderConfig, "labs": LabsEncoderConfig,
                 "notes": TextEncoderConfig, "omics": OmicsEncoderConfig, "notes_concepts": ConceptEncoderConfig,
                 "demographics": DemographicsEncoderConfig, "fusion": FusionConfig, "heads": HeadsConfig}
        known = {k: v for k, v in d.items() if not k.startswith("_")}
        return cls(**{k: (kinds[k](**v) if k in kinds and v is not None else v) for k, v in known.items()})

    def encoder_config(self, modality: str):
        """The config of the encoder reading `modality` (notes: the concept reader when configured)."""
        if modality == "notes" and self.notes_concepts is not None:
            return self.notes_concepts
        return getattr(self, modality)


ENCODERS = {"image_3d": ImageEncoder, "image_2d": ImageEncoder, "labs": LabsEncoder, "notes": TextEncoder,
            "omics": OmicsEncoder, "demographics": DemographicsEncoder}


def _encoder(modality: str, config) -> nn.Module:
    return ConceptEncoder(config) if isinstance(config, ConceptEncoderConfig) else ENCODERS[modality](config)


class MultimodalModel(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.modalities = [m for m in MODALITIES if config.encoder_config(m) is not None]
        self.inputs = [*self.modalities, *(["demographics"] if config.demographics is not None else [])]
        self.encoders = nn.ModuleDict({m: _encoder(m, config.encoder_config(m)) for m in self.inputs})
        width = config.fusion.width
        widths = {m: config.encoder_config(m).width for m in self.inputs}
        self.fusion = Fusion(config.fusion, widths)
        self.multiclass = MulticlassHead(width, config.heads.n_classes, config.heads.dropout)
        self.binary = BinaryHead(width, config.heads.dropout)
        self.cox = CoxHead(width, config.heads.dropout)
        self.mmm_query = nn.Embedding(len(self.inputs), width)  # which modality to predict
        self.mmm_predictor = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, width), nn.GELU(),
                                           nn.Linear(width, width))
        self.experts = config.readout == "experts"
        if config.readout not in ("experts", "fusion"):
            raise ValueError(f"unknown readout {config.readout!r}; known: experts, fusion")
        if self.experts:
            n = config.heads.n_classes
            self.expert_heads = nn.ModuleDict({m: nn.ModuleDict({
                "multiclass": nn.Linear(widths[m], n), "binary": nn.Linear(widths[m], 1),
                "cox": nn.Linear(widths[m], 1, bias=False)}) for m in self.inputs})
            # every expert and the interaction term start at exactly 0 evidence: an expert whose training does not
            # beat its starting point (validation selects step 0) then adds nothing, rather than random evidence
            zeroed = [h for heads in self.expert_heads.values() for h in heads.values()]
            for head in (*zeroed, self.multiclass.net[-1], self.binary.net[-1], self.cox.linear):
                nn.init.zeros_(head.weight)
                if head.bias is not None:
                    nn.init.zeros_(head.bias)
        self.findings_heads = nn.ModuleDict({m: nn.Linear(widths[m], sum(levels))
                                             for m, levels in (config.findings or {}).items() if m in widths})
        # set by the trainer (tasks/training/experts.py): the experts summed, and whether the interaction runs
        self.active: tuple[str, ...] | None = None  # None: every expert
        self.interaction = True

    def presence(self, batch: dict) -> dict[str, torch.Tensor]:
        """modality -> (B,) bool for the modalities this model encodes and the batch carries."""
        mask = batch.get("mask")
        out = {}
        for m in self.inputs:
            if m not in batch:
                continue
            x = batch[m]
            if m == "demographics":
                out[m] = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
                continue
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
        binary_logit (B,), risk (B,) Cox log-risk; with the experts read-out also `evidence`: input -> that
        expert's class logits (B, C), and `expert_present`: input -> (B,) bool."""
        tokens, masks, present = self.encode(batch)
        if not self.experts:
            out = self.fusion(tokens, masks, self.modality_dropout(present))
            return {**out, **self.heads(out["fused"])}
        active = [m for m in (self.active or self.inputs) if m in tokens]
        if self.interaction:
            out = self.fusion(tokens, masks, present)
            total = self.heads(out["fused"])
            total = {k: total[k] for k in ("class_logits", "binary_logit", "risk")}
        else:  # training an expert (or reading the experts' sum alone): the fusion is not part of it
            b = next(iter(present.values())).shape[0]
            zero = next(self.parameters()).new_zeros(b)
            out = {"fused": zero.new_zeros(b, self.config.fusion.width), "pooled": {}, "unimodal": {},
                   "present": {}, "attention": {}}
            total = {"class_logits": zero.new_zeros(b, self.config.heads.n_classes), "binary_logit": zero,
                     "risk": zero}
        evidence, has = {}, {}
        for m in active:
            pooled = masked_mean(tokens[m], masks[m])  # (B, D_m)
            has[m] = present[m] & masks[m].any(1)
            w = has[m].to(pooled.dtype)
            heads = self.expert_heads[m]
            evidence[m] = heads["multiclass"](pooled) * w.unsqueeze(1)
            total["class_logits"] = total["class_logits"] + evidence[m]
            total["binary_logit"] = total["binary_logit"] + heads["binary"](pooled).squeeze(-1) * w
            total["risk"] = total["risk"] + heads["cox"](pooled).squeeze(-1) * w
        total["class_probs"] = total["class_logits"].softmax(-1)
        return {**out, **total, "evidence": evidence, "expert_present": has}

    def heads(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = self.multiclass(z)
        return {"class_logits": logits, "class_probs": logits.softmax(-1), "binary_logit": self.binary(z),
                "risk": self.cox(z)}

    def findings_losses(self, batch: dict) -> dict[str, torch.Tensor]:
        """Cross-entropy of each image modality's report-derived finding levels (`findings_<m>` (B, F) int64, -1 =
        not reported) from that modality's pooled encoder tokens: image pre-training without outcome labels."""
        losses = {}
        for m, head in self.findings_heads.items():
            target = batch.get(f"findings_{m}")
            if m not in batch or target is None:
                continue
            tokens, mask = self.encoders[m].encode(batch[m])
            present = self.presence(batch)[m]
            logits = head(masked_mean(tokens, mask))  # (B, sum(levels))
            target = torch.where(present.unsqueeze(1), target, torch.full_like(target, -1))
            losses[f"findings_{m}"] = findings_loss(logits, target, self.config.findings[m])
        return losses

    def pretrain_losses(self, batch: dict) -> dict[str, torch.Tensor]:
        """Report-finding prediction for the image encoders (when configured) + InfoNCE between every pair of present
        modalities and masked-modality modelling (when `contrastive`): for each sample with two or more modalities,
        drop one at random and predict its (pre-fusion) pooled embedding from the rest."""
        losses = self.findings_losses(batch)
        if self.config.contrastive:
            losses.update(self._contrastive_losses(batch))
        if not losses:
            losses["zero"] = sum(p.sum() for p in self.parameters() if p.requires_grad) * 0.0
        return {**losses, "loss": sum(losses.values())}

    def _contrastive_losses(self, batch: dict) -> dict[str, torch.Tensor]:
        tokens, masks, present = self.encode(batch)
        out = self.fusion(tokens, masks, self.modality_dropout(present))
        contrastive = info_nce(out["unimodal"], out["present"], self.config.temperature)
        names = list(out["unimodal"])
        has = torch.stack([out["present"][m] for m in names], 1)  # (B, M)
        valid = has.sum(1) >= 2
        drop = torch.multinomial(has.float() + 1e-9, 1).squeeze(1)  # (B,) a present modality when there is one
        dropped = torch.zeros_like(has).scatter_(1, drop.unsqueeze(1), True) & valid.unsqueeze(1)
        rest = self.fusion(tokens, masks, {m: has[:, i] & ~dropped[:, i] for i, m in enumerate(names)})
        query = self.mmm_query(torch.tensor([self.inputs.index(m) for m in names], device=has.device))[drop]
        pred = self.mmm_predictor(rest["fused"] + query)  # (B, W)
        target = torch.stack([out["unimodal"][m] for m in names], 1)[torch.arange(has.shape[0]), drop]  # (B, W)
        mmm = masked_modality_loss(pred, target, valid)
        return {"info_nce": contrastive, "masked_modality": mmm}

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
