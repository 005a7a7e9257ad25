"""UCUM units through a real UCUM library: ucumvert parses a UCUM code into a pint quantity, pint converts.

Why a library and not a factor table: a hospital export carries thousands of LOINC codes in hundreds of units, and
a hand-kept table is wrong or missing for most of them. The only knowledge kept by hand (data_contracts/labs.yaml) is
what UCUM itself cannot know: which unit a code is curated in, and a substance's molar mass, which is what makes a
mass concentration (mg/dL) and a substance concentration (mmol/L) of the same analyte commensurable.

Every UCUM conversion of a concentration, a count, a pressure or a temperature is affine (value * factor + offset),
so a conversion is derived once per (unit, target, molar mass) from the library and then applied as arithmetic;
a unit pair that is not affine (logarithmic units) is converted value by value.
"""

from __future__ import annotations

import math
from functools import cache

import pint
from ucumvert import PintUcumRegistry, UcumToPintTransformer, get_ucum_parser, parse_ucum

MAX_UNIT_LENGTH = 64  # a longer "unit" is text, not a UCUM code; not worth parsing


@cache
def _ucum() -> tuple[PintUcumRegistry, object, object]:
    """One registry for every quantity (pint refuses to mix registries); built once, it takes ~0.5 s."""
    registry = PintUcumRegistry()
    return registry, UcumToPintTransformer(ureg=registry).transform, get_ucum_parser()


@cache
def parse(unit: object) -> pint.Quantity | None:
    """The UCUM code `unit` as a pint quantity (a UCUM unit may carry a factor: 10*3/uL), None if it is not UCUM."""
    if not isinstance(unit, str) or not unit or len(unit) > MAX_UNIT_LENGTH or unit != unit.strip():
        return None
    _, transform, parser = _ucum()
    try:
        quantity = transform(parse_ucum(unit, parser))
    except Exception:  # noqa: BLE001 - lark and pint raise many types for a code that is not UCUM (or not in pint)
        return None
    return quantity if isinstance(quantity, pint.Quantity) else None


def _convert_exact(value: float, unit: str, target: str, molar_mass: float | None) -> float | None:
    registry = _ucum()[0]
    src, dst = parse(unit), parse(target)
    if src is None or dst is None:
        return None
    quantity = registry.Quantity(value * float(src.magnitude), src.units)
    try:
        if molar_mass:  # pint's chemistry context: [mass]/[volume] <-> [substance]/[volume] through mw
            out = quantity.to(dst.units, "chemistry", mw=registry.Quantity(molar_mass, "g/mol"))
        else:
            out = quantity.to(dst.units)
    except (pint.PintError, ArithmeticError, ValueError, TypeError):  # e.g. the chemistry context's volume=0 path
        return None
    return float(out.magnitude) / float(dst.magnitude)


@cache
def affine(unit: str, target: str, molar_mass: float | None = None) -> tuple[float, float] | None:
    """(factor, offset) with target = value * factor + offset; None when the units are not commensurable (or the
    conversion is not affine: `convert` then goes value by value)."""
    points = [_convert_exact(x, unit, target, molar_mass) for x in (0.0, 1.0, 10.0)]
    if any(p is None or not math.isfinite(p) for p in points):
        return None
    offset, factor = points[0], points[1] - points[0]
    if not math.isclose(points[2], 10.0 * factor + offset, rel_tol=1e-9, abs_tol=1e-12):
        return None
    offset = 0.0 if abs(offset) < 1e-12 * max(1.0, abs(factor)) else offset
    return _round(factor), _round(offset)  # 999.9999999999999 is 1000 (float noise of the library's path)


def _round(x: float) -> float:
    return float(f"{x:.15g}")


def commensurable(unit: str, target: str, molar_mass: float | None = None) -> bool:
    """Whether a value in `unit` can be expressed in `target` (both UCUM)."""
    return affine(unit, target, molar_mass) is not None or _convert_exact(1.0, unit, target, molar_mass) is not None


def convert(value: float, unit: str, target: str, molar_mass: float | None = None) -> float | None:
    """`value` in `unit` expressed in `target`; None when the units are not commensurable or not UCUM."""
    if unit == target:
        return float(value)
    linear = affine(unit, target, molar_mass)
    if linear is not None:
        return float(value) * linear[0] + linear[1]
    return _convert_exact(float(value), unit, target, molar_mass)
