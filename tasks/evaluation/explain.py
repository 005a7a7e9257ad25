"""Explanations for reviewers: Grad-CAM heatmaps over the image towers and per-modality attention shares.

Grad-CAM explains the image alone: the wrapped model sees a batch where only that image modality is present, so
the map answers "which part of this image drives the class score", not how other modalities shift it (the
attention table covers that). MONAI's GradCAM does the hooks and the upsampling; this module supplies the wrapper,
the target layer and a normaliser (MONAI's default one maps max -> 0, i.e. inverts the map).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from monai.visualize import GradCAM
from torch import nn

from models.model import MODALITIES, MultimodalModel

IMAGE_MODALITIES = ("image_2d", "image_3d")


class _ImageOnly(nn.Module):
    """image (B, 1, *spatial) -> (B, 1) logit of each sample's target class, with only `modality` present.

    Returning the per-sample target logit (rather than all logits plus one class index) lets each sample in a batch
    be explained for its own predicted class: MONAI indexes `logits[:, class_idx]`, which with a (B,) index tensor
    would mix every sample's target into every sample's score.
    """

    def __init__(self, model: MultimodalModel, modality: str):
        super().__init__()
        self.model, self.modality = model, modality
        self.target: torch.Tensor | None = None  # (B,) class per sample; None = all logits (for the argmax pass)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        mask = torch.zeros(image.shape[0], len(MODALITIES), dtype=torch.bool, device=image.device)
        mask[:, MODALITIES.index(self.modality)] = True  # (B, 5): only this modality present
        logits = self.model({self.modality: image, "mask": mask})["class_logits"]  # (B, C)
        return logits if self.target is None else logits.gather(1, self.target.unsqueeze(1))  # (B, 1)


def target_layer(wrapper: nn.Module, modality: str) -> str:
    """Module path of the last convolution in `modality`'s encoder: the last layer whose output still has a spatial
    grid (the CNN's last block; for the ViT its patch projection, MONAI PatchEmbeddingBlock with proj_type="conv")."""
    prefix = f"model.encoders.{modality}."
    convs = [name for name, module in wrapper.named_modules()
             if name.startswith(prefix) and isinstance(module, nn.modules.conv._ConvNd)]
    if not convs:
        raise ValueError(f"no convolution in the {modality} encoder to attach Grad-CAM to")
    return convs[-1]


def _minmax(x: torch.Tensor) -> torch.Tensor:
    """Per-sample scaling to [0, 1], high = important; a flat map (no positive evidence) stays 0."""
    flat = x.reshape(x.shape[0], -1)
    lo, hi = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
    scaled = (flat - lo) / (hi - lo).clamp(min=1e-12)
    return torch.where(hi - lo > 1e-12, scaled, torch.zeros_like(scaled)).reshape(x.shape)


@contextmanager
def _temporary_hooks(module: nn.Module) -> Iterator[None]:
    """MONAI registers forward/backward hooks and keeps no handles; remove them after so the model is unchanged."""
    before = (set(module._forward_hooks), set(module._backward_hooks))
    try:
        yield
    finally:
        for hooks, kept in ((module._forward_hooks, before[0]), (module._backward_hooks, before[1])):
            for key in set(hooks) - kept:
                del hooks[key]


def gradcam(model: MultimodalModel, batch: dict, modality: str, class_idx: int | None = None) -> np.ndarray:
    """Grad-CAM for `batch[modality]` -> (B, *spatial) float array in [0, 1], upsampled to the image size.

    Args:
        model: a MultimodalModel whose config has `modality`. Its train/eval mode and parameters are left as found.
        batch: needs `batch[modality]` (B, 1, *spatial); other keys are ignored.
        modality: "image_2d" or "image_3d".
        class_idx: class to explain; None = each sample's predicted class (from the same image-only input).
    """
    if modality not in IMAGE_MODALITIES or modality not in model.modalities:
        raise ValueError(f"modality must be one of {IMAGE_MODALITIES} and encoded by the model, got {modality!r}")
    wrapper = _ImageOnly(model, modality)
    device = next(model.parameters()).device
    # requires_grad on the input so the hook fires even when the encoder is locked (frozen weights)
    image = torch.as_tensor(batch[modality], device=device).detach().float().clone().requires_grad_(True)
    layer = target_layer(wrapper, modality)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            logits = wrapper(image)  # (B, C)
        n = logits.shape[0]
        wrapper.target = (logits.argmax(1) if class_idx is None
                          else torch.full((n,), int(class_idx), dtype=torch.long, device=device))
        with _temporary_hooks(wrapper.get_submodule(layer)):
            cam = GradCAM(nn_module=wrapper, target_layers=layer, postprocessing=_minmax)
            out = cam(x=image, class_idx=0)  # (B, 1, *spatial); index 0 of the (B, 1) per-sample target logit
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    return out[:, 0].detach().cpu().numpy().astype(np.float32)


def _middle_slice(x: np.ndarray | torch.Tensor) -> np.ndarray:
    x = np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x, dtype=float).squeeze()
    if x.ndim == 3:
        x = x[x.shape[0] // 2]  # (Z, H, W) -> middle axial slice
    if x.ndim != 2:
        raise ValueError(f"expected (H, W) or (Z, H, W), got shape {x.shape}")
    return x


def save_gradcam_png(image: np.ndarray | torch.Tensor, cam: np.ndarray | torch.Tensor, path: str | Path) -> Path:
    """Grayscale image (H, W), or the middle slice of a volume (Z, H, W), with the Grad-CAM as a jet overlay."""
    img, heat = _middle_slice(image), _middle_slice(cam)
    lo, hi = np.nanpercentile(img, [1, 99])  # robust window: HU / raw pixel outliers would wash out the display
    fig = Figure(figsize=(3, 3))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(img, cmap="gray", vmin=lo, vmax=max(hi, lo + 1e-6))
    ax.imshow(heat, cmap="jet", alpha=0.4, vmin=0, vmax=1)
    ax.set_axis_off()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=100, format="png")
    return path


def _np(x) -> np.ndarray:
    return np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x)


def attention_table(patient_ids: Sequence[str], attention: dict, present: dict) -> list[dict]:
    """Rows {patient_id, modality, share, present}: the fused CLS token's attention share per modality (the
    "attention" and "present" entries of MultimodalModel's output). An absent modality gets share 0, present False.
    """
    names = [m for m in MODALITIES if m in attention or m in present]
    shares = {m: _np(attention[m]).astype(float) if m in attention else np.zeros(len(patient_ids)) for m in names}
    has = {m: _np(present[m]).astype(bool) if m in present else np.zeros(len(patient_ids), bool) for m in names}
    return [{"patient_id": pid, "modality": m, "share": float(shares[m][i]) if has[m][i] else 0.0,
             "present": bool(has[m][i])}
            for i, pid in enumerate(patient_ids) for m in names]
