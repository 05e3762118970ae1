"""The verdicts of ``python -m experiments.protocol verdicts``: the final runs of each protocol
paired by seed, the measured quantities read from the runs' records (slice sharpness from their
surface record), not-comparable arms set aside, and the decision rule of :mod:`experiments.analyse.verdicts`
applied once over every comparison given (one Holm family), written as tidy tables."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from experiments import exports
from experiments.analyse.explanations import write_intervals
from experiments.analyse.mechanism import write_mechanism
from experiments.analyse.sharpness_by_batch import write_tau_table
from experiments.analyse.stats import PairedTest, kendall_tau_bootstrap, t_interval
from experiments.analyse.tune import read_rates
from experiments.analyse.verdicts import part_test, rule_parts, verdict_family
from experiments.criterion import reached
from experiments.errors import ProtocolError
from experiments.machine import describe_machine
from experiments.pairs import pair_rows
from experiments.plan import arm_keys, final_specs, load_protocol, load_result, source_of
from experiments.store import write_table
from flatness.io import atomic_write_bytes

# --- verdicts -----------------------------------------------------------------------------------------


def surface_frame(p: Mapping[str, Any], runs: Mapping) -> pd.DataFrame:
    """Every final run's saved 1D/2D loss surface as tidy rows (:func:`experiments.exports.surface_frame`)."""
    return exports.surface_frame(runs, lambda arm, result: reached_of(p, arm, result))


FIGURE_TABLES = ("surfaces", "pca_planes", "pca_paths", "tracked", "spectra")


def figure_tables(p: Mapping[str, Any], runs: Mapping) -> dict[str, pd.DataFrame]:
    """The tables the report's pictures of this protocol read (:mod:`experiments.exports`), by the
    name they are saved under; only those the runs recorded, and only of the protocol's own arms
    (a ``same_as`` arm's runs are pictured with the protocol that trained them)."""
    runs = {key: value for key, value in runs.items() if source_of(p, key[0]) is None}

    def counts(arm, result):
        return reached_of(p, arm, result)

    planes, paths = exports.pca_frames(runs, counts)
    tables = {
        "surfaces": exports.surface_frame(runs, counts),
        "pca_planes": planes,
        "pca_paths": paths,
        "tracked": exports.tracked_frame(runs, counts),
        "spectra": exports.spectra_frame(runs, counts),
    }
    return {name: frame for name, frame in tables.items() if not frame.empty}


def slice_sharpness(folder: Path, p: Mapping[str, Any], spec: Mapping[str, Any]) -> float:
    """Mean rise of ``spec['value']`` at ±``spec['at']`` along each direction of the run's surface
    record, over the centre (Li et al. 2018's slices); refuses a record of other settings."""
    from flatness.surface import Surface

    kind = spec["surface"]
    surf = Surface.load(folder / f"surface_{kind}")
    stated = {k.split(".", 1)[1]: v for k, v in p["base"].items() if k.startswith("surface.")}
    for key in ("seed", "normalization", "ignore", "subset"):
        if key in stated and surf.settings.get(key) != stated[key]:
            raise ProtocolError(
                f"{folder}/surface_{kind} was measured with {key}={surf.settings.get(key)!r}, the "
                f"protocol states {stated[key]!r}: delete its measurements/final/surface-*.json and run again"
            )
    at, v = spec["at"], surf.values[spec["value"]]
    centre = tuple(int(np.argmin(np.abs(c))) for c in surf.coords)
    if any(
        abs(c[i]) > 1e-9 or not c[0] <= -at < at <= c[-1]
        for c, i in zip(surf.coords, centre, strict=True)
    ):
        raise ProtocolError(f"{folder}/surface_{kind}: its grid must hold 0 and span ±{at}")
    rises = []
    for axis, coords in enumerate(surf.coords):
        line = v[(slice(None),) + centre[1:]] if axis == 0 else v[centre[0], :]
        rises += list(np.interp([-at, at], coords, line) - v[centre])
    return float(np.mean(rises))


def value_of(result: Mapping[str, Any], folder: Path, quantity: str, p: Mapping[str, Any]):
    """(value, at_bound) of a quantity of one run: a top-level number of result.json, a metric
    (``metrics.<name>.value``, bound from ``extra.at_bound``) or a derived one; NaN when absent."""
    if quantity in p.get("derived", {}):
        spec = p["derived"][quantity]
        if "numerator" in spec:
            return ratio_of(result, folder, spec, p)
        return slice_sharpness(folder, p, spec), False
    if isinstance(result.get(quantity), (int, float)):
        return float(result[quantity]), False
    entry = result.get("metrics", {}).get(quantity)
    if entry is None or entry.get("value") is None:
        return math.nan, False
    return float(entry["value"]), bool((entry.get("extra") or {}).get("at_bound", False))


