"""``python -m experiments.protocol``: the comparison protocols of ``conf/protocol/``.

A protocol states before any run what is compared and how it is judged: ``base`` overrides common to
every arm, the ``arms``, the learning-rate search (``tune``: a log grid per arm, search seeds, the
rule), the final ``seeds`` and the ``comparisons``, each with its decision rule in the format of
:mod:`experiments.analyse.verdicts`. Every arm is trained to the same training cross-entropy under a step
budget, its rate chosen on validation only (the lowest mean validation error among the rates at which
every search seed reached the criterion, within `tune.reach_within` of the step budget; a choice at
the grid's edge is flagged), and its seeds are
paired with the other arms' (seed s: the same initial weights and batch order).

    python -m experiments.protocol tune batch_size        # the search (experiments.analyse.tune) -> results/tables/lr_<name>.csv|md
    python -m experiments.protocol run batch_size         # every arm x seed at the chosen rates
    python -m experiments.protocol verdicts batch_size optimizer visualisation   # one Holm family
    python -m experiments.protocol all batch_size         # one claim alone: search if its table is
                                                          # missing or stale, runs, its own verdicts
    python -m experiments.protocol robust batch_size      # the robustness runs its records lack
                                                          # (experiments.robust) -> results/records/

Runs go through :func:`experiments.run.main` (so a finished run is never retrained), two at a time
by default, one thread each. ``--dry-run`` lists the runs and a rough cost.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from experiments.analyse.judge import verdicts
from experiments.analyse.robustness import write_robustness
from experiments.analyse.tune import condition_rates, doubled_eligible, read_rates, tune
from experiments.conditions import CONDITION, SEARCH, search_specs
from experiments.conditions import final_specs as condition_finals
from experiments.errors import ProtocolError, one_line_exits
from experiments.execute import dry_run, execute, run_final
from experiments.plan import (
    SCALES,
    configure,
    dependent,
    final_specs,
    load_protocol,
    tune_specs,
    tuned_arms,
    waves,
)
from experiments.report import document as report
from experiments.robust import (
    block,
    budget_specs,
    check_frozen,
    condition_records,
    endpoint_specs,
    grid_specs,
    robust_arms,
    run_and_record,
    run_robust,
)


def alone(p: Mapping[str, Any], args, common: Mapping[str, Any]) -> int:
    """One protocol end to end, to iterate on one claim: the search when its table is missing or
    stale, the final runs, verdicts over this protocol alone (its own Holm family) and its report,
    a results folder of its own, ``<tables>/alone/<name>/`` (``tables/``, ``figures/``,
    ``REPORT.md``), so the report's family is left as it is."""
    try:
        read_rates(p, args.tables)
    except ProtocolError as exc:
        if not tuned_arms(p):
            raise
        print(f"searching first: {exc}")
        if tune(p, common, args.tables, args.jobs):
            return 1
    if run_final(p, read_rates(p, args.tables), common, args.jobs):
        return 1
    results = args.tables / "alone" / p["name"]
    if verdicts([p], common, args.tables, out=results / "tables"):
        return 1
    for rates in args.tables.glob(f"lr_{p['name']}.*"):  # the report's setup shows the search
        shutil.copy(rates, results / "tables" / rates.name)
    print(f"report: {report.build(results)}")
    return 0


def robust(p: dict, args: argparse.Namespace, common: dict) -> int:
    """The robustness runs that the committed records lack (issue 26), then their records: the
    second endpoints, the rate grid, then each condition's search and final runs."""
    rates = read_rates(p, args.tables)
    double = doubled_eligible(p, args.tables) if tuned_arms(p) else set()
    conditions = block(p).get("conditions") or []
    if args.dry_run:
        specs = endpoint_specs(p, rates, common) + budget_specs(p, rates, common)
        specs += [s for _, s in grid_specs(p, rates, double)]
        for cond in conditions:
            specs += search_specs(p, cond, robust_arms(p))
        dry_run(specs, args.jobs)
        if conditions:
            print("then each condition's final runs, of the arms whose rate or runs it changes")
        return 0
    failed = run_robust(p, rates, common, args.jobs, args.records, double)
    for cond in conditions:
        failed += run_condition(p, cond, rates, common, args.jobs, args.records)
    for path in write_robustness(p, args.records, args.tables):  # from the frozen records only
        print(f"wrote {path}")
    return 1 if failed else 0


def run_condition(p: dict, cond: dict, rates: dict, common: dict, jobs: int, records: Path) -> int:
    """One condition (:mod:`experiments.conditions`): its search, the rates the rule chooses from
    the search's records, then the final runs of the arms the condition changes."""
    arms, name = robust_arms(p), cond["name"]
    check_frozen(p)
    todo = [(SEARCH, 1.0, s, name) for s in search_specs(p, cond, arms)]
    failed = run_and_record(p, todo, common, jobs, records, f"{name}: search") if todo else 0
    search = condition_records(p, records, SEARCH, name)
    choice = condition_rates(p, cond, arms, rates, search)
    print(f"{name}:\n" + choice.to_string(index=False))
    todo = [(CONDITION, 1.0, s, name) for s in condition_finals(p, cond, choice, common)]
    return failed + (run_and_record(p, todo, common, jobs, records, name) if todo else 0)


