"""The protocols of the deck's explanations (issue 13): their files, and on a tiny protocol built on
the tiny claims protocol's runs, every piece they add: arms that are another protocol's runs
(same_as), rates derived from another arm (lr_from, with Hoffer's sqrt scaling), budgets counted in
another arm's steps (steps_from), continuations (init_from), fixed-budget arms, the interaction test,
a derived ratio and pair measurements, each checked against numbers computed here from the runs."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from experiments import plan as PL
from experiments import protocol as P
from experiments.analyse import judge as J
from experiments.analyse.tune import read_rates
from experiments.analyse.verdicts import part_test, rule_parts
from experiments.checks import check_config
from experiments.config import RunConfig
from experiments.report import document as report
from tests.experiments.conftest import copy_tiny
from tests.experiments.test_protocol import EXPLANATIONS, TINY

TABLES = Path(__file__).resolve().parents[2] / "results" / "tables"


@pytest.mark.parametrize("name", EXPLANATIONS)
@pytest.mark.parametrize("scale", ["quick", "full"])
def test_explanation_protocols_load_and_their_first_wave_composes(name, scale):
    p = PL.load_protocol(name, scale)
    assert p["seeds"] == list(range(10)) and len(p["comparisons"]) >= 2
    fake = {a: 0.1 for a in p["arms"]}
    for arm in p["arms"]:
        if PL.dependent(p, arm):
            continue
        spec = PL.arm_spec(p, arm, fake, 0)
        rc = RunConfig.from_hydra(PL.configure(spec, {"runs_dir": "runs"}))
        check_config(rc.values)
        if found := PL.source_of(p, arm):  # the other protocol's run, measured with ours
            other, name_there = found
            theirs = PL.arm_spec(other, name_there, {name_there: 0.1}, 0)
            assert PL.run_dir(spec, {}) == PL.run_dir(theirs, {})
            assert rc.metrics == p["base"]["metrics"]
        else:
            assert rc.max_steps and rc.epochs is None


def test_batch_norm_regime_arms_take_the_small_batchs_rate_times_sqrt_of_the_batch_ratio():
    p = PL.load_protocol("batch_norm")
    assert PL.tuned_arms(p) == ["bn_small", "bn_large", "nobn_small", "nobn_large", "ghost_large"]
    for arm in ("ghost_regime", "regime_large"):
        assert PL.dependent(p, arm) and p["arms"][arm]["fixed_budget"]
    with pytest.raises(P.ProtocolError, match="steps_from needs the finished run of bn_small"):
        PL.arm_spec(p, "ghost_regime", {a: 0.1 for a in p["arms"]}, 0, {"runs_dir": "/nonexistent"})


def write(tmp_path: Path, p: dict) -> Path:
    path = tmp_path / f"{p['name']}.yaml"
    path.write_text(yaml.safe_dump(p))
    return path


def explain(tmp_path: Path) -> dict:
    """A tiny explanation protocol on the tiny claims protocol's runs."""
    tiny = yaml.safe_load(TINY.read_text())
    base = {k: v for k, v in tiny["base"].items() if not k.startswith("surface")}
    base["metrics"] = {
        "distance_from_init": {},
        "linear_barrier": {"points": 5, "subset": 64},
        "lmax_b1": {"metric": "minibatch_lambda_max", "b": 1, "n_batches": 4, "tol": 1e-3,
                    "max_iter": 20},
        "lmax_all": {"metric": "lambda_max", "tol": 1e-3, "max_iter": 20, "subset": 128},
    }  # fmt: skip
    fixed = {"fixed_budget": True, "train_until_loss": None}
    return {
        "name": "explain",
        "base": base,
        "arms": {
            "small": {"same_as": f"{TINY}/small"},
            "large": {"same_as": f"{TINY}/large"},
            "regime": {
                "batch_size": 64,
                "lr_from": {"arm": "small", "scaling": "sqrt"},
                "steps_from": "small",
                **fixed,
            },
            "cont": {
                "batch_size": 32,
                "max_steps": 10,
                "init_from": "small",
                "lr_from": {"arm": "small", "factor": 0.5},
                **fixed,
            },
        },  # fmt: skip
        "seeds": [0, 1, 2],
        "derived": {"ratio": {"numerator": ["lmax_b1"], "denominator": "lmax_all"}},
        "pairs": [
            {"name": "large_vs_small", "a": "large", "b": "small", "points": 5, "subset": 64}
        ],  # fmt: skip
        "secondary": ["distance_from_init"],
        "comparisons": [
            {
                "name": "inter",
                "kind": "interaction",
                "a": ["large", "small"],
                "b": ["regime", "small"],
                "rule": {
                    "hypothesis": "h",
                    "quantity": "test_error",
                    "direction": "greater",
                    "margin": 0.02,
                    "mechanism": None,
                },
            },
            {
                "name": "cont",
                "a": "cont",
                "b": "small",
                "caveat": "a sentence for the reader",
                "rule": {
                    "hypothesis": "h",
                    "quantity": "linear_barrier",
                    "direction": "greater",
                    "margin": 0.05,
                    "mechanism": None,
                },
            },
            {
                "name": "ratio",
                "a": "large",
                "b": "small",
                "rule": {
                    "hypothesis": "h",
                    "quantity": "ratio",
                    "direction": "greater",
                    "margin_ratio": 0.25,
                    "mechanism": None,
                },
            },
        ],  # fmt: skip
    }


