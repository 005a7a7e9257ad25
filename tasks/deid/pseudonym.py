"""Keyed pseudonyms: the one place where identities become stable, unlinkable-without-the-key tokens.

Everything is HMAC-SHA256 under one secret key, with a distinct domain label per kind of token so that, say, a UID
and an MRN that happen to be the same string never map to the same output. Without the key nothing can be
recomputed or reversed; with it, the same input always gives the same output, which is what lets DICOM, FHIR and
notes of one patient join, and a re-run of ingest reproduce the same curated tables.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field

from tasks.deid.errors import PseudonymKeyError
from tasks.settings import Settings, get_settings

KEY_ENV = "MMFM_PSEUDONYM_KEY"  # read by tasks.settings (Settings.pseudonym_key); named here for error messages
MIN_KEY_BYTES = 32  # 256 bits: HMAC-SHA256's block of security; shorter keys are brute-forceable over MRN space
MIN_OFFSET_DAYS, MAX_OFFSET_DAYS = 365, 3650  # shift back between one and ten years, never zero
UID_ROOT = "2.25."  # ISO/IEC 9834-8: UUID-derived UIDs need no registered root
UID_BITS = 128  # 39 decimal digits at most: "2.25." + 39 = 44 characters, well under 64


def _check_key(key: bytes) -> bytes:
    if not isinstance(key, bytes | bytearray):
        raise PseudonymKeyError("pseudonym key must be bytes (read MMFM_PSEUDONYM_KEY and encode it)")
    if len(key) < MIN_KEY_BYTES:
        raise PseudonymKeyError(
            f"pseudonym key is empty or too short: need at least {MIN_KEY_BYTES} bytes; set {KEY_ENV} to a "
            f"random secret (e.g. `python -c 'import secrets; print(secrets.token_hex(32))'`)")
    return bytes(key)


def key_from_settings(settings: Settings | None = None) -> bytes:
    """The secret key as bytes (UTF-8 of the value) from Settings.pseudonym_key, i.e. MMFM_PSEUDONYM_KEY;
    refuses a missing or short one. The error names the variable and the rule, never the value."""
    secret = (settings or get_settings()).pseudonym_key
    return _check_key(secret.get_secret_value().encode("utf-8") if secret is not None else b"")


@dataclass(frozen=True)
class Pseudonymizer:
    """All keyed mappings of one deployment. Construct once per run from `key_from_settings()`, pass it around.

    The key is excluded from repr and comparison so it never lands in a log line or a traceback.
    """

    key: bytes = field(repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", _check_key(self.key))

    def digest(self, domain: str, *parts: str) -> bytes:
        """HMAC of the parts, NUL-separated so ('ab', 'c') and ('a', 'bc') differ."""
        message = "\x00".join((domain, *parts)).encode("utf-8")
        return hmac.new(self.key, message, hashlib.sha256).digest()

    def patient(self, site: str, mrn: str) -> str:
        """Patient pseudonym from (site, MRN): 'P' + 20 hex digits (80 bits, collision-free at any cohort size)."""
        return "P" + self.digest("patient", site.strip(), mrn.strip()).hex()[:20]

    def date_offset_days(self, patient_pseudonym: str) -> int:
        """Per-patient date shift in days, in [-3650, -365]: derived from the pseudonym so every modality agrees."""
        span = MAX_OFFSET_DAYS - MIN_OFFSET_DAYS + 1
        value = int.from_bytes(self.digest("date-offset", patient_pseudonym)[:8], "big")
        return -(MIN_OFFSET_DAYS + value % span)

    def uid(self, uid: str) -> str:
        """Replacement UID '2.25.<int>' (<= 64 chars): same input UID, same output, across files and studies."""
        value = int.from_bytes(self.digest("uid", uid.strip().rstrip("\x00"))[: UID_BITS // 8], "big")
        return f"{UID_ROOT}{value}"  # at most 44 characters

    def resource_id(self, site: str, resource_type: str, resource_id: str) -> str:
        """FHIR logical id for a non-Patient resource: 32 hex digits, scoped by site (ids are per server)."""
        return self.digest("fhir-id", site.strip(), resource_type, resource_id).hex()[:32]

    def identifier(self, site: str, system: str, value: str) -> str:
        """Opaque replacement for a business identifier (visit number, accession, order number)."""
        return "I" + self.digest("identifier", site.strip(), system, value.strip()).hex()[:24]

    def site_date_offset_days(self, site: str) -> int:
        """Date shift for records tied to no patient (Practitioner, Organization): one per site."""
        return self.date_offset_days("site:" + site.strip())
