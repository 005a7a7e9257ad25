"""Training: curated tables to model batches (data_contracts/model_io.yaml), the training loop with exact resume,
DDP under torchrun, and the pretrain / finetune stages' work.

    curated_dataset  curated tables -> one item per patient; collate pads      split_data  a split held in memory
    loop, fit        steps, checkpoints, model selection                        ddp         torchrun ranks (gloo/nccl)
    bundle           backbone / adapter artifacts (config + weights + meta)     backbone, adapters  the stages' work
"""

from __future__ import annotations

from tasks.training.curated_dataset import CuratedDataset, DatasetConfig, collate, model_inputs

__all__ = ["CuratedDataset", "DatasetConfig", "collate", "model_inputs"]