def ratio_of(result: Mapping[str, Any], folder: Path, spec: Mapping[str, Any], p):
    """A derived ratio: the geometric mean of the ``numerator`` quantities over the ``denominator``
    quantity (e.g. mean small-batch λmax over whole-set λmax); at a bound if any part is."""
    parts = [value_of(result, folder, q, p) for q in [*spec["numerator"], spec["denominator"]]]
    values = np.array([v for v, _ in parts], dtype=float)
    if not np.all(values > 0):
        return math.nan, False
    top = float(np.exp(np.mean(np.log(values[:-1]))))
    return top / values[-1], any(b for _, b in parts)


def reached_of(p: Mapping[str, Any], arm: str, result: Mapping[str, Any]) -> bool:
    """Whether a run of ``arm`` counts (:func:`experiments.runs.reached`)."""
    return reached(result, fixed_budget=bool(arm_keys(p, arm).get("fixed_budget")))


def tau_test(x, y, groups, margin: float, n_boot: int, alpha: float = 0.05, label: str = "τ"):
    """Kendall's τ with its seed-bootstrap interval as a PairedTest (mean_diff = τ), so the claim
    enters verdict_family's Holm family: p inverts the percentile interval (the smallest α whose
    interval excludes 0), p_TOST the smallest α whose (1 − 2α) interval lies within ±margin."""

    def interval(a: float) -> tuple[float, float]:
        return kendall_tau_bootstrap(x, y, groups, n_boot=n_boot, seed=0, alpha=a)[1:]

    def smallest(holds, floor: float) -> float:
        lo, hi = floor, 1.0
        if not holds(hi):
            return 1.0
        if holds(lo):
            return lo
        for _ in range(12):
            mid = math.sqrt(lo * hi)
            lo, hi = (lo, mid) if holds(mid) else (mid, hi)
        return hi

    floor = 2 / (n_boot + 1)
    tau, lo, hi = kendall_tau_bootstrap(x, y, groups, n_boot=n_boot, seed=0, alpha=alpha)
    p = smallest(lambda a: not interval(a)[0] <= 0 <= interval(a)[1], floor)

    def within(a: float) -> bool:
        return -margin < interval(a)[0] and interval(a)[1] < margin

    # the median outside ±margin: no (1 − 2α) interval lies within it, p_TOST ≥ 0.5; report 1
    p_tost = smallest(within, floor) / 2 if within(1.0) else 1.0
    t_lo, t_hi = interval(2 * alpha)
    n = len(set(np.asarray(groups).tolist()))
    nan = (
        math.nan
    )  # PairedTest's fields in order; no t statistic, SD or power for a rank correlation
    fields = (n, tau, nan, lo, hi, nan, p, margin, p_tost, t_lo, t_hi, alpha, None, None, nan, n)
    return PairedTest(*fields, scale=label)


def collect(p: Mapping[str, Any], common: Mapping[str, Any], tables: Path) -> dict:
    """Every final run's result by (arm, seed); refuses missing runs."""
    runs, missing = {}, []
    for s in final_specs(p, read_rates(p, tables), common):
        result, folder = load_result(s, common)
        if result is None or "stop_reason" not in result:
            missing.append(str(folder))
        runs[s.arm, s.seed] = (result, folder)
    if missing:
        raise ProtocolError(
            f"{p['name']}: {len(missing)} final runs have no result (first: {missing[0]}): "
            f"run `python -m experiments.protocol run {p['name']}`"
        )
    return runs


RUN_FIELDS = (
    "status",
    "stop_reason",
    "steps_trained",
    "epochs_trained",
    "train_loss",
    "train_error",
    "val_error",
    "test_error",
    "gap",
)


def run_rows(p: Mapping[str, Any], runs: Mapping, rates: Mapping[str, float]) -> list[dict]:
    """One row per final run: its arm, rate, seed, where training stopped and how long it took
    (the report's setup and per-seed tables read these, never the run directories)."""
    rows, params = [], {}
    for (arm, seed), (result, folder) in runs.items():
        timings = result.get("timings") or {}
        if arm not in params:  # one architecture per arm: its first run's weights suffice
            params[arm] = _n_params(folder)
        rows.append(
            {
                "protocol": p["name"],
                "arm": arm,
                "seed": seed,
                "lr": rates[arm],
                "batch_size": (result.get("config") or {}).get("batch_size"),
                **{k: result.get(k) for k in RUN_FIELDS},
                "train_s": timings.get("train_s"),
                "measure_s": timings.get("measure_s"),
                "num_train": result.get("num_train"),
                "num_val": result.get("num_val"),
                "num_test": result.get("num_test"),
                "device": result.get("device"),
                "git_commit": result.get("git_commit"),
                "n_params": params[arm],
                "settings": _settings(result.get("config") or {}),
                "run_dir": str(folder),
            }
        )
    return rows


