"""Run specifications carried out: each through :func:`experiments.run.main` (so a finished run is
never retrained and a killed one resumes), ``jobs`` at a time through joblib, one thread each (the
numbers do not depend on ``jobs``), with a progress bar; a protocol's final runs in waves.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Mapping
from typing import Any

import torch
from joblib import Parallel, delayed
from tqdm.auto import tqdm

from experiments import run
from experiments.pairs import measure_pairs
from experiments.plan import Spec, configure, final_specs, waves

# Rough cost of one training step with one thread, a + b * batch seconds: fitted to the 40-256-256-10
# MLP on 16k MNIST-1D samples on this project's 2-core machine (batch 64: 4.4 ms, 1600: 64 ms).
STEP_S = (1.9e-3, 3.9e-5)
RUN_OVERHEAD_S = 8.0  # start-up, validation, the protocol's metrics
TYPICAL_FRACTION = 0.3  # budgets are 3-5x the measured steps to the criterion


def run_final(p: Mapping[str, Any], rates: Mapping[str, float], common, jobs: int) -> int:
    """The final runs in waves: the arms that depend on no other run, then those that continue
    from or count the steps of an earlier wave's arm (:func:`waves`); then the protocol's pair
    measurements. The number that failed."""
    failed = 0
    for i, arms in enumerate(waves(p)):
        if failed:
            break
        desc = f"{p['name']} run" if i == 0 else f"{p['name']} continuations ({i})"
        failed += execute(final_specs(p, rates, common, arms), common, jobs, desc)
    if p.get("pairs") and not failed:
        failed += measure_pairs(p, rates, common)
    return failed


def _job(cfg) -> dict[str, Any]:
    """Train and measure one run in this process, on one thread; never raises."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread per job: the numbers do not depend on --jobs
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            result = run.main(cfg)
        return {k: result.get(k) for k in ("status", "stop_reason", "run_dir")}
    except Exception as exc:  # one bad run must not stop the others
        return {"status": "error", "error": f"{type(exc).__name__}: {exc}".splitlines()[0]}
    finally:
        torch.set_num_threads(threads)


def execute(specs: list[Spec], common: Mapping[str, Any], jobs: int, desc: str) -> int:
    """Run every spec, ``jobs`` at a time, with a progress bar; the number that failed."""
    calls = (delayed(_job)(configure(s, common)) for s in specs)
    outcomes = Parallel(n_jobs=jobs, return_as="generator_unordered")(calls)
    failed = 0
    for out in tqdm(outcomes, total=len(specs), desc=desc, unit="run"):
        if out["status"] not in ("finished", "diverged"):
            failed += 1
            tqdm.write(f"{out['status']}: {out.get('error') or out.get('run_dir')}")
    return failed


def dry_run(specs: list[Spec], jobs: int) -> None:
    """The run list and a rough wall time (see STEP_S)."""
    bound = 0.0
    for i, s in enumerate(specs):
        print(f"{i:4d}  {s.values['name']}  arm={s.arm}  lr={s.lr:g}  seed={s.seed}")
        factor = 2 if s.values.get("optimizer") in ("sam", "asam") else 1
        step = STEP_S[0] + STEP_S[1] * s.values.get("batch_size", 128)
        bound += factor * s.values["max_steps"] * step
    over = RUN_OVERHEAD_S * len(specs)

    def hours(seconds: float) -> str:
        return f"{seconds / jobs / 3600:.1f} h"

    print(
        f"{len(specs)} runs at --jobs {jobs}: at most {hours(bound + over)} if every run used its "
        f"whole step budget, roughly {hours(TYPICAL_FRACTION * bound + over)} if runs meet the "
        f"criterion at ~{TYPICAL_FRACTION:.0%} of it (the cost model is the quick scale's 256-wide "
        "MLP on a 2-core CPU, one thread per run; every listed run is counted, though a "
        "finished one is skipped when run)"
    )
