"""What every benchmark script shares: picking the device and naming it, the suite's configs as
plain objects (no Hydra), and side-by-side timing (warm-up, round-robin repeats, best of each)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
# The scripts run as `python benchmarks/x.py`, whose path starts at benchmarks/: put the repository
# root first, so that they measure this checkout's flatness and reach the suite (experiments/),
# which is not installed (the distribution holds the library only).
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
DATA_DIR = ROOT / "data"  # git-ignored: dataset caches and the benchmarks' trained weights


def pick_device(arg: str) -> torch.device:
    """``auto`` → CUDA when present, else CPU; anything else as given."""
    if arg == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(arg)


def add_threads_arg(ap) -> None:
    ap.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads (default: 1 on the CPU, as reproduce.sh runs every process; torch's on CUDA)",
    )


def set_threads(threads: int | None, device: torch.device) -> None:
    """``threads`` CPU threads; by default one on the CPU. The suite runs single-threaded processes
    (reproduce.sh sets OMP_NUM_THREADS=1), and on a loaded 2-core machine two threads wait on each
    other at every parallel op (a training step of the default MLP measured 6× slower)."""
    if threads is None and device.type == "cpu":
        threads = 1
    if threads:
        torch.set_num_threads(threads)


def describe(device: torch.device) -> str:
    """The torch version and the device's name (GPU model, or CPU thread count)."""
    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"CPU, {torch.get_num_threads()} threads"
    )
    return f"torch {torch.__version__}, {name}"


class Config(dict):
    """A config group as the suite's builders read it (``cfg.name``, ``cfg.get(...)``,
    ``cfg.items()``) without OmegaConf, so the scripts also run where Hydra is not installed."""

    def __getattr__(self, key: str) -> Any:
        try:
            return self[key]
        except KeyError:
            raise AttributeError(key) from None


def conf(group: str, **overrides: Any) -> Config:
    """``conf/<group>.yaml`` (e.g. ``"model/mlp"``) with ``overrides`` applied."""
    import yaml

    with open(ROOT / "conf" / f"{group}.yaml") as f:
        return Config({**yaml.safe_load(f), **overrides})


def sync_for(device: torch.device) -> Callable[[], None]:
    return torch.cuda.synchronize if device.type == "cuda" else (lambda: None)


def timed(
    fn: Callable[[], Any], sync: Callable[[], None], clock: Callable[[], float] = time.perf_counter
) -> tuple[Any, float]:
    """``fn()`` and its time in seconds (the device synchronised on both sides): wall time, or with
    ``clock=time.process_time`` the CPU time of this process, which a machine shared with other
    jobs leaves nearly untouched for single-threaded work where wall time swings by 2×."""
    sync()
    t0 = clock()
    out = fn()
    sync()
    return out, clock() - t0


def best_of(
    methods: Mapping[str, Callable[[], Any]],
    repeats: int,
    sync: Callable[[], None],
    warmup: bool = True,
    clock: Callable[[], float] = time.perf_counter,
) -> tuple[dict[str, float], dict[str, Any]]:
    """Each method once untimed (warm-up), then all of them round-robin ``repeats`` times; the
    best time of each is kept, so that a burst of load on a shared machine does not decide a ratio.
    Returns (best seconds, last output) per method."""
    if warmup:
        for fn in methods.values():
            fn()
    best, outputs = dict.fromkeys(methods, float("inf")), {}
    for _ in range(repeats):
        for name, fn in methods.items():
            outputs[name], seconds = timed(fn, sync, clock)
            best[name] = min(best[name], seconds)
    return best, outputs


def markdown(rows: list[dict[str, Any]], floatfmt: str = ".3g") -> str:
    """A list of dicts as a Markdown table (pandas + tabulate)."""
    import pandas as pd

    return pd.DataFrame(rows).to_markdown(index=False, floatfmt=floatfmt)
