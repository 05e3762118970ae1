"""The explanations' intervals are computed by the analysis (tables in, tables out) and checked here
against hand computations; the report only reads them."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from experiments.analyse import explanations as X


def _t(d):
    d = np.asarray(d, dtype=float)
    half = sps.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
    return d.mean(), d.mean() - half, d.mean() + half


def test_gap_closed_is_the_share_of_the_mean_gap_with_a_seed_bootstrap():
    rng = np.random.default_rng(1)
    large = 0.20 + rng.normal(0, 0.01, 12)
    small = large - 0.04 - rng.normal(0, 0.005, 12)
    wide = pd.DataFrame({"large": large, "small": small, "half": large - 0.5 * (large - small)})
    share, lo, hi = X.gap_closed(wide, "large", "small", "half")
    assert share == pytest.approx(0.5)
    assert lo == pytest.approx(0.5) and hi == pytest.approx(0.5)  # every resample closes half
    wide["noisy"] = large - 0.02 + rng.normal(0, 0.02, 12)
    share, lo, hi = X.gap_closed(wide, "large", "small", "noisy")
    assert lo < share < hi and hi - lo > 0.1


def _tables(tmp_path, seeds=range(6)):
    rng = np.random.default_rng(0)
    runs, metrics = [], []
    arms = ["bn_large", "bn_small", "ghost_large", "regime_large", "ghost_regime"]
    for s in seeds:
        for k, arm in enumerate(arms):
            runs.append({"protocol": "batch_norm", "arm": arm, "seed": s,
                         "test_error": 0.1 + 0.01 * k + rng.normal(0, 0.003)})  # fmt: skip
        for arm in ("adam", "momentum"):
            err = 0.12 + rng.normal(0, 0.004)
            runs.append({"protocol": "adam_escape", "arm": arm, "seed": s, "test_error": err})
            metrics.append({"protocol": "adam_escape", "arm": arm, "seed": s,
                            "metric": "lambda_max", "value": float(np.exp(rng.normal(0, 0.3)))})  # fmt: skip
    pd.DataFrame(runs).to_csv(tmp_path / "protocol_runs.csv", index=False)
    pd.DataFrame(metrics).to_csv(tmp_path / "run_metrics.csv", index=False)
    protocols = [{"name": "batch_norm"}, {"name": "adam_escape"}, {"name": "batch_size"}]
    (tmp_path / "protocols.json").write_text(json.dumps(protocols))
    return pd.DataFrame(runs), pd.DataFrame(metrics)


def test_intervals_are_paired_t_intervals_on_the_right_scale(tmp_path):
    runs, metrics = _tables(tmp_path)
    table = pd.read_csv(X.write_intervals(tmp_path))
    assert set(table["protocol"]) == {"batch_norm", "adam_escape"}  # batch_size explains nothing
    wide = runs[runs["protocol"] == "batch_norm"].pivot(
        index="seed", columns="arm", values="test_error"
    )
    gap = table[table["kind"] == "gap"].iloc[0]
    assert (gap["mean"], gap["low"], gap["high"]) == pytest.approx(
        _t(wide["bn_large"] - wide["bn_small"])
    )
    contrast = table[(table["kind"] == "contrast") & (table["a"] == "regime_large")].iloc[0]
    d = wide["regime_large"] - wide["ghost_regime"]
    assert contrast["p"] == pytest.approx(sps.ttest_1samp(d, 0).pvalue)
    assert len(table[table["kind"] == "closed"]) == 3
    lam = metrics.pivot(index="seed", columns="arm", values="value")
    row = table[(table["kind"] == "equal_loss") & (table["quantity"] == "lambda_max")].iloc[0]
    log_ratio = np.log(lam["adam"]) - np.log(lam["momentum"])  # sharpness: on the log scale
    assert (row["mean"], row["low"], row["high"]) == pytest.approx(_t(log_ratio))
    err = table[(table["kind"] == "equal_loss") & (table["quantity"] == "test_error")].iloc[0]
    opt = runs[runs["protocol"] == "adam_escape"].pivot(
        index="seed", columns="arm", values="test_error"
    )
    assert err["mean"] == pytest.approx((opt["adam"] - opt["momentum"]).mean())  # error: difference