def metric_rows(p: Mapping[str, Any], runs: Mapping) -> list[dict]:
    """Every recorded metric of every final run, one row each (value, error bound, at a bound):
    what the report shows beside the verdicts when no comparison names a quantity."""
    rows = []
    for (arm, seed), (result, _) in runs.items():
        for name, entry in (result.get("metrics") or {}).items():
            value = entry.get("value") if isinstance(entry, Mapping) else None
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                continue  # lists (spectra) and failures are in the run's own records
            rows.append(
                {
                    "protocol": p["name"],
                    "arm": arm,
                    "seed": seed,
                    "metric": name,
                    "value": float(value),
                    "error_bound": entry.get("error_bound"),
                    "at_bound": bool((entry.get("extra") or {}).get("at_bound", False)),
                }
            )
    return rows


def _settings(config: Mapping[str, Any]) -> str:
    """Every setting of the optimizer, schedule, model and data as the run resolved it. The
    optimizer group's own lr and weight_decay are left out: the run's top-level ``lr`` and
    ``weight_decay`` override them, and are shown instead."""
    shadowed = ("optimizer.lr", "optimizer.weight_decay")
    keep = ("optimizer.", "model.", "dataset.", "lr_")
    items = [(k, config[k]) for k in ("lr", "weight_decay", "batch_size") if k in config]
    items += [(k, v) for k, v in sorted(config.items()) if k.startswith(keep) and k not in shadowed]
    return "; ".join(f"{k}={v}" for k, v in items)


def _n_params(folder: Path) -> int | None:
    """Trainable parameters of a run's model, from its saved weights (batch-norm statistics and
    other buffers excluded)."""
    import torch

    try:
        state = torch.load(folder / "init.pt", weights_only=True)
    except (OSError, RuntimeError):
        return None
    skip = ("running_mean", "running_var", "num_batches_tracked", "_extra_state")
    return sum(v.numel() for k, v in state.items() if not k.endswith(skip))


def environment() -> dict[str, Any]:
    """The machine the verdicts were computed on (each run records its own: ``machine``)."""
    m = describe_machine()
    return {k: m[k] for k in ("cpu", "cores", "python", "torch", "cuda")}


def comparison_rows(p, c, runs) -> tuple[list, list[dict]]:
    """One comparison's family rows (claim, rule part, test, at_bound, reached) and its tidy
    per-seed values (secondary quantities included)."""
    kind = c.get("kind", "paired")
    tau, interaction = kind == "kendall_tau", kind == "interaction"
    arms = c["arms"] if tau else c["a"] + c["b"] if interaction else [c["a"], c["b"]]
    roles = ["a", "a2", "b", "b2"] if interaction else ["a", "b"]
    parts = rule_parts(c["rule"])
    quantities = [c["x"], c["y"]] if tau else [q.quantity for q in parts]
    # secondary quantities are described a vs b: not for a rank correlation nor an interaction,
    # whose a and b are not two arms
    extra = [] if tau or interaction else [q for q in p.get("secondary", []) if q not in quantities]
    tidy, got = [], {}  # got[q][arm]: (value, at_bound, reached) per seed
    for q in quantities + extra:
        for i, arm in enumerate(arms):
            got.setdefault(q, {})[arm] = []
            for seed in p["seeds"]:
                result, folder = runs[arm, seed]
                reached = reached_of(p, arm, result)
                # read even where the arm missed its criterion (shown in the per-seed tables,
                # flagged by `reached`); such values enter no test, and a run that diverged or
                # lacks the record simply has none
                if reached:
                    value, bound = value_of(result, folder, q, p)
                else:
                    try:
                        value, bound = value_of(result, folder, q, p)
                    except (OSError, ValueError, KeyError, ProtocolError):
                        value, bound = math.nan, False
                if reached and not math.isfinite(value):
                    raise ProtocolError(
                        f"{folder}: no value of {q}; measure it (experiments.measure)"
                    )
                got[q][arm].append((value, bound, reached))
                tidy.append(
                    {
                        "protocol": p["name"],
                        "comparison": c["name"],
                        "arm": arm,
                        "role": "model" if tau else roles[i],
                        "seed": seed,
                        "quantity": q,
                        "secondary": q in extra,
                        "value": value,
                        "at_bound": bound,
                        "reached": reached,
                        "stop_reason": result["stop_reason"],
                        "run_dir": str(folder),
                    }
                )
    column = {q: [[g[0] for g in got[q][arm]] for arm in arms] for q in got}
    flags = {q: [[g[1] for g in got[q][arm]] for arm in arms] for q in got}
    reached = [[g[2] for g in got[quantities[0]][arm]] for arm in arms]
    comparable = all(map(all, reached))
    rows = []
    for part in parts:
        if tau:
            x, y = (sum(column[q], []) for q in (c["x"], c["y"]))
            label = f"Kendall τ({c['x']}, {c['y']})"
            n_boot = int(c.get("n_boot", 1000))
            groups = list(p["seeds"]) * len(arms)
            test = tau_test(x, y, groups, part.margin, n_boot, label=label) if comparable else None
            bound = flags[c["x"]] + flags[c["y"]]
        else:
            if interaction:  # (a − a2) − (b − b2): the a pair's difference beyond the b pair's
                v = [np.asarray(x, dtype=float) for x in column[part.quantity]]
                a, b = (v[0] - v[1]).tolist(), (v[2] - v[3]).tolist()
            else:
                a, b = column[part.quantity]
            try:
                test = part_test(part, a, b) if comparable else None
            except ValueError as exc:
                raise ProtocolError(f"{p['name']}/{c['name']}: {exc}") from None
            bound = flags[part.quantity]
        rows.append((f"{p['name']}/{c['name']}", part, test, bound, reached))
    return rows, tidy


