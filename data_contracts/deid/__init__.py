"""The de-identification contract: PS3.15 Table E.1-1 as data (confidentiality_profile.csv) and our policy on top
of it (deid.yaml). Loaders only read the files beside them; tasks/deid applies them.

Keeping the table as data means a new edition of the standard is a regenerated CSV (build_table.py) reviewed as a
diff, not an edit scattered through code.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import yaml

HERE = Path(__file__).parent
ACTIONS = {"X", "Z", "D", "U", "K", "C", "X/Z", "X/D", "X/Z/D", "Z/D", "X/Z/U*"}
RESOLVED = {"X", "Z", "D", "U", "U*", "K", "C"}
SPECIAL = {"pseudonym", "age_cap"}


@dataclass(frozen=True)
class ProfileRule:
    """One row of Table E.1-1: the basic-profile action and the modified-dates option's action ('' or 'C')."""

    tag: str  # "(0010,0010)" or a repeating group such as "(60xx,3000)"
    name: str
    keyword: str
    basic: str
    modified_dates: str

    @property
    def label(self) -> str:
        """What counts and reports call this attribute: its keyword, else its tag (never a value)."""
        return self.keyword or self.tag


@dataclass(frozen=True)
class ProfileTable:
    """Table E.1-1 indexed for lookup by integer tag; repeating groups (50xx, 60xx) matched by mask."""

    edition: str
    rules: dict[int, ProfileRule]
    masked: tuple[tuple[int, int, ProfileRule], ...]  # (mask, value, rule): tag & mask == value

    def lookup(self, tag: int) -> ProfileRule | None:
        rule = self.rules.get(tag)
        if rule is not None:
            return rule
        for mask, value, masked_rule in self.masked:
            if tag & mask == value:
                return masked_rule
        return None

    def __len__(self) -> int:
        return len(self.rules) + len(self.masked)


@dataclass(frozen=True)
class PrivateSafeEntry:
    """A private attribute known to carry no PHI, identified as the standard's Retain Safe Private option does."""

    group: int
    creator: str
    element: int  # low byte of the element number within the creator's block
    why: str = ""


@dataclass(frozen=True)
class OcrRules:
    """The pixel screen (tasks/deid/pixels.py): which images are OCR'd, and what OCR output counts as text.

    Header flags only catch text a modality declares; a radiograph with a name typed onto the plate says nothing, so
    images of the modalities / SOP classes here (besides those BurnedInRules flags) are read by Tesseract."""

    modalities: frozenset[str] = frozenset()
    sop_classes: dict[str, str] = field(default_factory=dict)
    min_confidence: float = 50.0  # Tesseract word confidence (0-100) at or above which a word counts
    min_chars: int = 3  # letters and digits a word needs to count ("L"/"R" side markers are not PHI)
    upscale: float = 2.0  # the image Tesseract reads: this much bigger (small glyphs read better) ...
    max_side: int = 1024  # ... but its longest side no more than this (a 3000-pixel plate costs what 1024 does)
    stroke_size: int = 9  # pixels (at that scale): strokes thinner than this are what the screen looks for
    min_contrast: float = 0.15  # a stroke's brightness over its surroundings, as a fraction of the image's range
    max_frames: int = 3  # frames of a multi-frame image read: evenly spaced, first and last included
    timeout_s: float = 30.0  # per page read; past it the pages of the call are quarantined, not passed


@dataclass(frozen=True)
class BurnedInRules:
    sop_classes: dict[str, str]
    modalities: frozenset[str]
    conversion_types: frozenset[str]
    image_type_values: frozenset[str]
    ocr: OcrRules = field(default_factory=OcrRules)


@dataclass(frozen=True)
class StagedImagingRules:
    """What of a de-identified header may reach data/staged/imaging: coded values from these lists only.

    The profile keeps Manufacturer, model name and body part (PS3.15 retains them), but they are free text a site
    can fill with anything; a table is not the place to find out what."""

    modalities: frozenset[str] = frozenset()  # PS3.3 C.7.3.1.1.1 defined terms; anything else becomes OT
    body_parts: frozenset[str] = frozenset()  # PS3.16 Annex L defined terms; anything else becomes null
    manufacturers: dict[str, str] = field(default_factory=dict)  # upper-case name -> name kept; else a keyed token
    model_names: dict[str, str] = field(default_factory=dict)  # as manufacturers


def _names(values: list | None) -> dict[str, str]:
    """Allow-listed names, looked up case- and space-insensitively: normalised form -> the spelling kept."""
    return {" ".join(str(v).upper().split()): str(v) for v in values or []}


@dataclass(frozen=True)
class DeidConfig:
    """Everything tasks/deid needs to decide an action; built from deid.yaml + the table, or by tests."""

    version: int
    table: ProfileTable
    combo_resolution: dict[str, str]
    overrides: dict[str, str]
    private_safe_list: tuple[PrivateSafeEntry, ...]
    uid_keep_keyword_patterns: tuple[re.Pattern[str], ...]
    burned_in: BurnedInRules
    fhir_extension_safe_list: frozenset[str] = field(default_factory=frozenset)
    staged_imaging: StagedImagingRules = field(default_factory=StagedImagingRules)

    def resolve(self, action: str) -> str:
        """Table action (possibly a combination such as X/Z/D) -> the single action we apply."""
        return self.combo_resolution.get(action, action)

    @property
    def method_label(self) -> str:
        return f"mmfm deid v{self.version}, PS3.15 {self.table.edition}"


