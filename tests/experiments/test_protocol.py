"""The comparison protocols: the files in conf/protocol/, the learning-rate rule, the refusal of a
missing or stale table, and verdicts that equal verdict_family's on the runs' own numbers. The
end-to-end tests share one tiny search and one set of final runs (synthetic data, ~40 runs)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

import flatness
from experiments import plan as PL
from experiments import protocol as P
from experiments.analyse import judge as J
from experiments.analyse import tune as T
from experiments.analyse.verdicts import part_test, rule_parts, validate_rule, verdict_family
from experiments.checks import check_config
from experiments.config import RunConfig
from tests.conftest import CONF, ROOT
from tests.experiments.conftest import copy_tiny

TINY = Path(__file__).with_name("protocol_tiny.yaml")
FILES = sorted((CONF / "protocol").glob("*.yaml"))
# The claims' protocols (the MLP on 16k samples, each arm searched); the deck's explanations
# (issue 13) have their own tests below
CLAIMS = [f for f in FILES if f.stem in ("batch_size", "optimizer", "visualisation")]
EXPLANATIONS = ("batch_norm", "averaged_sharpness", "adam_escape")
# Issue 27's intervention: outside the report's family, run on its own (protocol all)
INTERVENTIONS = ("intervention",)


def runs_table(rows):
    return pd.DataFrame(rows, columns=["arm", "lr", "seed", "reached", "val_error"])


# --- the protocol files ---------------------------------------------------------------------------


def test_the_protocols_exist():
    expected = {"batch_size", "optimizer", "visualisation", *EXPLANATIONS, *INTERVENTIONS}
    assert {f.stem for f in FILES} == expected
    # the intervention's own runs share the batch-size protocol's data and model: its gap is that one
    inter, batch = PL.load_protocol("intervention"), PL.load_protocol("batch_size")
    shared = {k: v for k, v in batch["base"].items() if k != "metrics"}
    assert {k: inter["base"][k] for k in shared} == shared


@pytest.mark.parametrize("path", CLAIMS, ids=lambda f: f.stem)
def test_protocol_file_loads_and_its_rules_validate(path):
    p = PL.load_protocol(path.stem)
    assert p["name"] == path.stem
    assert p["seeds"] == list(range(10))
    assert len(p["tune"]["seeds"]) == 2
    assert p["base"]["dataset.num_samples"] == 25000 and p["base"]["dataset.val_split"] == 0.2
    assert p["base"]["model.width"] == 256 and p["base"]["epochs"] is None
    least = 6 if path.stem == "optimizer" else 5
    assert all(len(g) >= least for g in p["tune"]["grid"].values())
    for name, settings in p["base"].get("metrics", {}).items():
        if settings.get("metric", name) in (
            "lambda_max",
            "keskar_sharpness",
            "worst_case_sharpness",
        ):
            assert settings["subset"] == 4000, name
    for c in p["comparisons"]:
        validate_rule(c["rule"])
    # every arm composes into a run config the runner accepts, in the search and in the final runs
    specs = PL.final_specs(p, {a: g[-1] for a, g in p["tune"]["grid"].items()}) + PL.tune_specs(p)
    for arm in p["arms"]:
        for spec in [s for s in specs if s.arm == arm][:: len(p["seeds"]) - 1][:2]:
            rc = RunConfig.from_hydra(PL.configure(spec, {"runs_dir": "runs"}))
            check_config(rc.values)
            flatness.validate(rc.metrics)
            assert rc.max_steps and rc.epochs is None and rc.lr == spec.lr, arm


@pytest.mark.parametrize("path", CLAIMS, ids=lambda f: f.stem)
def test_the_full_scale_is_its_own_protocol_with_more_data(path):
    quick, full = PL.load_protocol(path.stem), PL.load_protocol(path.stem, "full")
    assert full["name"] == f"{quick['name']}_full" and full["seeds"] == quick["seeds"]
    assert full["base"]["dataset.num_samples"] > quick["base"]["dataset.num_samples"]
    specs = PL.final_specs(full, {a: g[0] for a, g in full["tune"]["grid"].items()})
    for arm in full["arms"]:
        spec = next(s for s in specs if s.arm == arm)
        rc = RunConfig.from_hydra(PL.configure(spec, {"runs_dir": "runs"}))
        check_config(rc.values)
        assert rc.values["name"] == full["name"]
        if "large" in arm:  # Keskar's large batch: 10% of the training set at either scale
            assert rc.batch_size == 4000
    quick_dirs = {PL.run_dir(s, {}) for s in PL.tune_specs(quick)}
    assert not quick_dirs & {PL.run_dir(s, {}) for s in PL.tune_specs(full)}


def test_a_malformed_protocol_is_refused_with_the_key(tmp_path):
    p = yaml.safe_load(TINY.read_text())
    p["tune"]["grid"]["small"] = [0.1, 0.2, 0.3, 0.4, 0.5]  # not log-spaced
    with pytest.raises(P.ProtocolError, match="tune.grid.small"):
        PL.check_protocol(p)
    p = yaml.safe_load(TINY.read_text())
    p["comparisons"][0]["rule"]["direction"] = "bigger"
    with pytest.raises(P.ProtocolError, match="comparison batch: .*direction"):
        PL.check_protocol(p)
    p = yaml.safe_load(TINY.read_text())
    p["base"]["criterion_every_samples"] = 100  # not a multiple of 32
    with pytest.raises(P.ProtocolError, match="criterion_every_samples"):
        PL.check_protocol(p)
    p = yaml.safe_load(TINY.read_text())
    arms = list(p["arms"])
    p["pairs"] = [{"name": "ab", "a": arms[0], "b": arms[1], "tset": True}]  # a misspelt key
    with pytest.raises(P.ProtocolError, match=r"pairs: ab: tset: unknown key \(known: a, b, name"):
        PL.check_protocol(p)


@pytest.mark.parametrize("key", ["seeds", "tune.seeds"])
@pytest.mark.parametrize("seeds", [["2", 1], [2.7, 1], [True, 1], [0, 0], [5], [2**32, 1], "0,1"])
def test_seeds_are_distinct_integers_that_every_generator_takes(key, seeds):
    """A YAML "2" or 2.7 would name other runs than seed 2; one seed cannot be paired."""
    p = yaml.safe_load(TINY.read_text())
    (p["tune"] if key == "tune.seeds" else p)["seeds"] = seeds
    with pytest.raises(P.ProtocolError, match=f"{key} must be a list of at least two distinct"):
        PL.check_protocol(p)


# --- the learning-rate rule -------------------------------------------------------------------------


def test_the_best_validation_rate_is_not_chosen_when_a_seed_missed_the_criterion():
    rows = []
    for lr, val, reached in [(0.1, 0.30, True), (0.2, 0.20, True), (0.4, 0.10, False)]:
        rows += [("a", lr, 0, True, val), ("a", lr, 1, reached, val)]
    rows += [("a", lr, s, True, 0.5) for lr in (0.8, 1.6) for s in (0, 1)]
    table = T.choose_rates(runs_table(rows))
    best = table[table["lr"] == 0.4].iloc[0]
    assert best["reached"] == 1 and not best["eligible"] and not best["chosen"]
    chosen = table[table["chosen"]]
    assert chosen["lr"].tolist() == [0.2] and not chosen["at_edge"].iloc[0]


def test_a_rate_that_a_search_seed_met_only_late_in_its_budget_is_not_eligible():
    # 0.4 is best on validation and both seeds met the criterion, one only after half the budget
    rows = []
    for lr, val, late in [(0.1, 0.30, False), (0.2, 0.20, False), (0.4, 0.10, True)]:
        rows += [("a", lr, 0, True, val, 100, True), ("a", lr, 1, True, val, 900, not late)]
    rows += [("a", lr, s, True, 0.5, 100, True) for lr in (0.8, 1.6) for s in (0, 1)]
    runs = pd.DataFrame(
        rows, columns=["arm", "lr", "seed", "reached", "val_error", "steps", "within"]
    )
    table = T.choose_rates(runs).set_index("lr")
    assert table.loc[0.4, "reached"] == 2 and table.loc[0.4, "reached_early"] == 1
    assert not table.loc[0.4, "eligible"] and table.loc[0.2, "chosen"]
    assert table.loc[0.4, "max_steps_to_criterion"] == 900


def test_reach_within_must_be_a_fraction_of_the_budget():
    p = yaml.safe_load(TINY.read_text())
    for bad in (0, 1.5, "half", True):
        p["tune"]["reach_within"] = bad
        with pytest.raises(P.ProtocolError, match="reach_within"):
            PL.check_protocol(p)


def test_a_choice_at_the_grid_edge_is_flagged_and_an_arm_with_no_eligible_rate_has_none():
    grid = [0.1, 0.2, 0.4, 0.8, 1.6]
    rows = [("a", lr, s, True, 0.1 if lr == 1.6 else 0.3) for lr in grid for s in (0, 1)]
    rows += [("b", lr, s, s == 0, 0.1) for lr in grid for s in (0, 1)]
    table = T.choose_rates(runs_table(rows))
    chosen = table[table["chosen"]]
    assert chosen["arm"].tolist() == ["a"] and chosen["lr"].tolist() == [1.6]
    assert chosen["at_edge"].tolist() == [True]


# --- end to end on the tiny protocol ---------------------------------------------------------------


def common(root: Path) -> dict:
    return {"runs_dir": str(root / "runs"), "data_dir": str(root / "data"), "progress": False}


def edit_result(folder: Path, **changes) -> None:
    path = folder / "result.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def test_tune_writes_every_rate_and_skips_a_rate_that_missed_in_one_seed(tiny, tmp_path):
    root, _ = tiny
    table = pd.read_csv(root / "tables" / "lr_tiny.csv")
    p = PL.load_protocol(TINY)
    assert len(table) == sum(len(g) for g in p["tune"]["grid"].values())
    assert set(table.columns) >= {
        "lr",
        "reached",
        "mean_val_error",
        "chosen",
        "at_edge",
        "tune_hash",
    }
    assert (root / "tables" / "lr_tiny.md").exists()
    assert table.groupby("arm")["chosen"].sum().to_dict() == {"small": 1, "large": 1, "heavy": 1}
    # Make a non-chosen rate the best on validation in both search seeds, but missing the criterion in
    # one: the choice must not move to it. Then an edge rate that all seeds reached, best: flagged.
    shutil.copytree(root / "runs", tmp_path / "runs")
    here = common(tmp_path)
    specs = [s for s in PL.tune_specs(p) if s.arm == "small"]
    chosen = table[(table["arm"] == "small") & table["chosen"]]["lr"].iloc[0]
    top = max(p["tune"]["grid"]["small"])
    rest = table[(table["arm"] == "small") & table["eligible"] & ~table["chosen"]]
    other = rest[rest["lr"] != top]["lr"].iloc[0]
    for s in specs:
        if s.lr == other:
            stop = "max_steps" if s.seed == p["tune"]["seeds"][1] else "train_until_loss"
            edit_result(PL.run_dir(s, here), val_error=0.0, stop_reason=stop)
    again = T.tune_table(p, here)
    row = again[(again["arm"] == "small") & (again["lr"] == other)].iloc[0]
    assert row["mean_val_error"] == 0.0 and row["reached"] == 1 and not row["chosen"]
    assert again[(again["arm"] == "small") & again["chosen"]]["lr"].tolist() == [chosen]
    for s in specs:
        if s.lr == top:
            edit_result(PL.run_dir(s, here), val_error=0.0, stop_reason="train_until_loss")
    again = T.tune_table(p, here)
    pick = again[(again["arm"] == "small") & again["chosen"]].iloc[0]
    assert pick["lr"] == top and pick["at_edge"]


def test_run_refuses_a_missing_or_stale_table(tiny, tmp_path, capsys):
    root, args = tiny
    empty = ["--tables", str(tmp_path / "none"), "--runs-dir", str(tmp_path / "runs")]
    assert P.main(["run", str(TINY), *empty]) == 2
    err = capsys.readouterr().err.strip()
    assert "no learning-rate table" in err and len(err.splitlines()) == 1
    stale = yaml.safe_load(TINY.read_text())
    stale["tune"]["grid"]["small"] = [0.0125, 0.025, 0.05, 0.1, 0.2]
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(stale))
    assert P.main(["run", str(path), *args, "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert "stale" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "runs").exists()


def test_dry_run_lists_the_runs_and_a_cost(tiny, capsys):
    _, args = tiny
    assert P.main(["run", str(TINY), *args, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.count("arm=") == 9 and "9 runs" in out and " h " in out


def values(p, runs, arm, quantity):
    out = []
    for seed in p["seeds"]:
        result, folder = runs[arm, seed]
        done = result["stop_reason"] == "train_until_loss"
        out.append(J.value_of(result, folder, quantity, p)[0] if done else np.nan)
    return out


def test_verdicts_match_verdict_family_and_mark_a_missed_criterion_not_comparable(tiny, tmp_path):
    here = copy_tiny(tiny, tmp_path)
    p = PL.load_protocol(TINY)
    runs = J.collect(p, here, tmp_path / "tables")
    edit_result(runs["heavy", 1][1], stop_reason="max_steps")  # heavy missed in seed 1
    assert J.verdicts([str(TINY)], here, tmp_path / "tables") == 0
    table = pd.read_csv(tmp_path / "tables" / "verdicts.csv")
    by = {(r.comparison, r.part): r for r in table.itertuples()}
    assert by["momentum", "effect"].verdict == "not comparable"
    # The same numbers through verdict_family directly: the paired claim and the tau claim.
    runs = J.collect(p, here, tmp_path / "tables")
    ok = {arm: [runs[arm, s][0]["stop_reason"] == "train_until_loss" for s in p["seeds"]]
          for arm in p["arms"]}  # fmt: skip
    assert ok["heavy"] == [True, False, True]
    rows, reached = [], []
    for part in rule_parts(p["comparisons"][0]["rule"]):
        flags = [ok["large"], ok["small"]]
        a, b = (values(p, runs, arm, part.quantity) for arm in ("large", "small"))
        rows.append(("batch", part.part, part_test(part, a, b) if all(map(all, flags)) else None,
                     part.direction))  # fmt: skip
        reached.append(flags)
    rows.append(("momentum", "effect", None, "less"))
    reached.append([ok["heavy"], ok["small"]])
    xs, ys = [], []
    for arm in ("small", "large"):
        xs += values(p, runs, arm, "slice_sharpness")
        ys += values(p, runs, arm, "test_error")
    both = ok["small"] + ok["large"]
    rows.append(("slices", "effect", J.tau_test(xs, ys, p["seeds"] * 2, 0.2, 50) if all(both)
                 else None, "greater"))  # fmt: skip
    reached.append(both)
    expected = verdict_family(rows, reached_criterion=reached)
    size = sum(all(map(all, r)) if isinstance(r[0], list) else all(r) for r in reached)
    for claim, verdict in expected.items():
        assert by[claim, "effect"].verdict == verdict.verdict
        for part in ("effect", "mechanism"):
            want = getattr(verdict, part)
            if want is None:
                assert (claim, part) not in by
                continue
            got = by[claim, part]
            assert got.part_verdict == want.verdict
            if want.adjusted_p is None:
                assert np.isnan(got.p_holm)
            else:
                assert got.p_holm == pytest.approx(want.adjusted_p)
                assert got.mean_diff == pytest.approx(want.test.mean_diff)
                assert got.family_size == size
    paired = pd.read_csv(tmp_path / "tables" / "paired_tiny.csv")
    assert set(paired["seed"]) == {0, 1, 2}
    assert set(paired["quantity"]) >= {"test_error", "lambda_max", "slice_sharpness"}
    assert paired[paired["secondary"]]["quantity"].unique().tolist() == ["slice_sharpness"]


def test_tau_test_reads_a_strong_association_as_significant_and_a_null_one_as_not():
    rng = np.random.default_rng(0)
    x = rng.normal(size=40)
    groups = np.repeat(np.arange(10), 4)
    strong = J.tau_test(x, x + 0.1 * rng.normal(size=40), groups, 0.2, 100)
    assert strong.mean_diff > 0.8 and strong.p_signflip < 0.05 and strong.ci_low > 0
    null = J.tau_test(x, rng.normal(size=40), groups, 0.5, 100)
    assert null.p_signflip > 0.05 and null.ci_low < 0 < null.ci_high


def test_the_report_reads_every_number_from_the_verdict_tables(tiny, tmp_path):
    from experiments.report import document as report

    root, _ = tiny
    shutil.copytree(root / "runs", tmp_path / "runs")
    shutil.copytree(root / "tables", tmp_path / "results" / "tables")
    tables = tmp_path / "results" / "tables"
    here = common(tmp_path)
    p = PL.load_protocol(TINY)
    runs = J.collect(p, here, tables)
    edit_result(runs["heavy", 2][1], stop_reason="max_steps")  # heavy missed in seed 2
    assert J.verdicts([str(TINY)], here, tables) == 0
    text = report.build(tmp_path / "results").read_text()
    verdicts = pd.read_csv(tables / "verdicts.csv")
    per_run = pd.read_csv(tables / "protocol_runs.csv")
    assert len(per_run) == 9 and per_run["n_params"].iloc[0] == sum(
        v.numel() for v in __import__("torch").load(runs["small", 0][1] / "init.pt").values()
    )
    # the setup opens the report, with the split sizes and the reached counts of the runs
    assert text.index("## Setup") < text.index("## Verdicts")
    first = per_run.iloc[0]
    assert f"{int(first['num_train']):,} training, {int(first['num_val']):,} validation" in text
    assert re.search(r"\| heavy +\|.*\| 2/3 +\|", text)  # seed 2 missed: 2 of 3 reached
    # every claim's verdict and reason, verbatim from verdicts.csv; the effect as in the table
    for r in verdicts.itertuples():
        assert r.reason in text
        assert f"**Verdict: {r.verdict}.**" in text
    batch = verdicts[(verdicts["comparison"] == "batch") & (verdicts["part"] == "effect")].iloc[0]
    assert f"{100 * batch['mean_diff']:+.2f} pts" in text
    assert "momentum" in text and "not comparable" in text
    assert "- a change made after the first runs, for the report" in text  # the protocol's history
    # per-seed numbers: seed 1's test error of the large arm, as the run recorded it
    large1 = runs["large", 1][0]["test_error"]
    assert f"{100 * large1:.2f}%" in text
    # each figure is drawn from a saved table and its data written beside it
    for name in ("tiny_batch", "tiny_slices"):
        assert (tables.parent / "figures" / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
        drawn = pd.read_csv(tables.parent / "figures" / f"{name}.csv")
        assert len(drawn) > 0
    # the pooled τ is decomposed: τ after removing each arm's mean, as scipy computes it
    from scipy.stats import kendalltau

    slices = pd.read_csv(tables / "paired_tiny.csv")
    slices = slices[(slices["comparison"] == "slices") & slices["reached"]]
    wide = slices.pivot_table(index=["arm", "seed"], columns="quantity", values="value")
    centred = wide - wide.groupby("arm").transform("mean")
    tau_c = kendalltau(centred["slice_sharpness"], centred["test_error"])[0]
    assert f"After removing each arm's mean from both, τ = {tau_c:+.2f}" in text
    # each arm's settings as resolved, with the run's own rate, not the optimizer group's default
    assert "optimizer.lr=" not in text and "- `heavy`: lr=0.01;" in text
    drawn = pd.read_csv(tables.parent / "figures" / "tiny_batch.csv")
    assert set(drawn["quantity"]) == {"test_error", "lambda_max"}
    assert drawn["seed"].nunique() == 3
    # the pictures the runs recorded: every figure captioned, its runs listed by id
    shown = re.findall(r"\]\(figures/([^)]+)\.png\)", text)
    assert {"tiny_spectra", "tiny_sharpness_history", "tiny_slices_1d", "tiny_surfaces"} <= set(
        shown
    )
    for figure in shown:
        after = text.split(f"(figures/{figure}.png)")[1].lstrip("\n")
        assert after.startswith("*Figure"), f"{figure} has no caption"
    sources = pd.read_csv(tables / "figure_sources.csv")
    assert set(sources["figure"]) == set(shown)
    batch = sources[sources["figure"] == "tiny_batch"]
    assert set(batch["run_id"]) == {
        runs[a, s][1].name for a in ("small", "large") for s in (0, 1, 2)
    }
    tracked = pd.read_csv(tables.parent / "figures" / "tiny_sharpness_history.csv")
    assert (2, 1) not in set(zip(tracked["seed"], tracked["arm"] == "heavy", strict=True))  # missed
    assert tracked["run_train_loss"].tolist() == pytest.approx(
        [runs[a, s][0]["train_loss"] for a, s in zip(tracked["arm"], tracked["seed"], strict=True)]
    )


def test_all_runs_one_protocol_alone_without_touching_the_report_family(tiny, tmp_path):
    root, _ = tiny
    shutil.copytree(root / "runs", tmp_path / "runs")
    tables = tmp_path / "tables"
    shutil.copytree(root / "tables", tables)
    (tables / "verdicts.csv").write_text("the report's family\n")
    args = ["--runs-dir", str(tmp_path / "runs"), "--data-dir", str(root / "data")]
    assert P.main(["all", str(TINY), *args, "--tables", str(tables), "--jobs", "1"]) == 0
    assert (tables / "verdicts.csv").read_text() == "the report's family\n"
    alone = pd.read_csv(tables / "alone" / "tiny" / "tables" / "verdicts.csv")
    assert set(alone["comparison"]) == {"batch", "momentum", "slices"}
    # ... and ends at its own report, which states those verdicts
    report = (tables / "alone" / "tiny" / "REPORT.md").read_text()
    assert "## Statistics and the decision rule" in report
    for verdict in set(alone["verdict"]):
        assert verdict in report
    # a missing table makes `all` search first (here: the finished search runs are reused)
    (tables / "lr_tiny.csv").unlink()
    assert P.main(["all", str(TINY), *args, "--tables", str(tables), "--jobs", "1"]) == 0
    assert (tables / "lr_tiny.csv").exists()


def test_the_command_line_gives_one_line_errors_from_every_step(tmp_path):
    import subprocess
    import sys

    base = [sys.executable, "-m", "experiments.protocol"]
    empty = ["--tables", str(tmp_path / "none"), "--runs-dir", str(tmp_path / "runs")]
    for args in (["verdicts", str(TINY), *empty], ["run", str(TINY), "--jobs", "0", *empty]):
        out = subprocess.run(base + args, capture_output=True, text=True, cwd=CONF.parent)
        assert out.returncode == 2, out.stderr
        assert len(out.stderr.strip().splitlines()) <= 2 and "Traceback" not in out.stderr


def test_ctrl_c_in_protocol_run_ends_in_one_line(tiny, tmp_path):
    """SIGINT to the command's process group (as a terminal's Ctrl-C sends it) while its workers
    train: status 130, one line saying finished runs are kept, no traceback and no arm blamed."""
    root, _ = tiny
    shutil.copytree(root / "tables", tmp_path / "tables")
    args = ["run", str(TINY), "--runs-dir", str(tmp_path / "runs"), "--jobs", "2"]
    args += ["--data-dir", str(root / "data"), "--tables", str(tmp_path / "tables")]
    proc = subprocess.Popen(
        [sys.executable, "-m", "experiments.protocol", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, workers included
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.time() + 120
    while not list((tmp_path / "runs").rglob("config.yaml")) and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the runs ended before they could be interrupted"
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "arm " not in err
    assert err.strip().splitlines()[-1].startswith("interrupted: finished runs are kept")


@pytest.mark.parametrize(
    "damage, said",
    [
        ("copied", "names run"),  # every large-batch seed's record replaced by the small batch's
        ({"test_error": True}, "test_error is True, not a rate"),
        ({"test_error": 7.5}, "test_error is 7.5, not a rate"),
        ({"train_loss": -1.0}, "train_loss is -1.0, not a loss"),
        ({"steps_trained": 2.5}, "steps_trained is 2.5, not a count"),
        ({"status": "done"}, "status is 'done'"),
    ],
)
def test_verdicts_refuse_a_record_that_is_not_its_runs_or_out_of_range(
    tiny, tmp_path, damage, said
):
    """A record copied from another run or holding a value of the wrong type or range stops the
    verdicts with the file named; nothing is judged from it."""
    here = copy_tiny(tiny, tmp_path)
    p = PL.load_protocol(TINY)
    runs = J.collect(p, here, tmp_path / "tables")
    for seed in p["seeds"]:
        folder = runs["large", seed][1]
        if damage == "copied":
            shutil.copy(runs["small", seed][1] / "result.json", folder / "result.json")
        else:
            edit_result(folder, **damage)
    with pytest.raises(P.ProtocolError, match=f"result.json: .*{re.escape(said)}"):
        J.verdicts([str(TINY)], here, tmp_path / "tables")
