"""Measurements of two runs of the same seed, declared in a protocol's ``pairs`` block: the distance
between their final weights and the loss barrier on the straight path between them (Frankle et al.
2020), on the training set; with ``test: true`` also Keskar et al. 2017's interpolation (train and
test loss and accuracy from a's minimum to b's and beyond), which the report draws. Issue 13 asks it of the Adam and SGD minima of one seed: one basin, or two?
Each pair is measured once and kept in the first run's directory
(``measurements/pairs/<other run id>-<settings>.json``), so the verdicts step only reads it."""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from experiments.errors import ProtocolError
from experiments.plan import arm_spec, load_result
from experiments.runs import load_trained
from experiments.schema import Pair
from flatness.barrier import barrier_of, path_losses
from flatness.io import atomic_write_bytes
from flatness.objective import Objective
from flatness.surface import interpolate

DEFAULTS = {"points": Pair.points, "subset": Pair.subset}  # what a pair leaves out (the schema's)
# Keskar et al. 2017's Fig. 3 (``test: true``): train and test loss and accuracy along the line from
# a's weights (t = 0) to b's (t = 1) and beyond, t from −0.5 to 1.5. A key of a record only when on,
# so the records made before it existed keep their names.
INTERPOLATION_TS = [round(-0.5 + 0.1 * i, 10) for i in range(21)]


def settings_of(pair: Mapping[str, Any]) -> dict[str, Any]:
    settings = {k: pair.get(k, v) for k, v in DEFAULTS.items()}
    if pair.get("test"):
        settings["test"] = True
    return settings


def record_path(folder_a: Path, folder_b: Path, settings: Mapping[str, Any]) -> Path:
    tag = "-".join(f"{k}{v}" for k, v in sorted(settings.items()))
    return folder_a / "measurements" / "pairs" / f"{folder_b.name}-{tag}.json"


def measure_pair(folder_a: Path, folder_b: Path, settings: Mapping[str, Any]) -> dict[str, Any]:
    """Distance and straight-path barrier between two finished runs' final weights (a's data)."""
    _, model, data, _ = load_trained(folder_a, require_criterion=False)
    end = torch.load(folder_b / "final.pt", weights_only=True)
    obj = Objective(model, (data.x_train, data.y_train)).subset(settings["subset"])
    ts, losses = path_losses(obj, start=end, points=settings["points"])  # t = 0: b, t = 1: a
    a = torch.cat([p.detach().reshape(-1) for p in obj.params.values()])
    b = torch.cat([end[k].reshape(-1).to(a) for k in obj.names])
    record = {
        "distance": float((a - b).norm()),
        "barrier": barrier_of(ts, losses),
        "t": ts.tolist(),
        "loss": losses.tolist(),
        "n_samples": obj.n,
        "settings": dict(settings),
    }
    if settings.get("test"):
        other = copy.deepcopy(model)
        other.load_state_dict(end)
        n = settings["subset"]
        line = interpolate(model, other, (data.x_train[:n], data.y_train[:n]),
                           (data.x_test, data.y_test), ts=INTERPOLATION_TS)  # fmt: skip
        record["interpolation"] = {"t": [float(t) for t in line.coords[0]],
                                   **{k: v.tolist() for k, v in line.values.items()}}  # fmt: skip
    return record


def pair_rows(
    p: Mapping[str, Any], rates: Mapping[str, float], common, measure: bool, on_row=None
) -> list[dict]:
    """One row per pair and seed; ``measure``: compute what is missing, else refuse it."""
    rows = []
    for pair in p.get("pairs", []):
        settings = settings_of(pair)
        for seed in p["seeds"]:
            (ra, fa), (rb, fb) = (
                load_result(arm_spec(p, pair[k], rates, seed, common), common) for k in ("a", "b")
            )
            if ra is None or rb is None:
                raise ProtocolError(f"{p['name']}: pair {pair['name']} seed {seed}: runs missing")
            path = record_path(fa, fb, settings)
            if path.exists():
                record = json.loads(path.read_text())
            elif measure:
                record = measure_pair(fa, fb, settings)
                path.parent.mkdir(parents=True, exist_ok=True)
                atomic_write_bytes(path, json.dumps(record).encode())
            else:
                raise ProtocolError(
                    f"{p['name']}: pair {pair['name']} seed {seed} is not measured: run "
                    f"`python -m experiments.protocol run {p['name']}`"
                )
            rows.append(
                {
                    "protocol": p["name"],
                    "pair": pair["name"],
                    "a": pair["a"],
                    "b": pair["b"],
                    "seed": seed,
                    "distance": record["distance"],
                    "barrier": record["barrier"],
                    "path_t": json.dumps(record["t"]),
                    "path_loss": json.dumps(record["loss"]),
                    "n_samples": record["n_samples"],
                    # a → b (t = 0 → 1): train/test loss and accuracy, for Keskar's figure
                    "interpolation": json.dumps(record["interpolation"])
                    if "interpolation" in record
                    else None,
                    "run_a": str(fa),
                    "run_b": str(fb),
                }
            )
            if on_row:
                on_row()
    return rows


def measure_pairs(p: Mapping[str, Any], rates: Mapping[str, float], common) -> int:
    """Measure every pair of the protocol that is not measured yet; 0 (errors raise)."""
    with tqdm(total=len(p["pairs"]) * len(p["seeds"]), desc=f"{p['name']} pairs") as bar:
        pair_rows(p, rates, common, measure=True, on_row=lambda: bar.update(1))
    return 0
