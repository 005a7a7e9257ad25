"""Every key mmfm writes into MLflow (run tags, model-version tags, registered-model tags), in one namespace.

Why one module: the registry, the gate, the audit report and `mmfm audit verify` read what the stages wrote; a key
spelled twice is a key that one day differs. Read a tag as `tags.get(tag.DATASET_VERSION)`, write it likewise.
"""

from __future__ import annotations

NS = "mmfm."  # the namespace: nothing else in MLflow starts with it


def key(name: str) -> str:
    """`name` inside the namespace (`dataset_version` -> `mmfm.dataset_version`)."""
    return f"{NS}{name}"


def strip(tags: dict[str, str]) -> dict[str, str]:
    """Our tags without the namespace (other tools' tags dropped)."""
    return {k[len(NS):]: v for k, v in tags.items() if k.startswith(NS)}


# run tags (every training, evaluation and monitoring run)
STAGE = key("stage")
DATASET_VERSION = key("dataset_version")
CURATED_MD5 = key("curated_md5")
CONTRACT_VERSIONS = key("contract_versions")
CODE_VERSION = key("code_version")
INTERRUPTED = key("interrupted")  # a run a kill left open, closed as KILLED by the next run of its stage
TASK = key("task")
SPLIT = key("split")
BACKBONE_RUN_ID = key("backbone_run_id")
BACKBONE_SHA256 = key("backbone_sha256")
FINETUNE_RUN_ID = key("finetune_run_id")  # + ".<task>" on the evaluate run

# model-version and registered-model tags (the registry)
REGISTRATION = key("registration")  # "incomplete" from the version's creation, "complete" as its last write
PROMOTING = key("promoting.")  # + alias: a decision whose records are not all written yet