def test_a_malformed_explanation_is_refused_with_the_arm(tmp_path):
    p = explain(tmp_path)
    p["arms"]["regime"].pop("fixed_budget")
    with pytest.raises(P.ProtocolError, match="arms.regime: .*train_until_loss|fixed_budget"):
        PL.check_protocol(p)
    p = explain(tmp_path)
    p["arms"]["regime"]["init_from"] = "cont"  # regime needs cont's runs, which need small's
    assert PL.waves(p) == [["small", "large"], ["cont"], ["regime"]]
    p["arms"]["cont"]["init_from"] = "regime"  # and now cont needs regime's: a cycle
    with pytest.raises(P.ProtocolError, match="cycle"):
        PL.check_protocol(p)
    p = explain(tmp_path)
    p["arms"]["small"] = {"same_as": f"{TINY}/nope"}
    with pytest.raises(P.ProtocolError, match="arms.small: same_as"):
        PL.check_protocol(p)
    p = explain(tmp_path)
    p["comparisons"][0]["a"] = "large"
    with pytest.raises(P.ProtocolError, match="interaction's a and b are two arms"):
        PL.check_protocol(p)


def test_explanation_runs_verdicts_and_report(tiny, tmp_path):
    here = copy_tiny(tiny, tmp_path)
    path = write(tmp_path, explain(tmp_path))
    args = ["--runs-dir", here["runs_dir"], "--data-dir", here["data_dir"]]
    args += ["--tables", str(tmp_path / "tables"), "--jobs", "1"]
    before = {d.name for d in (tmp_path / "runs").glob("*/*")}
    assert P.main(["run", str(path), *args]) == 0
    p = PL.load_protocol(path)
    tiny_p = PL.load_protocol(TINY)
    rates = read_rates(p, tmp_path / "tables")
    tiny_rates = read_rates(tiny_p, tmp_path / "tables")
    assert rates["small"] == tiny_rates["small"] and rates["large"] == tiny_rates["large"]
    assert rates["regime"] == pytest.approx(tiny_rates["small"] * math.sqrt(64 / 32))
    assert rates["cont"] == pytest.approx(tiny_rates["small"] * 0.5)
    runs = J.collect(p, here, tmp_path / "tables")
    new = {Path(f).name for _, f in runs.values()} - before
    assert len(new) == 6  # regime and cont x 3 seeds: the same_as arms trained nothing
    for seed in p["seeds"]:
        small, small_dir = runs["small", seed]
        regime, _ = runs["regime", seed]
        assert regime["steps_trained"] == small["steps_trained"]  # the small arm's updates
        assert regime["stop_reason"] == "max_steps" and J.reached_of(p, "regime", regime)
        cont, cont_dir = runs["cont", seed]
        start = torch.load(cont_dir / "init.pt", weights_only=True)
        final = torch.load(small_dir / "final.pt", weights_only=True)
        assert all(torch.equal(start[k], final[k]) for k in final)
        assert small_dir.parent.name == "tiny"  # the tiny protocol's own run, measured again
        assert {"lmax_b1", "lmax_all", "linear_barrier"} <= set(small["metrics"])
    assert J.verdicts([str(path)], here, tmp_path / "tables") == 0
    table = pd.read_csv(tmp_path / "tables" / "verdicts.csv").set_index("comparison")

    def metric(arm, seed, q):
        result = runs[arm, seed][0]
        return result[q] if q in result else result["metrics"][q]["value"]

    inter = [
        (metric("large", s, "test_error") - metric("small", s, "test_error"))
        - (metric("regime", s, "test_error") - metric("small", s, "test_error"))
        for s in p["seeds"]
    ]
    assert table.loc["inter", "mean_diff"] == pytest.approx(np.mean(inter))
    assert table.loc["inter", "a"] == "large−small"
    ratio = {a: [metric(a, s, "lmax_b1") / metric(a, s, "lmax_all") for s in p["seeds"]]
             for a in ("large", "small")}  # fmt: skip
    part = rule_parts(p["comparisons"][2]["rule"])[0]
    want = part_test(part, ratio["large"], ratio["small"])
    assert table.loc["ratio", "mean_diff"] == pytest.approx(want.mean_diff)
    assert table.loc["cont", "verdict"] != "not comparable"  # fixed-budget arms are comparable
    recorded = pd.read_csv(tmp_path / "tables" / "run_metrics.csv")
    for seed in p["seeds"]:
        got = recorded[(recorded["arm"] == "small") & (recorded["seed"] == seed)]
        assert got.set_index("metric")["value"]["lmax_b1"] == metric("small", seed, "lmax_b1")
    pairs = pd.read_csv(tmp_path / "tables" / "pairs_explain.csv")
    assert len(pairs) == 3 and (pairs["barrier"] >= 0).all()
    for r in pairs.itertuples():
        a = torch.load(Path(r.run_a) / "final.pt", weights_only=True)
        b = torch.load(Path(r.run_b) / "final.pt", weights_only=True)
        want = torch.cat([(a[k] - b[k]).reshape(-1) for k in a]).norm().item()
        assert r.distance == pytest.approx(want, rel=1e-5)
        loss = json.loads(r.path_loss)
        assert len(loss) == 5
    results = tmp_path
    (results / "figures").mkdir()
    text = report.build(results).read_text()
    assert "### inter:" in text and "large − small) − (regime − small)" in text
    assert "fixed budget" in text
    assert "explain/cont: a sentence for the reader" in text  # the note under the verdicts
    assert "**Caveat** (from the config): a sentence for the reader" in text


