"""A Bundle's entries as resources the rest of ingest can read: ids from `urn:uuid:` fullUrls, references by URL
rewritten to `Type/id`.

A transaction Bundle (what Synthea writes, and what many EHRs send for one patient) often gives its entries no `id`:
an entry is named by its `fullUrl`, `urn:uuid:<uuid>`, and the other entries refer to it by that URN
(`"subject": {"reference": "urn:uuid:..."}`). Read literally, every such entry has "no id" and every reference points
nowhere, so a whole patient's record would be quarantined. FHIR's rule (Bundle, "Resolving references in Bundles")
is that a reference matching an entry's fullUrl means that entry; so here an entry without an id takes the UUID of
its URN as id, and a reference equal to another entry's fullUrl (URN or absolute URL) becomes `Type/id`, the form
de-identification pseudonymises. Entries are copied, never changed in place; anything else is left as it is.
"""

from __future__ import annotations

import re
from typing import Any

URN_UUID = re.compile(r"urn:uuid:([0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12})")


def _named(entry: object) -> tuple[str | None, Any]:
    """(fullUrl, resource) of an entry, the resource given the URN's UUID as id when it has none."""
    if not isinstance(entry, dict):
        return None, None
    full, res = entry.get("fullUrl"), entry.get("resource")
    full = full if isinstance(full, str) and full else None
    if isinstance(res, dict) and not res.get("id") and full and (m := URN_UUID.fullmatch(full)):
        res = {**res, "id": m.group(1).lower()}
    return full, res


def _rewrite(value: Any, names: dict[str, str]) -> Any:
    """`value` with every `reference` naming an entry's fullUrl replaced by that entry's `Type/id`."""
    if isinstance(value, dict):
        out = {k: _rewrite(v, names) for k, v in value.items()}
        ref = value.get("reference")
        if isinstance(ref, str) and ref in names:
            out["reference"] = names[ref]
        return out
    if isinstance(value, list):
        return [_rewrite(v, names) for v in value]
    return value


def bundle_resources(entries: list) -> list[Any]:
    """The resource of each entry, in order (None where an entry holds none), references resolved within the Bundle.
    The caller judges each one (an entry that is not an object holding a resource is still its own input item)."""
    named = [_named(e) for e in entries]
    names = {full: f"{res['resourceType']}/{res['id']}" for full, res in named
             if full and isinstance(res, dict) and isinstance(res.get("resourceType"), str)
             and isinstance(res.get("id"), str) and res["id"] and "/" not in res["id"]
             and full != f"{res['resourceType']}/{res['id']}"}
    if not names:
        return [res for _, res in named]
    return [_rewrite(res, names) if isinstance(res, dict) else res for _, res in named]
