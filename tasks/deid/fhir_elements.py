"""FHIR R4 element names and resource type names that are safe to quote, read from the R4B models of fhir.resources.

A message, a location or a report label may say *where* something is (`Patient.name.given`), never what it holds.
But a JSON key is input too: a sender can put a name or an MRN where an element name belongs, and a resourceType
value can be any string. So a path is quoted element by element only as far as the FHIR model defines it; anything
else reads `<unknown-element>`, and a type name is quoted only when FHIR defines that resource type.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache

UNKNOWN = "<unknown-element>"
TYPE_NAME = re.compile(r"[A-Z][A-Za-z]{1,63}")
NESTED = re.compile(r"abc\.(\w+?)Type\b")  # how fhir.resources annotates an element of a complex type


@lru_cache(maxsize=512)
def _model(name: str) -> type | None:
    """The R4B model class called `name`, or None (fhir.resources is imported here, lazily: it is slow)."""
    if not TYPE_NAME.fullmatch(name) and name != "FHIRPrimitiveExtension":
        return None
    from fhir.resources.R4B import get_fhir_model_class

    try:
        return get_fhir_model_class(name)
    except (ValueError, AttributeError, ImportError):
        return None


@lru_cache(maxsize=1024)
def _elements(cls: type) -> dict[str, str | None]:
    """Element name (JSON key) -> the model name of its type (None for a primitive or any resource)."""
    out: dict[str, str | None] = {}
    for name, info in cls.model_fields.items():
        nested = NESTED.search(str(info.annotation))
        kind = nested[1] if nested else None
        out[info.alias or name] = None if kind in (None, "Resource") else kind
    return out


def is_resource_type(name: object) -> bool:
    """Whether `name` is a resource type FHIR R4 defines (Patient, MedicationRequest, ...), not just type-shaped."""
    if not isinstance(name, str) or not TYPE_NAME.fullmatch(name):
        return False
    cls, resource = _model(name), _model("Resource")
    return cls is not None and resource is not None and issubclass(cls, resource)


def type_label(name: object) -> str:
    """A resourceType fit to quote: the FHIR type name, else a placeholder (the value is input)."""
    return name if is_resource_type(name) else "(not a FHIR resource type)"  # type: ignore[return-value]


def element_path(resource_type: str, parts: Iterable[str | int]) -> str:
    """`Type.elem.elem` for a path inside a resource: list indexes are kept, element names are quoted while the
    model defines them; from the first name it does not define, the rest of the path reads `<unknown-element>`."""
    cls = _model(resource_type) if is_resource_type(resource_type) else None
    out = [resource_type if cls is not None else "(resource)"]
    for part in parts:
        if isinstance(part, int):
            out[-1] += f"[{part}]"
            continue
        elements = _elements(cls) if cls is not None else {}
        if part not in elements:
            out.append(UNKNOWN)
            break
        out.append(part)
        nested = elements[part]
        cls = _model(nested) if nested else None
    return ".".join(out)


@lru_cache(maxsize=4096)
def dotted_label(path: str) -> str:
    """`element_path` of a dotted path as the de-identification walk builds it (`Patient.name.given`)."""
    head, *rest = path.split(".")
    return element_path(head, rest)