def _arms_text(arms) -> str:
    """An arm, or an interaction's pair of arms as ``x−y``."""
    return "−".join(arms) if isinstance(arms, list) else arms


def summarise_secondary(tidy: pd.DataFrame) -> list[dict[str, Any]]:
    """Paired a − b of each secondary quantity over the seeds where both arms reached the criterion:
    mean and 95% t interval, described only (no test, no verdict)."""
    out = []
    if tidy.empty or not tidy["secondary"].any():
        return out
    usable = tidy[tidy["secondary"] & tidy["reached"].astype(bool)]
    for (proto, comp, q), rows in usable.groupby(
        ["protocol", "comparison", "quantity"], sort=False
    ):
        wide = rows.pivot(index="seed", columns="role", values="value").dropna()
        arms = rows.drop_duplicates("role").set_index("role")["arm"]
        if not {"a", "b"} <= set(wide.columns):  # an arm with no seed at its criterion
            continue
        row = {
            "protocol": proto,
            "comparison": comp,
            "quantity": q,
            "a": arms["a"],
            "b": arms["b"],
            "n_seeds": len(wide),
            "mean_a": wide["a"].mean(),
            "mean_b": wide["b"].mean(),
        }
        if len(wide) >= 2:
            mean, _, lo, hi, _ = t_interval(wide["a"] - wide["b"])
            row.update({"mean_diff": mean, "ci_low": lo, "ci_high": hi})
        out.append(row)
    return out


