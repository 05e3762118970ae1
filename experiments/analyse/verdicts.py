"""The decision rule for the report's verdicts, written down once and applied by one function.

Each claim compares two arms a and b over paired seeds and is stated in its experiment's config::

    rule:
      hypothesis: large batches reach sharper minima that generalise worse
      quantity: test_error      # the effect on generalisation
      direction: greater        # the claimed sign of a − b
      margin: 0.02              # |a − b| < margin counts as no effect (TOST)
      mechanism:                # the sharpness measure the claim is about, tested the same way
        quantity: lambda_max
        direction: greater
        margin_ratio: 0.25      # or margin: ...; a ratio tests log(a/b) against ±log(1 + 0.25)

``mechanism: null`` states a claim with no mechanism part; the key itself must be present.

Part verdicts (effect or mechanism); p is the sign-flip p-value Holm (1979)-adjusted over the whole
report's family of tests, α = 0.05; the first row that holds applies:

    not comparable  a value hit a search bound, or an arm missed the training criterion in some seed;
                    such a part enters no test and is not counted in the Holm family
    reproduced      p < α and a − b has the claimed sign
    reversed        p < α and a − b has the other sign
    not reproduced  TOST (Schuirmann 1987) shows equivalence within ±margin: p_TOST < α
    inconclusive    anything else; reported with the seeds the observed spread would need

Claim verdict = f(effect, mechanism); a claim is reproduced only when both parts are:

    effect \\ mechanism  reproduced   reversed   not reproduced  inconclusive  not comparable
    reproduced          reproduced   partly     partly          partly        not comparable
    reversed            partly       reversed   partly          partly        not comparable
    not reproduced      partly       partly     not reproduced  partly        not comparable
    inconclusive        partly       partly     partly          inconclusive  not comparable
    not comparable      not comparable (whatever the mechanism)
    (no mechanism)      the effect's verdict

That is: either part not comparable → not comparable; both parts agree → their verdict; they
disagree → partly, and the report shows each part's verdict next to it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from experiments.analyse.stats import N_MAX, PairedTest, holm, paired_differences, paired_test
from experiments.schema import validate_rule

REPRODUCED = "reproduced"
REVERSED = "reversed"
NOT_REPRODUCED = "not reproduced"
INCONCLUSIVE = "inconclusive"
PARTLY = "partly"
NOT_COMPARABLE = "not comparable"
PART_VERDICTS = (REPRODUCED, REVERSED, NOT_REPRODUCED, INCONCLUSIVE, NOT_COMPARABLE)
DIRECTIONS = {"greater": 1, "less": -1}
PARTS = ("effect", "mechanism")


@dataclass(frozen=True)
class PartVerdict:
    """The verdict on one part of a claim, a reason in plain words quoting the numbers, and for an
    inconclusive part the fewest seeds that would settle it (None: not needed, or none would)."""

    verdict: str
    reason: str
    seeds_needed: int | None = None
    adjusted_p: float | None = None
    test: PairedTest | None = None


@dataclass(frozen=True)
class ClaimVerdict:
    """A claim's combined verdict (see the table in the module docstring) and both parts."""

    verdict: str
    effect: PartVerdict
    mechanism: PartVerdict | None
    reason: str


@dataclass(frozen=True)
class RulePart:
    """One part of a validated rule; ``relative`` parts are tested on log(a/b) with margin
    log(1 + margin_ratio), so a ratio margin is symmetric in a/b."""

    part: str
    quantity: str
    direction: str
    margin: float
    relative: bool = False


# --- rules ------------------------------------------------------------------------------------------


def rule_parts(rule: Mapping) -> list[RulePart]:
    """The validated rule's parts: the effect, then the mechanism if it has one."""
    validate_rule(rule)
    specs = [("effect", rule)] + ([("mechanism", rule["mechanism"])] if rule["mechanism"] else [])
    return [
        RulePart(
            part,
            str(spec["quantity"]),
            str(spec["direction"]),
            float(spec.get("margin", spec.get("margin_ratio"))),
            "margin_ratio" in spec,
        )
        for part, spec in specs
    ]


def part_test(part: RulePart, a, b, *, alpha: float = 0.05) -> PairedTest:
    """The paired test a rule part prescribes for seed-aligned values a and b."""
    if not part.relative:
        test = paired_test(a, b, margin=part.margin, alpha=alpha)
        return replace(test, scale=f"{part.quantity} a − b")
    paired_differences(a, b)  # the same refusals (lengths, NaN) before taking logs
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if (a <= 0).any() or (b <= 0).any():
        raise ValueError(
            f"{part.quantity}: a margin_ratio needs positive values (it tests log(a/b))"
        )
    test = paired_test(np.log(a), np.log(b), margin=math.log1p(part.margin), alpha=alpha)
    return replace(test, scale=f"log({part.quantity} a/b)")