def parse_tag(text: str) -> tuple[int, int]:
    """'(0010,0010)' -> (mask, value); 'x' digits of a repeating group are wildcards (mask nibble 0)."""
    digits = text.strip("()").replace(",", "")
    if len(digits) != 8 or not re.fullmatch(r"[0-9A-Fa-fx]{8}", digits):
        raise ValueError(f"malformed tag in confidentiality table: {text!r}")
    mask = int("".join("0" if c == "x" else "F" for c in digits), 16)
    return mask, int(digits.replace("x", "0"), 16)


def load_table(path: Path | None = None) -> ProfileTable:
    """Read confidentiality_profile.csv; the edition comes from its header comment."""
    path = path or HERE / "confidentiality_profile.csv"
    lines = path.read_text().splitlines()
    edition = next((ln.split(":", 1)[1].split()[0] for ln in lines if ln.startswith("# edition:")), "unknown")
    rules: dict[int, ProfileRule] = {}
    masked: list[tuple[int, int, ProfileRule]] = []
    for row in csv.DictReader(ln for ln in lines if not ln.startswith("#")):
        rule = ProfileRule(row["tag"], row["name"], row["keyword"], row["basic_profile"], row["rtn_long_modif_dates"])
        if rule.basic not in ACTIONS or rule.modified_dates not in {"", "C"}:
            raise ValueError(f"unknown action for {rule.tag} in {path.name}")
        mask, value = parse_tag(rule.tag)
        if mask == 0xFFFFFFFF:
            rules[value] = rule
        else:
            masked.append((mask, value, rule))
    return ProfileTable(edition=edition, rules=rules, masked=tuple(masked))


def _private_entry(raw: dict) -> PrivateSafeEntry:
    return PrivateSafeEntry(group=int(str(raw["group"]), 16), creator=str(raw["creator"]).strip(),
                            element=int(str(raw["element"]), 16), why=str(raw.get("why", "")))


def load_config(path: Path | None = None, table: ProfileTable | None = None) -> DeidConfig:
    """Read deid.yaml (and the table it names) into a DeidConfig, validating every action it mentions."""
    path = path or HERE / "deid.yaml"
    raw = yaml.safe_load(path.read_text())
    combos = {str(k): str(v) for k, v in raw["combo_resolution"].items()}
    overrides = {str(k): str(v) for k, v in raw["overrides"].items()}
    if not set(combos.values()) <= RESOLVED or not set(overrides.values()) <= SPECIAL:
        raise ValueError(f"unknown action in {path.name}")
    burned = raw["burned_in"]
    return DeidConfig(
        version=int(raw["version"]),
        table=table or load_table(path.parent / raw["table"]),
        combo_resolution=combos,
        overrides=overrides,
        private_safe_list=tuple(_private_entry(e) for e in raw.get("private_safe_list") or []),
        uid_keep_keyword_patterns=tuple(re.compile(p) for p in raw["uid_keep_keyword_patterns"]),
        burned_in=BurnedInRules(
            sop_classes={str(k): str(v) for k, v in burned["sop_classes"].items()},
            modalities=frozenset(burned["modalities"]),
            conversion_types=frozenset(burned["conversion_types"]),
            image_type_values=frozenset(v.upper() for v in burned["image_type_values"]),
            ocr=_ocr_rules(burned.get("ocr") or {})),
        fhir_extension_safe_list=frozenset(raw.get("fhir_extension_safe_list") or []),
        staged_imaging=_staged_rules(raw.get("staged_imaging") or {}),
    )


OCR_NUMBERS = {"min_confidence": float, "min_chars": int, "upscale": float, "max_side": int, "stroke_size": int,
               "min_contrast": float, "max_frames": int, "timeout_s": float}


def _ocr_rules(raw: dict) -> OcrRules:
    rules = OcrRules(modalities=frozenset(str(m).upper() for m in raw.get("modalities") or []),
                     sop_classes={str(k): str(v) for k, v in (raw.get("sop_classes") or {}).items()},
                     **{k: kind(raw[k]) for k, kind in OCR_NUMBERS.items() if k in raw})
    if min(getattr(rules, k) for k in OCR_NUMBERS if k != "min_confidence") <= 0:
        raise ValueError(f"burned_in.ocr: {', '.join(k for k in OCR_NUMBERS if k != 'min_confidence')} must be > 0")
    return rules


def _staged_rules(raw: dict) -> StagedImagingRules:
    return StagedImagingRules(modalities=frozenset(str(m).upper() for m in raw.get("modalities") or []),
                              body_parts=frozenset(str(b).upper() for b in raw.get("body_parts") or []),
                              manufacturers=_names(raw.get("manufacturers")),
                              model_names=_names(raw.get("model_names")))


@cache
def default_config() -> DeidConfig:
    """The shipped policy, read once per process."""
    return load_config()