STEPS = """steps:
  tune      the learning-rate search on validation -> <tables>/lr_<name>.csv|md
  run       every arm x final seed at the chosen rates (runs finished before are kept)
  verdicts  the verdict tables of the given protocols, one Holm family -> <tables>/verdicts.csv ...
  all       one protocol alone: its search if its table is missing or stale, its runs, its own
            verdicts and report under <tables>/alone/<name>/
  robust    the robustness runs the records lack, then the robustness tables (README, robustness)"""


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults shown, and the steps' list kept as written."""


# --- command line ---------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.protocol",
        description=__doc__.split("\n\n")[0],
        epilog=STEPS,
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("step", choices=["tune", "run", "verdicts", "all", "robust"])
    parser.add_argument("protocols", nargs="+", help="names in conf/protocol/ or paths")
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time (one thread each)")
    parser.add_argument("--dry-run", action="store_true", help="list the runs and a rough cost")
    parser.add_argument("--runs-dir", default="runs", help="where runs are kept (a cache)")
    parser.add_argument("--data-dir", default="data", help="where datasets are kept")
    parser.add_argument(
        "--tables", default="results/tables", type=Path, help="the tables read and written"
    )
    parser.add_argument(
        "--records",
        default="results/records",
        type=Path,
        help="where the robustness runs' compact records are kept (committed)",
    )
    parser.add_argument(
        "--scale",
        choices=SCALES,
        default="quick",
        help="full: the protocol's `full` block (more data, sized for one GPU), as <name>_full",
    )
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        help="final seeds instead of the protocol's (e.g. to try a claim on fewer, or extend it)",
    )
    args = parser.parse_args(argv)
    if args.jobs < 1:
        print(f"error: --jobs must be at least 1, got {args.jobs}", file=sys.stderr)
        return 2
    common = {"runs_dir": args.runs_dir, "data_dir": args.data_dir, "progress": False}
    try:
        if args.seeds is not None and (
            len(set(args.seeds)) != len(args.seeds) or len(args.seeds) < 2 or min(args.seeds) < 0
        ):
            raise ProtocolError(
                f"--seeds must be at least two distinct non-negative integers (a paired test "
                f"needs two), got {args.seeds}"
            )
        if args.step == "verdicts":
            loaded = [load_protocol(ref, args.scale) for ref in args.protocols]
            for q in loaded:
                q["seeds"] = list(args.seeds or q["seeds"])
            return verdicts(loaded, common, args.tables, args.scale)
        if len(args.protocols) != 1:
            raise ProtocolError(f"{args.step} takes one protocol")
        p = load_protocol(args.protocols[0], args.scale)
        if args.seeds:
            p["seeds"] = list(args.seeds)
        if args.step == "all" and not args.dry_run:
            return alone(p, args, common)
        if args.step == "robust":
            return robust(p, args, common)
        if args.step == "tune" and not tuned_arms(p):
            print(f"{p['name']}: no arm is tuned (every rate comes from another arm or protocol)")
            return 0
        if args.step == "tune" and not args.dry_run:
            return tune(p, common, args.tables, args.jobs)
        if args.step == "run" and not args.dry_run:
            return 1 if run_final(p, read_rates(p, args.tables), common, args.jobs) else 0
        later = [a for a in p["arms"] if dependent(p, a)]
        if args.step == "all" and tuned_arms(p):  # the search's runs; final rates not chosen yet
            specs = tune_specs(p)
            after = (
                f"then {len(p['arms']) * len(p['seeds'])} final runs at the rates the search "
                "chooses (not listed: not chosen yet), and the verdicts"
            )
        elif args.step == "tune":
            specs, after = tune_specs(p), ""
        else:  # the final runs' first wave: the later waves' budgets and starts are not known yet
            rates = read_rates(p, args.tables)
            specs = final_specs(p, rates, common, waves(p)[0])
            after = (
                f"then {len(later) * len(p['seeds'])} runs of {', '.join(later)} (not listed: "
                "they start from or count the steps of the runs above)"
                if later
                else ""
            )
            if args.step == "all":
                after += ("; " if after else "then ") + "the verdicts"
        if args.dry_run:
            for arm in dict.fromkeys(s.arm for s in specs):  # every arm composes, or one line
                configure(next(s for s in specs if s.arm == arm), common)
            dry_run(specs, args.jobs)
            if after:
                print(after)
            return 0
        return 1 if execute(specs, common, args.jobs, f"{p['name']} run") else 0
    except ProtocolError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    with one_line_exits("finished runs are kept; the same command goes on from there"):
        sys.exit(main())