def test_one_sided_reads_the_tost_interval_on_the_scale_it_was_tested_on():
    from types import SimpleNamespace as Row

    def row(**kw):
        base = dict(part_verdict="inconclusive", direction="greater", margin=0.25,
                    margin_is_ratio=True, tost_ci_low=-0.3, tost_ci_high=0.2)  # fmt: skip
        return Row(**{**base, **kw})

    # a ratio margin of 0.25 is tested as log(1.25) = 0.223 on the log scale
    assert "below +0.223" in report.one_sided(row())
    assert report.one_sided(row(tost_ci_high=0.23)) == ""
    assert "above −0.01" in report.one_sided(
        row(direction="less", margin=0.01, margin_is_ratio=False, tost_ci_low=-0.005)
    )
    assert report.one_sided(row(part_verdict="reproduced")) == ""


def test_dry_run_lists_the_first_wave_and_refuses_what_would_fail_later(tiny, tmp_path, capsys):
    root, _ = tiny
    shutil.copytree(root / "tables", tmp_path / "tables")
    args = ["--runs-dir", str(tmp_path / "none"), "--tables", str(tmp_path / "tables")]
    p = explain(tmp_path)
    path = write(tmp_path, p)
    assert P.main(["all", str(path), "--dry-run", *args]) == 0  # no run exists: nothing to read
    out = capsys.readouterr().out
    assert "arm=small" in out and "arm=regime" not in out
    assert "then 6 runs of" in out and "the verdicts" in out
    assert {"cont", "regime"} <= set(out.split("then 6 runs of ")[1].split(" (")[0].split(", "))
    typo = {**p, "name": "typo"}  # a key misspelt in a searched arm: refused before any run
    typo["arms"] = {**p["arms"], "large": {"batch_size": 64, "max_steps": 60, "init_form": "x"}}
    typo["tune"] = {"seeds": [100, 101], "rule": PL.RULE,
                    "grid": {"large": [0.1, 0.2, 0.4, 0.8, 1.6]}}  # fmt: skip
    assert P.main(["tune", str(write(tmp_path, typo)), "--dry-run", *args]) == 2
    assert "init_form" in capsys.readouterr().err
    assert P.main(["run", str(path), "--seeds", "0", *args]) == 2  # one seed: nothing to pair
    assert "at least two" in capsys.readouterr().err


def test_verdicts_take_the_seeds_given(tiny, tmp_path):
    root, _ = tiny
    shutil.copytree(root / "runs", tmp_path / "runs")
    shutil.copytree(root / "tables", tmp_path / "tables")
    args = ["--runs-dir", str(tmp_path / "runs"), "--tables", str(tmp_path / "tables")]
    assert P.main(["verdicts", str(TINY), "--seeds", "0", "1", *args]) == 0
    paired = pd.read_csv(tmp_path / "tables" / "paired_tiny.csv")
    assert set(paired["seed"]) == {0, 1}
    assert (pd.read_csv(tmp_path / "tables" / "verdicts.csv")["n_seeds"] == 2).all()


def test_a_run_off_its_criterion_without_a_record_is_shown_as_missing_not_a_crash(tiny, tmp_path):
    here = copy_tiny(tiny, tmp_path)
    p = PL.load_protocol(TINY)
    runs = J.collect(p, here, tmp_path / "tables")
    folder = runs["large", 2][1]
    result = json.loads((folder / "result.json").read_text())
    result.update(status="diverged", stop_reason="diverged", metrics={})
    (folder / "result.json").write_text(json.dumps(result))
    for record in folder.glob("surface_2d*"):  # no slice record either
        record.unlink()
    assert J.verdicts([str(TINY)], here, tmp_path / "tables") == 0
    paired = pd.read_csv(tmp_path / "tables" / "paired_tiny.csv")
    off = paired[(paired["arm"] == "large") & (paired["seed"] == 2)]
    assert not off["reached"].any() and off["value"].isna().any()
