"""``python -m experiments.study run|rank NAME``: a correlation study in the manner of Jiang et al.
2020, from ``conf/study/<name>.yaml``: a full factorial grid of hyperparameter axes, each
configuration trained to a criterion under a step budget for every seed, then every measure ranked
against the generalisation gap (:mod:`experiments.analyse.jiang`, through :mod:`experiments.analyse.correlate`).

A study file holds ``name``; ``base`` (run overrides common to every run, with ``metrics``: the
measures taken on every model); ``axes`` (axis → level label → the overrides of that level; a level
may set ``lr_factor``, which multiplies the rate the other levels set, so that a learning-rate axis
can sit beside an optimizer axis whose levels each bring their own rate); ``seeds``; and
``min_train_acc`` (models below it are dropped, as in Jiang et al.); and optionally ``notes``, a
sentence for the report (why these levels). Runs go through the runner (a
finished run is never retrained) under ``runs/<name>/``, two at a time by default.

    python -m experiments.study run jiang --dry-run     # the runs and their number
    python -m experiments.study run jiang               # train and measure every configuration x seed
    python -m experiments.study rank jiang              # -> results/tables/study_jiang_*
"""

from __future__ import annotations

import argparse
import itertools
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import OmegaConf

from experiments import schema
from experiments.analyse.correlate import measure_columns, rank_models
from experiments.checks import check_config
from experiments.config import RunConfig
from experiments.criterion import reached
from experiments.errors import ConfigError, ProtocolError, one_line_exits
from experiments.execute import execute
from experiments.plan import CONF, Spec, configure, load_result
from experiments.store import atomic_write_json, write_table
from flatness.registry import SEED_MAX


def load_study(ref: str | Path) -> dict[str, Any]:
    """A study by name (``conf/study/<name>.yaml``) or path, checked; errors are one line. Its keys
    and their types are :class:`experiments.schema.Study`'s, checked by OmegaConf; the ranges and
    the rules across keys are checked here."""
    path = Path(ref)
    if not path.exists() and path.suffix != ".yaml" and "/" not in str(ref):
        path = CONF / "study" / f"{ref}.yaml"
    if not path.exists():
        raise ProtocolError(f"no study {ref!r} (looked for {path})")
    raw = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    s = schema.typed(schema.Study, raw, str(path), ProtocolError)
    if not s["axes"]:
        raise ProtocolError(f"{path}: axes must map each axis to its levels")
    for axis, levels in s["axes"].items():
        if len(levels) < 2:
            raise ProtocolError(f"{path}: axes.{axis} needs at least two levels")
        for label, over in levels.items():
            if not over:
                raise ProtocolError(f"{path}: axes.{axis}.{label} must be overrides")
            if set(over) & {"seed", "name"}:
                raise ProtocolError(f"{path}: axes.{axis}.{label}: seed and name are the study's")
            # a run override, not a key of the schema: the levels are open mappings
            factor = over.get("lr_factor", 1.0)
            if isinstance(factor, bool) or not isinstance(factor, (int, float)) or factor <= 0:
                raise ProtocolError(f"{path}: axes.{axis}.{label}.lr_factor must be positive")
    seeds = s["seeds"]
    if (
        not isinstance(seeds, list)
        or not seeds
        or not all(type(x) is int and 0 <= x <= SEED_MAX for x in seeds)
        or len(set(seeds)) != len(seeds)
    ):  # "2", 2.7 and True are not seeds: they would hash into other run ids than the integer
        raise ProtocolError(
            f"{path}: seeds must be distinct integers in [0, {SEED_MAX}], got {seeds!r}"
        )
    floor = s.setdefault("min_train_acc", 0.99)
    if not 0 <= floor <= 1:
        raise ProtocolError(f"{path}: min_train_acc must be in [0, 1]")
    return s


def configurations(s: Mapping[str, Any]) -> list[dict[str, str]]:
    """Every configuration of the grid as {axis: level label}."""
    axes = s["axes"]
    return [dict(zip(axes, labels, strict=True)) for labels in itertools.product(*axes.values())]


def study_specs(s: Mapping[str, Any]) -> list[Spec]:
    """One run per configuration and seed; its ``arm`` names the configuration's levels."""
    specs = []
    for config in configurations(s):
        values: dict[str, Any] = dict(s["base"])
        factor = 1.0
        for axis, label in config.items():
            over = dict(s["axes"][axis][label])
            factor *= float(over.pop("lr_factor", 1.0))
            values.update(over)
        if "lr" not in values:
            raise ProtocolError(f"configuration {config}: no level or base sets lr")
        lr = float(values.pop("lr")) * factor
        arm = ",".join(f"{a}={v}" for a, v in config.items())
        for seed in s["seeds"]:
            specs.append(Spec(arm, lr, int(seed), {**values, "lr": lr, "seed": int(seed),
                                                    "name": s["name"]}))  # fmt: skip
    return specs


