"""The words a monitoring report is summarised in: per flagged site, what moved and which categories are new."""

from __future__ import annotations

from tasks.monitoring.findings import by_site, culprits, describe


def _features(**drifted):
    return {"groups": {"g": {"features": {f: r for f, r in drifted.items()}}}}


REPORT = {
    "tabular": {"overall": _features(age_band={"drifted": True}),
                "sites": {"site-a": _features(age_band={"drifted": False}),
                          "site-b": _features(age_band={"drifted": True},
                                              scanner_2d={"drifted": True, "new_categories": ["ACME X (upgraded)"]})}},
    "predictions": {"sites": {"site-b": _features(p_class0={"drifted": False})}},
    "embedding": {"modalities": {"image_3d": {"overall": {"drifted": False},
                                              "sites": {"site-b": {"drifted": True}, "site-a": {"drifted": False}}}}},
    "performance": {"drifted": False},
}


def test_culprits_list_every_alarming_test_once():
    assert culprits(REPORT) == ["embedding:site-b:image_3d", "tabular:all:age_band", "tabular:site-b:age_band",
                                "tabular:site-b:scanner_2d"]


def test_by_site_names_features_new_categories_and_modalities_of_flagged_sites_only():
    assert by_site(REPORT) == {"site-b": ["age_band", "image_3d embeddings", "scanner_2d (new: ACME X (upgraded))"]}
    assert describe(REPORT) == "site-b: age_band, image_3d embeddings, scanner_2d (new: ACME X (upgraded))"
    assert describe({**REPORT, "performance": {"drifted": True, "drop": 0.2}}).endswith("performance: AUROC down 0.2")
