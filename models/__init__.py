"""Torch modules of the multimodal foundation model: encoders per modality, fusion, heads, adapters, losses.

Imports torch, MONAI, transformers and peft only: never Prefect, MLflow or DVC.
"""
