"""Radiology reports read back as finding levels: the image encoders' pre-training targets (no outcome label)."""

from __future__ import annotations

import numpy as np

from tasks.synth.generate import SynthConfig, make_record
from tasks.synth.model import biology
from tasks.synth.notes import (
    BORDERLINE_CTR,
    CARDIOMEGALY_CTR,
    DEFECT_LEVELS,
    MODERATE_CTR,
    OPACITY_LEVELS,
    radiology_report,
)
from tasks.synth.sites import make_sites
from tasks.training.findings import finding_levels, read_findings


def test_generated_reports_read_back_as_the_levels_their_thresholds_state():
    cfg, sites, bio = SynthConfig(patients=200, seed=5), make_sites(3, None), biology()
    checked_ct = 0
    for i in range(200):
        record = make_record(cfg, sites, bio, i)
        ev = record.evidence
        if not ev.present["imaging"]:
            continue
        report = radiology_report(record)
        heart = int(np.digitize(ev.ctr, [BORDERLINE_CTR, CARDIOMEGALY_CTR, MODERATE_CTR], right=True))
        lungs = int(np.digitize(np.exp(ev.log_opacity), OPACITY_LEVELS, right=True))
        assert read_findings(report, "image_2d") == [heart, lungs], report
        if ev.has_ct:
            defect = int(np.digitize(np.exp(ev.log_defect), DEFECT_LEVELS, right=True))
            assert read_findings(report, "image_3d") == [defect, lungs], report
            checked_ct += 1
        else:
            assert read_findings(report, "image_3d") == [-1, -1]  # no CT section: nothing stated
    assert checked_ct > 10


def test_unstated_findings_and_missing_reports_are_not_targets():
    assert finding_levels("image_2d") == [4, 4] and finding_levels("image_3d") == [4, 4]
    assert read_findings(None, "image_2d") == [-1, -1]
    assert read_findings("EXAM: XR CHEST PA\nFINDINGS: No pneumothorax.", "image_2d") == [-1, -1]
    assert read_findings("EXAM: XR CHEST\n- Mild cardiomegaly.\n- Lungs are clear.", "image_2d") == [2, 0]