# --- verdicts ---------------------------------------------------------------------------------------


def _sign(direction: str) -> int:
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be 'greater' or 'less', got {direction!r}")
    return DIRECTIONS[direction]


def _needs(t: PairedTest) -> tuple[int | None, str]:
    """The fewest seeds that would settle an inconclusive part, and the words for it."""
    more = f"more than {N_MAX:,}"
    if t.mean_diff == 0:
        detect = "no number of seeds would detect a zero mean difference"
    else:
        detect = f"detecting a difference this size needs {t.seeds_to_detect or more} seeds"
    if abs(t.mean_diff) >= t.margin:
        equiv = f"equivalence within ±{t.margin:.3g} cannot be shown as the mean lies outside it"
    else:
        equiv = f"showing equivalence within ±{t.margin:.3g} needs {t.seeds_to_equivalence or more} seeds"
    words = (
        f"{detect}, {equiv} (α = {t.alpha:g}, power 0.8, observed SD {t.sd_diff:.3g}); "
        f"{t.resolve_n} seeds could resolve a margin of ±{t.resolvable_margin:.3g}"
    )
    options = [n for n in (t.seeds_to_detect, t.seeds_to_equivalence) if n is not None]
    return (min(options) if options else None), words


def decide(adjusted_p: float, mean_diff: float, direction: str, p_tost: float, alpha: float) -> str:
    """The rule, from the numbers alone: *reproduced* if the Holm-adjusted p is below α and the
    effect goes the claimed way, *reversed* if below α the other way, *not reproduced* if TOST shows
    it within the margin, else *inconclusive*. The report re-applies it to the verdicts table."""
    sign = _sign(direction)
    if adjusted_p < alpha and sign * mean_diff > 0:
        return REPRODUCED
    if adjusted_p < alpha and sign * mean_diff < 0:
        return REVERSED
    if p_tost < alpha:
        return NOT_REPRODUCED
    return INCONCLUSIVE


def part_verdict(
    test: PairedTest,
    adjusted_p: float,
    direction: str,
    alpha: float = 0.05,
    *,
    family_size: int | None = None,
) -> PartVerdict:
    """The verdict on one part from its paired test and its Holm-adjusted sign-flip p-value
    (``family_size``, the number of tests Holm ran over, only goes into the reason)."""
    sign = _sign(direction)
    if not 0 <= adjusted_p <= 1:
        raise ValueError(f"adjusted p must lie in [0, 1], got {adjusted_p}")
    t = test
    claimed = "a > b" if sign > 0 else "a < b"
    observed = (
        f"{t.scale} = {t.mean_diff:+.3g} "
        f"({100 * (1 - t.alpha):g}% CI {t.ci_low:+.3g} to {t.ci_high:+.3g}, {t.n} seeds)"
    )
    over = f" over {family_size} test{'s' * (family_size != 1)}" if family_size else ""
    p_words = f"sign-flip p = {t.p_signflip:.3g}, {adjusted_p:.3g} after Holm{over}"
    tost_words = (
        f"TOST p = {t.p_tost:.3g}, {100 * (1 - 2 * t.alpha):g}% CI "
        f"{t.tost_ci_low:+.3g} to {t.tost_ci_high:+.3g}"
    )
    keep = {"adjusted_p": float(adjusted_p), "test": test}
    verdict = decide(adjusted_p, t.mean_diff, direction, t.p_tost, alpha)
    if verdict == REPRODUCED:
        small = f"; smaller than the margin ±{t.margin:.3g} though ({tost_words})"
        reason = f"{observed} goes the claimed way ({claimed}); {p_words} < {alpha:g}"
        return PartVerdict(REPRODUCED, reason + (small if t.p_tost < alpha else "") + ".", **keep)
    if verdict == REVERSED:
        reason = f"{observed} goes against the claim ({claimed}); {p_words} < {alpha:g}."
        return PartVerdict(REVERSED, reason, **keep)
    if verdict == NOT_REPRODUCED:
        reason = (
            f"{observed} is not significant ({p_words} ≥ {alpha:g}) and lies within "
            f"±{t.margin:.3g}: {tost_words}."
        )
        return PartVerdict(NOT_REPRODUCED, reason, **keep)
    seeds, needs = _needs(t)
    reason = (
        f"{observed} is neither significant ({p_words} ≥ {alpha:g}) nor shown within "
        f"±{t.margin:.3g} ({tost_words}); {needs}."
    )
    return PartVerdict(INCONCLUSIVE, reason, seeds_needed=seeds, **keep)


