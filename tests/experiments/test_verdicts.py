"""experiments.analyse.verdicts on hand-made tables: every branch of the rule, Holm across the family, the
combined-verdict table, and malformed rules."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from omegaconf import OmegaConf

from experiments.analyse.stats import paired_test
from experiments.analyse.verdicts import (
    INCONCLUSIVE,
    NOT_COMPARABLE,
    NOT_REPRODUCED,
    PARTLY,
    REPRODUCED,
    REVERSED,
    PartVerdict,
    RulePart,
    claim_verdict,
    part_test,
    part_verdict,
    rule_parts,
    validate_rule,
    verdict_family,
)

# Hand-made per-seed differences a − b (10 seeds), and what each must give, argued without the code:
# UP: all positive, so the sign-flip p is 2/1024 (only all-plus and all-minus reach the sum).
UP = np.array([0.05, 0.04, 0.06, 0.05, 0.07, 0.03, 0.05, 0.06, 0.04, 0.05])
# FLAT: sums to 0, so sign-flip p = 1; spread 0.001 ≪ margin 0.02, so TOST shows equivalence.
FLAT = np.array([0.001, -0.001, 0.002, -0.002, 0.001, -0.001, 0.0, 0.0, 0.001, -0.001])
# NOISY: mean 0.02 = the margin, so TOST cannot show equivalence; signs mixed, p large.
NOISY = np.array([0.09, -0.05, 0.08, -0.04, 0.06, -0.06, 0.1, -0.03, 0.05, 0.0])
# NINE_OF_TEN: ±0.01 with one minus: k minus signs sum to (10 − 2k)·0.01, |·| ≥ 0.08 for
# k ∈ {0, 1, 9, 10}: p = 22/1024 ≈ 0.021 < 0.05 nominally; Holm over 4 tests: 4·22/1024 ≈ 0.086.
NINE_OF_TEN = np.array([0.01] * 9 + [-0.01])
MARGIN = 0.02


def make_test(d, margin=MARGIN):
    return paired_test(np.asarray(d), np.zeros(len(d)), margin=margin)


def brute_signflip(d):
    observed = round(abs(sum(d)), 9)
    flips = list(itertools.product((1, -1), repeat=len(d)))
    hits = sum(
        round(abs(sum(s * x for s, x in zip(f, d, strict=True))), 9) >= observed for f in flips
    )
    return hits / len(flips)


def test_hand_made_inputs_are_what_the_comments_say():
    assert brute_signflip(UP) == 2 / 1024
    assert brute_signflip(FLAT) == 1.0
    assert brute_signflip(NOISY) > 0.2
    assert brute_signflip(NINE_OF_TEN) == pytest.approx(22 / 1024)
    assert NOISY.mean() == pytest.approx(MARGIN)


# --- one part -----------------------------------------------------------------------------------


def test_part_reproduced_quotes_its_numbers():
    v = part_verdict(make_test(UP), 2 / 1024, "greater")
    assert v.verdict == REPRODUCED
    assert "+0.05" in v.reason and "10 seeds" in v.reason and "0.00195" in v.reason
    assert v.seeds_needed is None


def test_part_reversed_when_significant_the_other_way():
    v = part_verdict(make_test(UP), 2 / 1024, "less")
    assert v.verdict == REVERSED
    assert "against the claim" in v.reason


def test_part_not_reproduced_when_equivalent():
    test = make_test(FLAT)
    v = part_verdict(test, 1.0, "greater")
    assert v.verdict == NOT_REPRODUCED
    assert f"±{MARGIN:.3g}" in v.reason and "TOST" in v.reason


def test_part_inconclusive_reports_seeds_needed():
    test = make_test(NOISY)
    v = part_verdict(test, test.p_signflip, "greater")
    assert v.verdict == INCONCLUSIVE
    # The mean sits on the margin, so only detection can settle it, and it needs more than 10 seeds.
    assert test.seeds_to_equivalence is None
    assert v.seeds_needed == test.seeds_to_detect and v.seeds_needed > 10
    assert f"{v.seeds_needed} seeds" in v.reason
    assert "cannot be shown" in v.reason


def test_part_verdict_uses_the_adjusted_p_not_the_raw_one():
    test = make_test(NINE_OF_TEN, margin=0.005)
    assert test.p_signflip < 0.05
    assert part_verdict(test, test.p_signflip, "greater").verdict == REPRODUCED
    # Mean 0.008 > margin 0.005: not equivalent either, so a non-significant p leaves it open.
    assert part_verdict(test, 4 * test.p_signflip, "greater").verdict == INCONCLUSIVE


def test_part_verdict_refuses_bad_direction_and_p():
    with pytest.raises(ValueError, match="direction"):
        part_verdict(make_test(UP), 0.01, "bigger")
    with pytest.raises(ValueError):
        part_verdict(make_test(UP), 1.5, "greater")


# --- the combined verdict ---------------------------------------------------------------------------


def stub(verdict):
    return PartVerdict(verdict, f"stub {verdict}")


@pytest.mark.parametrize(
    ("effect", "mechanism", "expected"),
    [
        (REPRODUCED, REPRODUCED, REPRODUCED),
        (REPRODUCED, INCONCLUSIVE, PARTLY),
        (INCONCLUSIVE, REPRODUCED, PARTLY),
        (REPRODUCED, REVERSED, PARTLY),
        (NOT_REPRODUCED, NOT_REPRODUCED, NOT_REPRODUCED),
        (REVERSED, REVERSED, REVERSED),
        (INCONCLUSIVE, INCONCLUSIVE, INCONCLUSIVE),
        (NOT_REPRODUCED, REVERSED, PARTLY),
        (REPRODUCED, NOT_COMPARABLE, NOT_COMPARABLE),
        (NOT_COMPARABLE, REPRODUCED, NOT_COMPARABLE),
    ],
)
def test_claim_verdict_table(effect, mechanism, expected):
    claim = claim_verdict(stub(effect), stub(mechanism))
    assert claim.verdict == expected
    assert claim.effect.verdict == effect and claim.mechanism.verdict == mechanism
    assert effect in claim.reason and mechanism in claim.reason


def test_claim_without_mechanism_takes_the_effect_verdict():
    assert claim_verdict(stub(REVERSED), None).verdict == REVERSED


def test_claim_verdict_refuses_a_combined_verdict_as_a_part():
    with pytest.raises(ValueError):
        claim_verdict(stub(PARTLY), stub(REPRODUCED))


# --- the family -------------------------------------------------------------------------------------


def test_family_reaches_every_branch_and_a_constant_rule_would_fail():
    rows = [
        ("flat batches", "effect", make_test(UP), "greater"),
        ("flat batches", "mechanism", make_test(UP), "greater"),
        ("adam", "effect", make_test(UP), "less"),
        ("adam", "mechanism", make_test(UP), "less"),
        ("weight decay", "effect", make_test(FLAT), "greater"),
        ("weight decay", "mechanism", make_test(FLAT), "less"),
        ("ghost bn", "effect", make_test(NOISY), "greater"),
        ("ghost bn", "mechanism", make_test(NOISY), "greater"),
        ("rescaling", "effect", make_test(UP), "greater"),
        ("rescaling", "mechanism", make_test(NOISY), "greater"),
        ("epsilon", "effect", make_test(UP), "greater"),
        ("epsilon", "mechanism", None, "greater"),
        ("long run", "effect", make_test(UP), "greater"),
        ("long run", "mechanism", make_test(UP), "greater"),
    ]
    at_bound = [False] * len(rows)
    at_bound[11] = [False] * 9 + [True]  # one seed's ε-sharpness hit its search bound
    reached = [True] * len(rows)
    reached[12] = ([True] * 10, [True] * 9 + [False])  # arm b missed the criterion in one seed
    # 12 comparable rows; UP's 2/1024 · 12 ≈ 0.023 < 0.05 stays significant after Holm.
    expected = {
        "flat batches": REPRODUCED,
        "adam": REVERSED,
        "weight decay": NOT_REPRODUCED,
        "ghost bn": INCONCLUSIVE,
        "rescaling": PARTLY,
        "epsilon": NOT_COMPARABLE,
        "long run": NOT_COMPARABLE,
    }
    verdicts = verdict_family(rows, at_bound=at_bound, reached_criterion=reached)
    assert {claim: v.verdict for claim, v in verdicts.items()} == expected
    assert verdicts["rescaling"].mechanism.verdict == INCONCLUSIVE
    assert verdicts["rescaling"].mechanism.seeds_needed > 10
    assert "search" in verdicts["epsilon"].mechanism.reason
    assert "criterion" in verdicts["long run"].effect.reason
    assert verdicts["flat batches"].effect.adjusted_p == pytest.approx(12 * 2 / 1024)
    assert "after Holm over 12 tests" in verdicts["flat batches"].effect.reason
    # A rule that always said "reproduced" would get most of this table wrong.
    assert sum(v != REPRODUCED for v in expected.values()) == 6


def test_holm_turns_a_nominally_significant_part_non_significant():
    small = verdict_family([("nine of ten", "effect", make_test(NINE_OF_TEN, 0.005), "greater")])
    assert small["nine of ten"].verdict == REPRODUCED
    rows = [
        ("nine of ten", "effect", make_test(NINE_OF_TEN, 0.005), "greater"),
        ("other", "effect", make_test(FLAT), "greater"),
        ("other", "mechanism", make_test(FLAT), "greater"),
        ("third", "effect", make_test(FLAT), "greater"),
    ]
    big = verdict_family(rows)
    part = big["nine of ten"].effect
    assert part.test.p_signflip < 0.05
    assert part.adjusted_p == pytest.approx(4 * 22 / 1024)  # smallest of 4: times 4
    assert big["nine of ten"].verdict == INCONCLUSIVE


def test_rows_left_out_do_not_count_in_the_family():
    rows = [
        ("a", "effect", make_test(NINE_OF_TEN, 0.005), "greater"),
        ("b", "effect", make_test(FLAT), "greater"),
        ("c", "effect", None, "greater"),
    ]
    verdicts = verdict_family(rows, at_bound=[False, False, True])
    assert verdicts["a"].effect.adjusted_p == pytest.approx(2 * 22 / 1024)
    assert verdicts["a"].verdict == REPRODUCED
    assert verdicts["c"].verdict == NOT_COMPARABLE


@pytest.mark.parametrize(
    ("rows", "kwargs", "words"),
    [
        ([("x", "effect", None, "greater")], {}, "needs a PairedTest"),
        ([("x", "mechanism", make_test(UP), "greater")], {}, "no effect row"),
        ([("x", "effect", make_test(UP), "greater")] * 2, {}, "two effect rows"),
        ([("x", "effect", make_test(UP), "greater")], {"at_bound": [False, False]}, "one entry"),
        ([("x", "cause", make_test(UP), "greater")], {}, "part must be"),
        ([("x", "effect", make_test(UP), "up")], {}, "direction"),
    ],
)
def test_family_refuses_malformed_rows(rows, kwargs, words):
    with pytest.raises(ValueError, match=words):
        verdict_family(rows, **kwargs)


# --- rules ------------------------------------------------------------------------------------------

GOOD_RULE = {
    "hypothesis": "large batches reach sharper minima that generalise worse",
    "quantity": "test_error",
    "direction": "greater",
    "margin": 0.02,
    "mechanism": {"quantity": "lambda_max", "direction": "greater", "margin_ratio": 0.25},
}


def with_(change, drop=(), mechanism=None):
    rule = {**GOOD_RULE, **change}
    if mechanism is not None:
        rule["mechanism"] = {**GOOD_RULE["mechanism"], **mechanism}
    for key in drop:
        rule.pop(key)
    return rule


def test_good_rules_pass():
    validate_rule(GOOD_RULE)
    validate_rule(OmegaConf.create(GOOD_RULE))
    validate_rule(with_({"mechanism": None}))
    parts = rule_parts(GOOD_RULE)
    assert parts == [
        RulePart("effect", "test_error", "greater", 0.02, False),
        RulePart("mechanism", "lambda_max", "greater", 0.25, True),
    ]


@pytest.mark.parametrize(
    "rule",
    [
        with_({}, drop=["quantity"]),
        with_({}, drop=["direction"]),
        with_({}, drop=["margin"]),
        with_({}, drop=["hypothesis"]),
        with_({}, drop=["mechanism"]),
        with_({"direction": "up"}),
        with_({"margin": 0}),
        with_({"margin": -0.01}),
        with_({"margin": math.nan}),
        with_({"margin": math.inf}),
        with_({"margin": "0.02"}),
        with_({"margin": True}),
        with_({"margin_ratio": 0.1}),  # both margin and margin_ratio
        with_({"margn": 0.02}),
        with_({"hypothesis": ""}),
        with_({}, mechanism={"direction": "sideways"}),
        with_({}, mechanism={"margin_ratio": -1.0}),
        with_({"mechanism": {"quantity": "lambda_max", "direction": "less"}}),
        with_({"mechanism": "lambda_max"}),
        ["not", "a", "mapping"],
    ],
)
def test_malformed_rules_raise_one_line(rule):
    with pytest.raises(ValueError) as info:
        validate_rule(rule)
    assert "\n" not in str(info.value)


def test_part_test_absolute_and_ratio():
    rng = np.random.default_rng(0)
    b = rng.uniform(1.0, 2.0, 10)
    effect, mechanism = rule_parts(GOOD_RULE)
    absolute = part_test(effect, b + 0.1, b)
    assert absolute.mean_diff == pytest.approx(0.1) and absolute.margin == 0.02
    ratio = part_test(mechanism, 2 * b, b)  # a/b = 2 exactly
    assert ratio.mean_diff == pytest.approx(math.log(2))
    assert ratio.margin == pytest.approx(math.log(1.25))
    assert "log" in ratio.scale
    assert part_verdict(ratio, ratio.p_signflip, "greater").verdict == REPRODUCED
    with pytest.raises(ValueError, match="positive"):
        part_test(mechanism, b - 1.5, b)
    with pytest.raises(ValueError, match="length"):
        part_test(mechanism, b[:9], b)


def test_saved_surfaces_are_exported_as_a_table_and_drawn_from_it(tmp_path):
    """The verdicts step exports every run's own surface record; the report's figure draws that
    table (seed 0's planes, every seed's centre slice) and writes exactly what it drew."""
    import numpy as np
    import pandas as pd

    from experiments.analyse.judge import surface_frame
    from experiments.report.figures import surfaces_figure
    from flatness.surface import Surface

    p = {"name": "t", "base": {"surface": "2d"}, "arms": {"a": {}, "b": {}}}
    xs = np.linspace(-1, 1, 5)
    runs = {}
    for arm, steep in (("a", 1.0), ("b", 3.0)):
        for seed in (0, 1):
            folder = tmp_path / f"{arm}{seed}"
            folder.mkdir()
            loss = steep * (xs[:, None] ** 2 + 0.5 * xs[None, :] ** 2) + 0.01 * (seed + 1)
            values = {"train_loss": loss, "test_loss": loss + 0.3, "train_acc": 1 - loss / 9,
                      "test_acc": 0.9 - loss / 9}  # fmt: skip
            Surface([xs, xs], values).save(folder / "surface_2d")
            runs[arm, seed] = ({"status": "finished", "stop_reason": "train_until_loss",
                                "train_loss": 0.01}, folder)  # fmt: skip
    frame = surface_frame(p, runs)
    assert len(frame) == 4 * 25 and frame["reached"].all()
    point = frame[
        (frame["arm"] == "b") & (frame["seed"] == 1) & (frame["x"] == 1.0) & (frame["y"] == 0.5)
    ]
    assert point["train_loss"].item() == pytest.approx(3.0 * (1 + 0.5 * 0.25) + 0.02)  # ij indexing
    bare = {key: (res, tmp_path / "nowhere") for key, (res, _) in runs.items()}
    assert surface_frame(p, bare).empty  # runs that recorded no surface export nothing
    made = surfaces_figure(frame, ["a", "b"], tmp_path / "figures", "t_surfaces")
    drawn = pd.read_csv(tmp_path / "figures" / "t_surfaces.csv")
    assert made == "t_surfaces.png" and set(drawn["arm"]) == {"a", "b"}
    assert set(drawn["seed"]) == {0}  # the planes: each arm's lowest seed that met the criterion
    frame.loc[(frame["arm"] == "a") & (frame["seed"] == 0), "reached"] = False
    surfaces_figure(frame, ["a", "b"], tmp_path / "figures", "t_surfaces")
    drawn = pd.read_csv(tmp_path / "figures" / "t_surfaces.csv")
    assert drawn.groupby("arm")["seed"].unique().map(list).to_dict() == {"a": [1], "b": [0]}


def test_keskars_interpolation_is_drawn_from_the_measured_pairs(tmp_path):
    import json

    import pandas as pd

    from experiments.report.figures import interpolation_figure

    ts = [-0.5, 0.0, 0.5, 1.0, 1.5]
    rows = []
    for seed in (0, 1, 2):
        line = {"t": ts, "train_loss": [1.0, 0.01, 0.5 + seed, 0.02, 2.0],
                "test_loss": [1.2, 0.3, 0.9, 0.4, 2.2], "train_acc": [0.5, 1.0, 0.8, 1.0, 0.3],
                "test_acc": [0.4, 0.85 + 0.01 * seed, 0.7, 0.8, 0.2]}  # fmt: skip
        rows.append({"pair": "small_to_large", "a": "small", "b": "large", "seed": seed,
                     "interpolation": json.dumps(line)})  # fmt: skip
    rows.append({"pair": "other", "a": "x", "b": "y", "seed": 0, "interpolation": None})
    made = interpolation_figure(pd.DataFrame(rows), tmp_path, "t_interpolation")
    drawn = pd.read_csv(tmp_path / "t_interpolation.csv")
    assert made == "t_interpolation.png" and set(drawn["pair"]) == {"small_to_large"}
    assert len(drawn) == 3 * len(ts) and set(drawn["seed"]) == {0, 1, 2}
    mid = drawn[(drawn["t"] == 0.5)].sort_values("seed")["train_loss"].tolist()
    assert mid == [0.5, 1.5, 2.5]  # every seed's own line, as measured
    assert interpolation_figure(pd.DataFrame(rows[-1:]), tmp_path, "none") is None


def test_a_pair_without_the_interpolation_keeps_its_record_name():
    from pathlib import Path

    from experiments.pairs import record_path, settings_of

    plain = settings_of({"name": "p", "a": "x", "b": "y"})
    assert plain == {"points": 21, "subset": 4000}  # as before the test key existed
    assert settings_of({"name": "p", "a": "x", "b": "y", "test": True})["test"] is True
    assert record_path(Path("a"), Path("b"), plain).name == "b-points21-subset4000.json"
