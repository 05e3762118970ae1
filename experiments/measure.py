"""``python -m experiments.measure``: measure finished runs again, never training them.

Each run directory given (or found below a sweep given) is measured by the runner with the
overrides applied (``metrics=<group>``, ``surface=<group>``, dotted keys); records that exist are
reused (:mod:`experiments.measurements`). Overrides that would change what a run trained are
refused, for every run, before any worker starts.

    python -m experiments.measure runs/<sweep> [more run dirs or sweeps] metrics=full [surface=2d]
        [metrics.lambda_max.tol=1e-3] [--jobs 2]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from joblib import Parallel, delayed
from omegaconf import OmegaConf, open_dict
from tqdm.auto import tqdm

from experiments import checks, run, store
from experiments.config import RunConfig
from experiments.errors import ConfigError, hydra_error, one_line_exits
from experiments.measurements import not_trained


def run_dirs(paths: list[str]) -> list[Path]:
    """Every finished-or-not run directory (one holding ``config.yaml``) under ``paths``."""
    found: list[Path] = []
    for p in map(Path, paths):
        if not p.exists():
            raise ConfigError(f"{p} does not exist")
        candidates = [p / "config.yaml"] if (p / "config.yaml").exists() else p.rglob("config.yaml")
        found += [c.parent for c in sorted(candidates) if ".multirun" not in c.parts]
    return found


def compose_for(run_dir: Path, overrides: list[str]):
    """The saved config of ``run_dir`` with ``overrides`` (group choices and dotted keys) applied."""
    cfg = OmegaConf.load(run_dir / "config.yaml")
    groups = [o for o in overrides if o.split("=", 1)[0] in ("metrics", "surface")]
    dotted = [o.lstrip("+") for o in overrides if o not in groups]
    conf = str(Path(__file__).resolve().parent.parent / "conf")
    with initialize_config_dir(config_dir=conf, version_base="1.3"):
        fresh = compose(config_name="config", overrides=groups)
    with open_dict(cfg):
        for group in ("metrics", "surface"):
            if any(o.startswith(f"{group}=") for o in groups):
                cfg[group] = fresh[group]
        cfg.merge_with(OmegaConf.from_dotlist(dotted))
        cfg.runs_dir = str(run_dir.parent.parent)
        cfg.name = run_dir.parent.name
        cfg.progress = False
    return cfg


def check_overrides(run_dir: Path, overrides: list[str]) -> None:
    """Validate the overrides on one run's config before any worker starts (one-line errors)."""
    known = {d.name for d in checks.CONF.iterdir() if d.is_dir()} - {"metrics", "surface"}
    chosen = [o.split("=", 1)[0].lstrip("+~") for o in overrides]
    if groups := [g for g in chosen if g in known]:
        raise ConfigError(
            f"overrides: {groups[0]}: only the metrics and surface groups can be chosen when "
            "measuring a run (anything else would be another run: use experiments.run)"
        )
    try:
        cfg = compose_for(run_dir, overrides)
    except Exception as exc:  # Hydra's and OmegaConf's own errors: their first line says it
        raise ConfigError(f"overrides: {hydra_error(exc)}") from None
    rc = RunConfig.from_hydra(cfg)
    checks.check_config(rc.values)
    if store.run_id(rc.values) != run_dir.name:
        raise ConfigError(
            f"overrides: {' '.join(overrides)} change what {run_dir} trained (its id); "
            "experiments.measure only measures: use experiments.run for another configuration"
        )
    check_trained(run_dir)


def check_trained(run_dir: Path) -> None:
    """experiments.measure never trains: a run without a finished training (its result and final
    weights) is an error naming the command that trains it from its own config.yaml. (The runner
    checks the weights against the run's architecture too: ``run.main(cfg, train=False)``.)"""
    result = store.load_result(run_dir / "result.json")
    weights = store.load_checkpoint(run_dir / "final.pt")
    if result is None or "stop_reason" not in result or not weights:
        raise ConfigError(not_trained(run_dir))


def remeasure(run_dir: Path, overrides: list[str]) -> str:
    """Measure one run directory again with ``overrides``; says how many measurements were new."""
    cfg = compose_for(run_dir, overrides)
    before = set((run_dir / "measurements").rglob("*.json"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread per run, whatever the number of workers: same numbers
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            result = run.main(cfg, train=False)
    except ConfigError as exc:
        return f"error: {exc}"
    finally:
        torch.set_num_threads(threads)
    if result.get("run_id") not in (None, run_dir.name):
        return f"{run_dir}: its config now names another run ({result.get('run_id')})"
    new = len(set((run_dir / "measurements").rglob("*.json")) - before)
    failed = len(result.get("metric_failures") or {})
    extra = f", {failed} failed (see result.json)" if failed else ""
    return f"{result.get('status')}: {new} new measurements{extra}: {run_dir}"


def cli(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.measure",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("paths", nargs="+", help="run directories or sweeps, then overrides")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    args = parser.parse_intermixed_args(argv)
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    # a path that exists is a path, even with "=" in it (Hydra's own lr=0.1 sweep folders)
    overrides = [p for p in args.paths if "=" in p and not Path(p).exists()]
    try:  # every run, not the first only: an override may change another run's id
        dirs = run_dirs([p for p in args.paths if p not in overrides])
        if not dirs:
            raise ConfigError("no run directory (with config.yaml) found")
        for d in dirs:
            check_overrides(d, overrides)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    jobs = Parallel(n_jobs=args.jobs, return_as="generator")(
        delayed(remeasure)(d, overrides) for d in dirs
    )
    for line in tqdm(jobs, total=len(dirs), desc="measure", unit="run"):
        print(line)
    return 0


if __name__ == "__main__":
    with one_line_exits("what was measured is saved; run the same command again for the rest"):
        sys.exit(cli())
