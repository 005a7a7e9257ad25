"""Burned-in text in pixels: an OCR screen (Tesseract) for images whose header does not admit to text.

Why: the header screen (dicom.burned_in_reasons) trusts BurnedInAnnotation, the modality and the SOP class, but a
name typed onto a CR plate, or a screen capture filed as CR, says nothing there. Images of the modalities and SOP
classes at risk (deid.yaml burned_in.ocr, plus the burned-in lists; dicom.ocr_reasons) are read here, up to
max_frames frames each, and one word read with confidence is enough to quarantine the image.

Fail closed: no Tesseract, a crash or a timeout quarantines the image (`ocr_unavailable`), never passes it. What OCR
read is never kept: a screen names its rule and the frame, nothing else.

    req = request(ds, frames)            # None: not at risk
    [verdict] = screen([req])            # verdict.rule None: no text; else quarantine under dicom.<rule>

`screen` reads the pages of many images in one Tesseract call: starting Tesseract (~80 ms, the model load) is most
of what a small page costs, and a call's pages are read independently (same words as one call per page).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytesseract
from PIL import Image
from pydicom.dataset import Dataset
from scipy import ndimage

from data_contracts.deid import DeidConfig, OcrRules, default_config
from tasks.deid.dicom import ocr_reasons

log = logging.getLogger(__name__)
TEXT = "burned_in_text"
UNAVAILABLE = "ocr_unavailable"
TESSERACT_CONFIG = "--psm 11"  # sparse text: annotations sit in corners and margins, not in paragraphs
PAGES_PER_CALL = 64  # bounds one call's time and temporary files


@dataclass
class PixelRequest:
    """An image at risk, ready to read: `pages` maps a frame index to its page (frames without strokes have none)."""

    why: tuple[str, ...]  # the at-risk reasons: modality / SOP class rule names
    pages: dict[int, Image.Image] = field(default_factory=dict)


@dataclass(frozen=True)
class PixelScreen:
    """One image's verdict. `rule` None: no text read. `detail` says why without values; `seconds` is its share of
    OCR time (the call's time split over its pages)."""

    why: tuple[str, ...]
    rule: str | None = None
    frame: int | None = None
    detail: str = ""
    pages_read: int = 0
    seconds: float = 0.0

    @property
    def reason(self) -> str | None:
        """The de-identification report's burned-in reason, distinct from the header's."""
        if self.rule == TEXT:
            return f"ocr_text:frame={self.frame}"
        return "ocr_unavailable" if self.rule == UNAVAILABLE else None

    @property
    def message(self) -> str:
        screened = f"(OCR screen: {', '.join(self.why)})"
        if self.rule == TEXT:
            return f"text read in the pixels of frame {self.frame} {screened}"
        return f"pixels could not be screened for text: {self.detail} {screened}"


def request(ds: Dataset, frames: np.ndarray, config: DeidConfig | None = None) -> PixelRequest | None:
    """The pages to read if the header puts the image at risk, else None. `frames`: (rows, cols) or (n, rows, cols),
    monochrome, any numeric dtype (decoded values, modality LUT applied or not)."""
    config = config or default_config()
    why = ocr_reasons(ds, config)
    if not why:
        return None
    rules, frames = config.burned_in.ocr, np.asarray(frames)
    frames = frames[None] if frames.ndim == 2 else frames
    if str(ds.get("PhotometricInterpretation", "")).strip().upper() == "MONOCHROME1":
        frames = -frames.astype(np.float32)  # displayed white is stored low: the screen looks for bright strokes
    picked = np.unique(np.linspace(0, len(frames) - 1, min(len(frames), rules.max_frames)).round().astype(int))
    pages = {i: page for i in picked.tolist() if (page := to_page(frames[i], rules)) is not None}
    return PixelRequest(why, pages)


def screen(requests: list[PixelRequest], config: DeidConfig | None = None) -> list[PixelScreen]:
    """One verdict per request: the first frame (in index order) where a word is read, else clean. Every request is
    quarantined as `ocr_unavailable` when Tesseract is missing, and those of a call that fails when one does."""
    rules = (config or default_config()).burned_in.ocr
    if requests and shutil.which(pytesseract.pytesseract.tesseract_cmd) is None:
        log.warning("OCR screen: Tesseract is not installed; %d images at risk quarantined", len(requests))
        return [PixelScreen(r.why, UNAVAILABLE, detail="Tesseract is not installed (apt-get install tesseract-ocr)")
                for r in requests]
    pages = [(n, frame, page) for n, r in enumerate(requests) for frame, page in sorted(r.pages.items())]
    found: dict[int, int] = {}  # request -> first frame with text
    failed: dict[int, str] = {}
    seconds = [0.0] * len(requests)
    for start in range(0, len(pages), PAGES_PER_CALL):
        chunk = pages[start: start + PAGES_PER_CALL]
        began = time.perf_counter()
        try:
            hits = read_pages([page for _, _, page in chunk], rules)
        except Exception as exc:  # fail closed, naming the kind of failure only (stderr may quote anything)
            hits, detail = [], _failure(exc)
            log.warning("OCR screen failed for %d pages: %s", len(chunk), detail)
            failed.update({n: detail for n, _, _ in chunk})
        for (n, frame, _), hit in zip(chunk, hits, strict=False):
            if hit and n not in found:
                found[n] = frame
        for n, _, _ in chunk:
            seconds[n] += (time.perf_counter() - began) / len(chunk)
    return [_verdict(r, found.get(n), failed.get(n), seconds[n]) for n, r in enumerate(requests)]


def _verdict(req: PixelRequest, frame: int | None, failure: str | None, seconds: float) -> PixelScreen:
    if failure is not None:
        return PixelScreen(req.why, UNAVAILABLE, detail=failure, pages_read=len(req.pages), seconds=seconds)
    if frame is not None:
        return PixelScreen(req.why, TEXT, frame, pages_read=len(req.pages), seconds=seconds)
    return PixelScreen(req.why, pages_read=len(req.pages), seconds=seconds)


def to_page(frame: np.ndarray, rules: OcrRules) -> Image.Image | None:
    """The 8-bit page Tesseract reads: black strokes on white, or None when the frame has none (nothing to read).

    Values to 0..255 (min-max), scaled by rules.upscale (glyphs ~10 px tall read poorly) within rules.max_side, then a
    white top-hat keeps only what is brighter than its surroundings and thinner than rules.stroke_size: glyph
    strokes stay, anatomy (smooth, or wider) goes, so text over a lung reads like text on paper. Strokes standing
    less than rules.min_contrast of the range above their surroundings are noise and go too.
    """
    values = np.asarray(frame, dtype=np.float32)
    lo, hi = (float(np.nanmin(values)), float(np.nanmax(values))) if values.size else (0.0, 0.0)
    if not (np.isfinite(lo) and np.isfinite(hi)) or hi <= lo:
        return None  # flat, empty or non-finite: no text to read (decoded pixels are finite)
    image = Image.fromarray(np.nan_to_num((values - lo) * (255.0 / (hi - lo)), nan=0.0).astype(np.float32), mode="F")
    scale = min(rules.upscale, rules.max_side / max(image.size))
    if scale != 1.0:
        image = image.resize(tuple(max(1, round(n * scale)) for n in image.size), Image.Resampling.BILINEAR)
    gray = np.rint(np.clip(np.asarray(image), 0.0, 255.0)).astype(np.uint8)  # 8-bit from here on
    strokes = ndimage.white_tophat(gray, size=rules.stroke_size) >= rules.min_contrast * 255.0
    if not strokes.any():
        return None
    return Image.fromarray(np.where(strokes, 0, 255).astype(np.uint8))


def read_pages(pages: list[Image.Image], rules: OcrRules) -> list[bool]:
    """One Tesseract call over `pages` (a list file: each page read on its own): per page, is there a word of at
    least min_chars letters/digits read with confidence >= min_confidence? Raises whatever Tesseract raises."""
    if not pages:
        return []
    with tempfile.TemporaryDirectory(prefix="mmfm-ocr-") as tmp:
        names = []
        for i, page in enumerate(pages):
            names.append(str(Path(tmp) / f"{i:04d}.png"))
            page.save(names[-1])
        listing = Path(tmp) / "pages.txt"
        listing.write_text("\n".join(names) + "\n")
        data = pytesseract.image_to_data(str(listing), config=TESSERACT_CONFIG, output_type=pytesseract.Output.DICT,
                                         timeout=rules.timeout_s * len(pages))
    hits = [False] * len(pages)
    for page, word, confidence in zip(data["page_num"], data["text"], data["conf"], strict=True):
        if float(confidence) >= rules.min_confidence and sum(c.isalnum() for c in str(word)) >= rules.min_chars:
            hits[int(page) - 1] = True
    return hits


def _failure(exc: Exception) -> str:
    if isinstance(exc, pytesseract.TesseractNotFoundError):
        return "Tesseract is not installed (apt-get install tesseract-ocr)"
    if isinstance(exc, RuntimeError) and "timeout" in str(exc).lower():
        return "Tesseract did not finish within burned_in.ocr.timeout_s per page"
    return f"Tesseract failed ({type(exc).__name__})"