def not_comparable(reason: str) -> PartVerdict:
    return PartVerdict(NOT_COMPARABLE, reason)


def claim_verdict(effect: PartVerdict, mechanism: PartVerdict | None = None) -> ClaimVerdict:
    """Combine a claim's two part verdicts by the table in the module docstring."""
    for part in (effect, mechanism):
        if part is not None and part.verdict not in PART_VERDICTS:
            raise ValueError(f"not a part verdict: {part.verdict!r}")
    if mechanism is None:
        return ClaimVerdict(
            effect.verdict, effect, None, f"effect {effect.verdict}; no mechanism part"
        )
    verdict = combine_parts(effect.verdict, mechanism.verdict)
    return ClaimVerdict(
        verdict, effect, mechanism, f"effect {effect.verdict}, mechanism {mechanism.verdict}"
    )


def combine_parts(effect: str, mechanism: str | None) -> str:
    """A claim's verdict from its parts' (the table in the module docstring)."""
    if mechanism is None or (isinstance(mechanism, float) and mechanism != mechanism):
        return effect
    if NOT_COMPARABLE in (effect, mechanism):
        return NOT_COMPARABLE
    return effect if effect == mechanism else PARTLY


def _flags(value) -> list[bool]:
    """Flatten a bool, or nested sequences / arrays of bools (e.g. one list per arm over seeds)."""
    if isinstance(value, (bool, np.bool_)):
        return [bool(value)]
    if isinstance(value, np.ndarray) and value.dtype == bool:
        return [bool(v) for v in value.ravel()]
    if isinstance(value, Sequence) and not isinstance(value, str):
        return [flag for item in value for flag in _flags(item)]
    raise ValueError(f"expected booleans, got {value!r}")


def verdict_family(
    rows: Sequence[tuple[str, str, PairedTest | None, str]],
    *,
    at_bound: Sequence | None = None,
    reached_criterion: Sequence | None = None,
    alpha: float = 0.05,
) -> dict[str, ClaimVerdict]:
    """Verdicts for the whole report, with Holm applied once across its family of tests.

    ``rows``: (claim, part, test, direction) with part "effect" or "mechanism", one effect row per
    claim and at most one mechanism row. ``at_bound[i]``: whether row i's metric hit a search bound
    (a bool or per-seed bools); ``reached_criterion[i]``: whether each arm reached the training
    criterion (a bool, or per arm per seed bools). A row at a bound, or with any False criterion, is
    not comparable and never enters the family (its test may be None). Returns claim → verdict, in
    order of first appearance.
    """
    rows = [tuple(row) for row in rows]
    at_bound = [False] * len(rows) if at_bound is None else list(at_bound)
    reached_criterion = [True] * len(rows) if reached_criterion is None else list(reached_criterion)
    if not len(at_bound) == len(reached_criterion) == len(rows):
        raise ValueError("at_bound and reached_criterion need one entry per row")
    parts: dict[str, dict[str, PartVerdict | None]] = {}
    family: list[int] = []
    for i, row in enumerate(rows):
        if len(row) != 4:
            raise ValueError(f"row {i}: expected (claim, part, test, direction), got {row!r}")
        claim, part, test, direction = row
        _sign(direction)
        if part not in PARTS:
            raise ValueError(f"row {i}: part must be 'effect' or 'mechanism', got {part!r}")
        if part in parts.setdefault(claim, {}):
            raise ValueError(f"claim {claim!r} has two {part} rows")
        if any(_flags(at_bound[i])):
            parts[claim][part] = not_comparable(
                "a value hit the bound of its search, so it is a limit rather than a measurement; "
                "it enters no test."
            )
        elif not all(_flags(reached_criterion[i])):
            parts[claim][part] = not_comparable(
                "an arm missed the training criterion in at least one seed, so the arms are not "
                "compared at equal training loss; it enters no test."
            )
        elif test is None:
            raise ValueError(f"claim {claim!r} {part}: a comparable row needs a PairedTest")
        else:
            parts[claim][part] = None  # filled in once the family's p-values are adjusted
            family.append(i)
    adjusted = holm([rows[i][2].p_signflip for i in family])
    for i, p in zip(family, adjusted, strict=True):
        claim, part, test, direction = rows[i]
        parts[claim][part] = part_verdict(test, float(p), direction, alpha, family_size=len(family))
    verdicts = {}
    for claim, found in parts.items():
        if "effect" not in found:
            raise ValueError(f"claim {claim!r} has a mechanism row but no effect row")
        verdicts[claim] = claim_verdict(found["effect"], found.get("mechanism"))
    return verdicts