def models_frame(s: Mapping[str, Any], common: Mapping[str, Any]) -> tuple[pd.DataFrame, int]:
    """One row per finished model (its axis levels, gap, test error, training accuracy, steps,
    train loss and the study's measures, with the columns of
    :func:`experiments.analyse.correlate.measure_columns`) and the number of runs without a result."""
    rows, missing = [], 0
    wanted = set(s["base"].get("metrics") or {})
    for spec in study_specs(s):
        result, _ = load_result(spec, common)
        if result is None or result.get("status") != "finished":
            missing += 1
            continue
        row = dict(item.split("=", 1) for item in spec.arm.split(","))
        met = spec.values.get("train_until_loss") is None or reached(result)
        row.update({"seed": spec.seed, "run_id": result.get("run_id"), "reached": met})
        row.update({k: result.get(k) for k in ("gap", "test_error", "train_acc", "train_loss",
                                                "steps_trained")})  # fmt: skip
        # the study's own measures only: a run may hold others, recorded by an earlier request
        recorded = result.get("metrics") or {}
        row.update(measure_columns({k: v for k, v in recorded.items() if k in wanted}))
        rows.append(row)
    return pd.DataFrame(rows), missing


def rank(
    s: Mapping[str, Any], common: Mapping[str, Any], out: Path, n_boot: int, jobs: int = 1
) -> pd.DataFrame:
    models, missing = models_frame(s, common)
    if missing:
        print(f"warning: {missing} runs of the study have no finished result", file=sys.stderr)
    if models.empty:
        raise ProtocolError(f"study {s['name']}: no finished run: run it first")
    table = rank_models(models, list(s["axes"]), out, f"study_{s['name']}", s["min_train_acc"],
                        n_boot, write_table, jobs=jobs)  # fmt: skip
    # the study as it was ranked (grid, seeds, settings, every measure's settings), for the report
    described = {**s, "models": len(models), "missing": missing, "bootstrap": n_boot}
    atomic_write_json(out / f"study_{s['name']}.json", described)
    return table


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m experiments.study", description=__doc__.split("\n\n")[0]
    )
    ap.add_argument("step", choices=["run", "rank"], help="train and measure the grid, or rank it")
    ap.add_argument("study", help="a name in conf/study/ or a path")
    ap.add_argument("--jobs", type=int, default=2, help="runs (or bootstrap resamples) at a time")
    ap.add_argument(
        "--dry-run", action="store_true", help="compose and check every run; train none"
    )
    ap.add_argument("--runs-dir", default="runs", help="where runs go (<runs-dir>/<name>/)")
    ap.add_argument("--data-dir", default="data", help="where datasets are read or generated")
    ap.add_argument("--out", type=Path, default=Path("results/tables"), help="tables of rank")
    ap.add_argument("--bootstrap", type=int, default=200, help="bootstrap resamples of rank")
    args = ap.parse_args(argv)
    for flag, value in (("--jobs", args.jobs), ("--bootstrap", args.bootstrap)):
        if value < 1:
            print(f"error: {flag} must be at least 1, got {value}", file=sys.stderr)
            return 2
    common = {"runs_dir": args.runs_dir, "data_dir": args.data_dir, "progress": False}
    try:
        s = load_study(args.study)
        if args.step == "rank":
            rank(s, common, args.out, args.bootstrap, args.jobs)
            return 0
        specs = study_specs(s)
        if args.dry_run:
            for arm in dict.fromkeys(sp.arm for sp in specs):  # every configuration composes
                rc = RunConfig.from_hydra(
                    configure(next(sp for sp in specs if sp.arm == arm), common)
                )
                try:
                    check_config(rc.values)
                except ConfigError as exc:
                    raise ProtocolError(f"configuration {arm}: {exc}") from None
            print(f"{len(specs)} runs: {len(specs) // len(s['seeds'])} configurations x "
                  f"{len(s['seeds'])} seeds over axes {', '.join(s['axes'])}")  # fmt: skip
            return 0
        return 1 if execute(specs, common, args.jobs, f"{s['name']} run") else 0
    except ProtocolError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    with one_line_exits("finished runs are kept; the same command goes on from there"):
        sys.exit(main())
