"""Data contracts as data: one YAML per table in `contracts/`, and the model's input/output contract (model_io.yaml).

    contract = load_contracts()["labs"]          # Contract(table, version, key, columns, required, expectations)
    for e in contract.expectations:              # in file order: the order decides which rule a row is quarantined
        e.id, e.type, e.policy, e.args           # under when it breaks several

This module only reads and checks the declarations; tasks/validation/contracts.py compiles them to polars
expressions and to
Great Expectations suites. References to catalogues (`values_from`, `ranges_from`, `spec_from`) are resolved here,
at load time, so a compiled rule holds plain values and the compiler never reads a catalogue itself.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from data_contracts import lab_catalog

HERE = Path(__file__).parent
CONTRACTS_DIR = HERE / "contracts"
MODEL_IO = HERE / "model_io.yaml"
POLICIES = ("warn", "quarantine", "fail")
TYPES = ("schema", "not_null", "in_set", "between", "unique", "foreign_key", "temporal", "split_integrity", "tensor")
SEMVER = re.compile(r"^\d+\.\d+\.\d+$")
DTYPE = re.compile(r"^(String|Boolean|Float32|Float64|Int32|Int64|Date|Datetime|List\((String|Float64|Int64)\))$")
RESERVED = ("id", "type", "policy", "description")


class ContractError(ValueError):
    """A contract file that cannot be used: the message names the file and the rule."""


@dataclass(frozen=True)
class Expectation:
    """One rule: a stable id (quarantine records and reports name it), a type, its arguments and a policy."""

    id: str
    type: str
    policy: str  # warn: count and keep | quarantine: drop the failing rows | fail: block the batch
    args: dict[str, Any] = field(default_factory=dict, hash=False)
    description: str = ""


@dataclass(frozen=True)
class Contract:
    table: str
    version: str  # semver: bump minor for a new rule, major for a rule that rejects more than before
    key: tuple[str, ...]  # identifies a row in quarantine records (never the row's values)
    columns: dict[str, str] = field(hash=False)  # column -> polars dtype name
    required: tuple[str, ...]
    expectations: tuple[Expectation, ...]
    extra_columns: str | None = None  # dtype every undeclared column must have (omics feature columns); None: any

    def expectation(self, rule_id: str) -> Expectation:
        return next(e for e in self.expectations if e.id == rule_id)


# ------------------------------------------------------------------------------------------------ references
def _lab_reference(name: str) -> Any:
    """Catalogue look-ups a contract may name: `labs.loinc`, `labs.canonical_unit`, `labs.units`, `labs.plausible`."""
    labs = sorted(lab_catalog().values(), key=lambda lab: lab.loinc)
    table = {"labs.loinc": lambda: [lab.loinc for lab in labs],
             "labs.canonical_unit": lambda: {lab.loinc: [lab.canonical] for lab in labs},
             "labs.units": lambda: {lab.loinc: list(lab.units) for lab in labs},
             "labs.plausible": lambda: {lab.loinc: list(lab.plausible) for lab in labs}}
    if name not in table:
        raise KeyError(name)
    return table[name]()


def _resolve(args: dict[str, Any]) -> dict[str, Any]:
    out = dict(args)
    if "values_from" in out:
        ref = out.pop("values_from")
        out["values" if "by" not in out else "values_by"] = _lab_reference(ref)
        out["source"] = ref
    if "ranges_from" in out:
        ref = out.pop("ranges_from")
        out["ranges_by"] = _lab_reference(ref)
        out["source"] = ref
    if "spec_from" in out:  # the image tensor contract is the model's: one declaration, in model_io.yaml
        ref = out.pop("spec_from")
        if ref != "model_io.inputs":
            raise KeyError(ref)
        out["families"] = load_model_io().images()
        out["source"] = ref
    if "values" in out and isinstance(out["values"], dict):
        out["values_by"] = out.pop("values")
    return out


# ------------------------------------------------------------------------------------------------ checks
def _check_expectation(raw: dict, where: str) -> Expectation:
    rule = raw.get("id")
    if not isinstance(rule, str) or not rule:
        raise ContractError(f"{where}: an expectation has no id")
    if raw.get("type") not in TYPES:
        raise ContractError(f"{where}: rule {rule}: type must be one of {', '.join(TYPES)}")
    if raw.get("policy") not in POLICIES:
        raise ContractError(f"{where}: rule {rule}: policy must be one of {', '.join(POLICIES)}")
    if raw["type"] == "schema" and raw["policy"] != "fail":
        raise ContractError(f"{where}: rule {rule}: a schema rule's policy is fail (no other rule can run without it)")
    args = {k: v for k, v in raw.items() if k not in RESERVED}
    try:
        args = _resolve(args)
    except KeyError as exc:
        raise ContractError(f"{where}: rule {rule}: unknown reference {exc}") from None
    needs = {"not_null": ("column",), "in_set": ("column",), "between": ("column",), "unique": ("columns",),
             "foreign_key": ("column", "references"), "temporal": ("column",)}.get(raw["type"], ())
    missing = [a for a in needs if a not in args]
    if missing:
        raise ContractError(f"{where}: rule {rule}: missing argument(s) {', '.join(missing)}")
    return Expectation(rule, raw["type"], raw["policy"], args, str(raw.get("description", "")).strip())


def parse_contract(raw: dict, where: str = "<contract>") -> Contract:
    """A checked Contract from the parsed YAML; ContractError names the file and the rule at fault."""
    version = str(raw.get("version", ""))
    if not SEMVER.match(version):
        raise ContractError(f"{where}: version must be a semver string like '1.0.0'")
    columns = {str(c): str(t) for c, t in (raw.get("columns") or {}).items()}
    bad = [f"{c}: {t}" for c, t in columns.items() if not DTYPE.match(t)]
    if bad:
        raise ContractError(f"{where}: unknown dtype(s) {', '.join(bad)}")
    required = tuple(raw.get("required") or ())
    if not set(required) <= set(columns):
        raise ContractError(f"{where}: required columns must be declared under columns")
    expectations = tuple(_check_expectation(e, where) for e in raw.get("expectations") or ())
    ids = [e.id for e in expectations]
    if len(ids) != len(set(ids)):
        raise ContractError(f"{where}: rule ids must be unique within a contract")
    return Contract(table=str(raw["table"]), version=version, key=tuple(raw.get("key") or ()), columns=columns,
                    required=required, expectations=expectations, extra_columns=raw.get("extra_columns"))


@cache
def _load_dir(directory: Path) -> dict[str, Contract]:
    out = {}
    for path in sorted(directory.glob("*.yaml")):
        contract = parse_contract(yaml.safe_load(path.read_text()), where=str(path))
        if contract.table in out:
            raise ContractError(f"{path}: a second contract for table {contract.table}")
        out[contract.table] = contract
    return out


def load_contracts(directory: Path | str | None = None) -> dict[str, Contract]:
    """Every contract of `directory` (default: data_contracts/contracts), keyed by table."""
    return _load_dir(Path(directory or CONTRACTS_DIR).resolve())


# ------------------------------------------------------------------------------------------------ model I/O
@dataclass(frozen=True)
class TensorSpec:
    """One named tensor of the model's interface; shapes exclude the batch dimension, None is any size."""

    name: str
    shape: tuple[int | None, ...]
    dtype: str
    value_range: dict[str, tuple[float | None, float | None]] = field(default_factory=dict, hash=False)
    modalities: tuple[str, ...] = ()  # image families: the DICOM modalities they take
    index_shape: tuple[int | None, ...] | None = None  # image families: shape as the imaging index records it
    spacing: tuple[float, ...] | None = None
    extra: dict[str, Any] = field(default_factory=dict, hash=False)  # sum_to, atol, finite, ...


