"""The shipped Table E.1-1 and policy: loadable, complete for the rows we rely on, consistent with VRs."""

from __future__ import annotations

from pydicom.datadict import dictionary_VR, tag_for_keyword

from data_contracts.deid import HERE, default_config, load_table

ROWS = 655  # PS3.15 2026c Table E.1-1: 652 single tags + 3 repeating groups (50xx,xxxx), (60xx,3000), (60xx,4000)


def test_table_size_and_edition():
    table = load_table()
    assert len(table) == ROWS and table.edition == "2026c"
    header = (HERE / "confidentiality_profile.csv").read_text().splitlines()
    assert f"# rows: {ROWS}" in header


def test_key_rows():
    table = default_config().table
    expect = {"PatientName": ("Z", ""), "PatientID": ("Z/D", ""), "StudyDate": ("Z", "C"),
              "SOPInstanceUID": ("U", ""), "ReferencedImageSequence": ("X/Z/U*", ""),
              "InstitutionName": ("X/Z/D", ""), "PatientBirthDate": ("Z", ""), "AcquisitionDateTime": ("X/Z/D", "C")}
    for keyword, (basic, dates) in expect.items():
        rule = table.lookup(tag_for_keyword(keyword))
        assert (rule.basic, rule.modified_dates) == (basic, dates), keyword
    assert table.lookup(0x60223000).name == "Overlay Data" and table.lookup(0x50021234).name == "Curve Data"
    assert table.lookup(tag_for_keyword("SOPClassUID")) is None


def test_modified_dates_column_covers_temporal_vrs():
    table = default_config().table
    not_retained = {"PatientBirthDate", "PatientBirthTime", "GPSTimeStamp"}
    for tag, rule in table.rules.items():
        try:
            vr = dictionary_VR(tag)
        except KeyError:
            continue
        if vr in {"DA", "DT", "TM"} and rule.keyword not in not_retained:
            assert rule.modified_dates == "C", rule.keyword


def test_policy_resolves_every_combination():
    config = default_config()
    actions = {rule.basic for rule in config.table.rules.values()}
    assert {config.resolve(a) for a in actions} <= {"X", "Z", "D", "U", "U*"}
    assert config.private_safe_list == () and config.fhir_extension_safe_list == frozenset()