def verdicts(
    refs: list,
    common: Mapping[str, Any],
    tables: Path,
    scale: str = "quick",
    out: Path | None = None,
) -> int:
    """Verdicts of every comparison of the given protocols (names, paths or loaded protocols), Holm
    applied over all of them together; learning-rate tables are read from ``tables``, the verdict
    tables written to ``out`` (default: ``tables``)."""
    out_dir = tables if out is None else out
    out_dir.mkdir(parents=True, exist_ok=True)
    protocols = [r if isinstance(r, Mapping) else load_protocol(r, scale) for r in refs]
    names = [p["name"] for p in protocols]
    if len(set(names)) != len(names):
        raise ProtocolError(f"a protocol is named twice: {names}")
    rows, comparisons, secondary, per_run, metrics = [], {}, [], [], []
    for p in protocols:
        runs = collect(p, common, tables)
        per_run += run_rows(p, runs, read_rates(p, tables))
        metrics += metric_rows(p, runs)
        tidy = []
        for c in p["comparisons"]:
            got, values = comparison_rows(p, c, runs)
            rows += got
            tidy += values
            comparisons[f"{p['name']}/{c['name']}"] = (p, c)
        write_table(pd.DataFrame(tidy), out_dir, f"paired_{p['name']}")
        pictures = figure_tables(p, runs)
        for kind in FIGURE_TABLES:
            path = out_dir / f"{kind}_{p['name']}.csv"
            if kind in pictures:  # a csv only: thousands of grid points make no markdown table
                atomic_write_bytes(path, pictures[kind].to_csv(index=False).encode())
            else:  # what the runs no longer record is not drawn from an older table
                path.unlink(missing_ok=True)
        if p.get("pairs"):
            pairs = pair_rows(p, read_rates(p, tables), common, measure=False)
            write_table(pd.DataFrame(pairs), out_dir, f"pairs_{p['name']}")
        secondary += summarise_secondary(pd.DataFrame(tidy))
    family = verdict_family(
        [(claim, part.part, test, part.direction) for claim, part, test, _, _ in rows],
        at_bound=[r[3] for r in rows],
        reached_criterion=[r[4] for r in rows],
    )
    size = sum(
        v.adjusted_p is not None for cv in family.values() for v in (cv.effect, cv.mechanism) if v
    )
    out = []
    for claim, part, test, _, _ in rows:
        p, c = comparisons[claim]
        verdict = family[claim]
        pv = verdict.effect if part.part == "effect" else verdict.mechanism
        reason = pv.reason
        if c.get("kind") == "kendall_tau" and pv.adjusted_p is not None:
            reason = (
                f"{test.scale} = {test.mean_diff:+.3g} over {test.n} seeds x {len(c['arms'])} arms "
                f"(95% seed-bootstrap interval {test.ci_low:+.3g} to {test.ci_high:+.3g}); bootstrap "
                f"p = {test.p_signflip:.3g}, {pv.adjusted_p:.3g} after Holm over {size} tests; "
                f"TOST p = {test.p_tost:.3g} against ±{part.margin:g}: {pv.verdict}."
            )
        out.append(
            {
                "protocol": p["name"],
                "comparison": c["name"],
                "hypothesis": c["rule"]["hypothesis"],
                "kind": c.get("kind", "paired"),
                "a": _arms_text(c.get("a", "+".join(c.get("arms", [])))),
                "b": _arms_text(c.get("b", "")),
                "part": part.part,
                "quantity": part.quantity,
                "direction": part.direction,
                "margin": part.margin,
                "margin_is_ratio": part.relative,
                "n_seeds": len(p["seeds"]),
                "scale": test.scale if test else "",
                "mean_diff": test.mean_diff if test else math.nan,
                "ci_low": test.ci_low if test else math.nan,
                "ci_high": test.ci_high if test else math.nan,
                "p_raw": test.p_signflip if test else math.nan,
                "p_holm": pv.adjusted_p if pv.adjusted_p is not None else math.nan,
                "p_tost": test.p_tost if test else math.nan,
                # the (1 − 2α) interval TOST reads: one-sided bounds of the difference
                "tost_ci_low": test.tost_ci_low if test else math.nan,
                "tost_ci_high": test.tost_ci_high if test else math.nan,
                "sd_diff": test.sd_diff if test else math.nan,
                # the margin that n seeds resolve at this spread (TOST, power 0.8): what "not
                # reproduced" could have meant here
                "resolvable_margin": test.resolvable_margin if test else math.nan,
                "resolve_n": test.resolve_n if test else math.nan,
                "part_verdict": pv.verdict,
                "verdict": verdict.verdict,
                "family_size": size,
                "reason": reason,
                "rule": json.dumps(c["rule"], sort_keys=True),
                "caveat": c.get("caveat", ""),
            }
        )
    table = pd.DataFrame(out)
    write_table(table, out_dir, "verdicts")
    write_table(pd.DataFrame(secondary), out_dir, "secondary")
    write_table(pd.DataFrame(per_run), out_dir, "protocol_runs")
    # one row per run and metric: long, so CSV only
    pd.DataFrame(metrics).to_csv(out_dir / "run_metrics.csv", index=False)
    for p in protocols:  # per-batch sharpness against test error, where a protocol records it
        write_tau_table(p["name"], out_dir)
    (out_dir / "environment.json").write_text(json.dumps(environment(), indent=1) + "\n")
    # the protocols as judged (the report describes each from this, not from conf/ as it is now)
    (out_dir / "protocols.json").write_text(json.dumps(protocols, indent=1) + "\n")
    write_intervals(out_dir)  # the explanations' paired intervals, from the tables just written
    write_mechanism(out_dir)  # each mechanism under every measure, within arms, and the floors
    print(
        table[
            ["protocol", "comparison", "part", "mean_diff", "p_holm", "part_verdict", "verdict"]
        ].to_string(index=False)
    )
    print(f"wrote {out_dir / 'verdicts'}.csv|md and paired_<protocol>.csv")
    return 0
