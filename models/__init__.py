"""Torch modules of the multimodal foundation model: encoders per modality, fusion, heads, losses,
named configs (configs/*.json, factory.create_model). LoRA adapters are peft's, applied in tasks/training.

Imports torch, MONAI, transformers and peft only: never Prefect, MLflow or DVC.
"""