@dataclass(frozen=True)
class ModelIO:
    version: str
    modalities: tuple[str, ...]  # order of the missing-modality mask's columns
    inputs: dict[str, TensorSpec] = field(hash=False)
    outputs: dict[str, TensorSpec] = field(hash=False)

    def images(self) -> dict[str, dict]:
        """Image families as the imaging contract's tensor rule takes them (plain values)."""
        return {n: {"modalities": list(s.modalities), "index_shape": list(s.index_shape or s.shape),
                    "dtype": s.dtype, "spacing": list(s.spacing) if s.spacing else None,
                    "value_range": {m: list(r) for m, r in s.value_range.items()}}
                for n, s in self.inputs.items() if s.modalities}


def _range(value: Any) -> dict[str, tuple[float | None, float | None]]:
    if value is None:
        return {}
    if isinstance(value, list):  # one range for the whole tensor
        return {"*": (value[0], value[1])}
    return {k: (v[0], v[1]) for k, v in value.items()}


def _tensor(name: str, raw: dict) -> TensorSpec:
    known = {"shape", "dtype", "value_range", "modalities", "index_shape", "spacing"}
    return TensorSpec(name=name, shape=tuple(raw["shape"]), dtype=str(raw["dtype"]),
                      value_range=_range(raw.get("value_range")), modalities=tuple(raw.get("modalities") or ()),
                      index_shape=tuple(raw["index_shape"]) if raw.get("index_shape") else None,
                      spacing=tuple(raw["spacing"]) if raw.get("spacing") else None,
                      extra={k: v for k, v in raw.items() if k not in known})


@cache
def load_model_io(path: Path | str | None = None) -> ModelIO:
    """The model input/output contract (model_io.yaml): what enters `encode()` and what the heads return."""
    where = Path(path or MODEL_IO)
    raw = yaml.safe_load(where.read_text())
    if not SEMVER.match(str(raw.get("version", ""))):
        raise ContractError(f"{where}: version must be a semver string like '1.0.0'")
    return ModelIO(version=str(raw["version"]), modalities=tuple(raw["modalities"]),
                   inputs={n: _tensor(n, s) for n, s in raw["inputs"].items()},
                   outputs={n: _tensor(n, s) for n, s in raw["outputs"].items()})
