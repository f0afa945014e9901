"""The cross-data-set view on hand-made metrics: pooling by configuration, never by label alone,
missing where a configuration was not scored, and the heat map's NaN for it."""

import math

import numpy as np

from fer_bench.reporting.cross_data import OWN_TEST, cross_data_frames


def _metrics(accuracy, data="/d/rafdb"):
    return {"accuracy": accuracy, "accuracy_ci95": [accuracy - 0.02, accuracy + 0.02], "balanced_accuracy": accuracy - 0.1,
            "macro_f1": accuracy - 0.2, "data": data, "tta": "none", "faces": "off"}


def test_seeds_pool_by_key_and_same_labels_stay_apart():
    rows = [("k1", "scratch", _metrics(0.70), {"rafdb-aaaaaa1111": _metrics(0.50)}),
            ("k1", "scratch", _metrics(0.74), {"rafdb-aaaaaa1111": _metrics(0.56)}),
            ("k2", "scratch", _metrics(0.60), {})]  # same label, other configuration, not scored on rafdb
    shown, heat, labels = cross_data_frames(rows)
    assert shown["configuration"].tolist() == ["scratch", "scratch (2)"] and shown["seeds"].tolist() == [2, 1]
    assert labels[0] == OWN_TEST and labels[1].startswith("rafdb (aaaaaa)")
    assert shown.loc[0, f"{labels[1]}: accuracy"] == f"{0.53:.4f} ± {np.std([0.50, 0.56], ddof=1):.4f}"
    assert shown.loc[1, f"{labels[1]}: accuracy"] == "missing"
    assert shown.loc[1, f"{OWN_TEST}: accuracy"] == "0.6000 [0.5800, 0.6200]"  # one seed: its interval
    assert math.isnan(heat.loc["scratch (2)", labels[1]]) and heat.loc["scratch", labels[1]] == 0.53
