"""A protocol's robustness runs (issue 26): run specifications, carried out, and kept as compact
records that are committed, so the stage can span sessions and machines.

Two kinds of run re-read each comparison named in the protocol's ``robustness`` block:

- **the rate grid**: each arm of the comparison at its chosen rate times each multiplier (×2 only
  where the search found that rate eligible), on the block's paired seeds; ×1 is the final runs;
- **the second endpoint**: each final run continued to ``endpoint_factor`` × the criterion and
  measured again. ``start_from`` takes it up from the final run's checkpoint when that run is on
  this machine, else it trains from scratch: the run id and the weights are the same either way
  (:mod:`experiments.continuation`).

Every run's record (settings, steps, losses, the measures, the code hashes; no weights) goes to
``<records>/<protocol>_robust.csv``. A run whose record is there is not run again, whichever machine
made it; a record made by code other than the block's ``frozen_code`` is kept but never read
(:func:`frozen`). The runs themselves live under ``runs/<protocol>_robust/``, a cache.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from experiments.code_version import code_hashes
from experiments.criterion import reached
from experiments.errors import ProtocolError
from experiments.execute import execute
from experiments.plan import Spec, arm_spec, dependent, load_result, run_dir
from flatness.io import atomic_write_bytes

RECORD_COLUMNS = [
    "protocol", "kind", "arm", "seed", "multiplier", "lr", "train_until_loss", "run_id",
    "code_training", "code_measuring", "cpu", "cpu_capability", "status", "stop_reason", "reached",
    "steps_trained", "train_loss", "val_error", "test_error",
]  # fmt: skip
GRID, ENDPOINT, BUDGET = "rate", "endpoint", "budget"
CHUNK = 4  # runs per job between two writes of the records: a killed stage loses at most these


def block(p: Mapping[str, Any]) -> dict[str, Any]:
    r = p.get("robustness")
    if not r or not r.get("comparisons"):
        raise ProtocolError(f"protocol {p['name']} has no robustness block naming its comparisons")
    return r


def robust_name(p: Mapping[str, Any]) -> str:
    return f"{p['name']}_robust"


def robust_arms(p: Mapping[str, Any]) -> list[str]:
    """The arms of the comparisons the block names, in the protocol's order."""
    named = set(block(p)["comparisons"])
    found = {c["name"] for c in p["comparisons"]}
    if missing := named - found:
        raise ProtocolError(
            f"robustness.comparisons: {sorted(missing)} are not comparisons of {p['name']}"
        )
    used = {c[k] for c in p["comparisons"] if c["name"] in named for k in ("a", "b")}
    return [a for a in p["arms"] if a in used]


def _measured(p: Mapping[str, Any]) -> dict[str, Any]:
    """The block's measures, with the settings the protocol measures them with."""
    settings = p["base"].get("metrics") or {}
    names = block(p).get("metrics", [])
    if missing := [m for m in names if m not in settings]:
        raise ProtocolError(f"robustness.metrics: {missing} are not among the protocol's metrics")
    return {m: settings[m] for m in names}


def _plain(p: Mapping[str, Any], spec: Spec, **values: Any) -> Spec:
    """``spec`` under the robust name, measuring the block's measures and nothing else."""
    keep = {
        k: v
        for k, v in spec.values.items()
        if not k.startswith("surface.") and k not in ("track_sharpness_samples",)
    }
    over = {"name": robust_name(p), "metrics": _measured(p), "surface": "none",
            "track_sharpness_every": 0, **values}  # fmt: skip
    return Spec(spec.arm, float(values.get("lr", spec.lr)), spec.seed, {**keep, **over})


def grid_specs(
    p: Mapping[str, Any], rates: Mapping[str, float], eligible_double: Iterable[str] = ()
) -> list[tuple[float, Spec]]:
    """(multiplier, spec) of every grid point off ×1: each arm at rate × multiplier, per seed."""
    r, double = block(p), set(eligible_double)
    out = []
    for arm in robust_arms(p):
        for m in r["rate_multipliers"]:
            if math.isclose(m, 1.0) or (math.isclose(m, 2.0) and arm not in double):
                continue
            for seed in r["seeds"]:
                final = arm_spec(p, arm, rates, seed)
                out.append((float(m), _plain(p, final, lr=float(rates[arm] * m))))
    return out


def endpoint_specs(
    p: Mapping[str, Any], rates: Mapping[str, float], common: Mapping[str, Any]
) -> list[Spec]:
    """Every final run of the block's arms continued to ``endpoint_factor`` × its criterion."""
    factor = block(p).get("endpoint_factor")
    if factor is None:
        return []
    out = []
    for arm in robust_arms(p):
        if dependent(p, arm):
            raise ProtocolError(f"robustness: arm {arm} continues another run; not supported yet")
        for seed in p["seeds"]:
            final = arm_spec(p, arm, rates, seed, common)
            criterion = final.values.get("train_until_loss")
            if criterion is None:
                raise ProtocolError(f"robustness.endpoint_factor: arm {arm} has no criterion")
            values = {"train_until_loss": float(criterion) * float(factor)}
            checkpoint = run_dir(final, common) / "checkpoint.pt"
            if checkpoint.exists():  # else: trained from scratch, the same run
                values["start_from"] = str(checkpoint)
            out.append(_plain(p, final, **values))
    return out


def budget_specs(
    p: Mapping[str, Any], rates: Mapping[str, float], common: Mapping[str, Any]
) -> list[Spec]:
    """Every final run of the block's arms continued to its arm's whole step budget, with no
    criterion (``budget_endpoint``: a fixed number of steps, as Wilson et al. 2017 and Keskar et al.
    2017 trained): taken up from the second endpoint's checkpoint, else the final run's, where one
    is on this machine (else trained from scratch: the same run)."""
    if not block(p).get("budget_endpoint"):
        return []
    lower = {(s.arm, s.seed): s for s in endpoint_specs(p, rates, common)}
    out = []
    for arm in robust_arms(p):
        for seed in p["seeds"]:
            final = arm_spec(p, arm, rates, seed, common)
            values = {"train_until_loss": None}
            for source in (lower.get((arm, seed)), final):
                checkpoint = run_dir(source, common) / "checkpoint.pt" if source else None
                if checkpoint is not None and checkpoint.exists():
                    values["start_from"] = str(checkpoint)
                    break
            out.append(_plain(p, final, **values))
    return out


def records_path(p: Mapping[str, Any], records: Path) -> Path:
    return records / f"{robust_name(p)}.csv"


def read_records(p: Mapping[str, Any], records: Path) -> pd.DataFrame:
    path = records_path(p, records)
    return pd.read_csv(path) if path.exists() else pd.DataFrame(columns=RECORD_COLUMNS)


def frozen(p: Mapping[str, Any], table: pd.DataFrame) -> pd.DataFrame:
    """The records made by the block's frozen code (``robustness.frozen_code``), the only ones read."""
    code = block(p).get("frozen_code") or {}
    keep = pd.Series(True, index=table.index)
    for part in ("training", "measuring"):
        if code.get(part):
            keep &= table[f"code_{part}"].astype(str) == str(code[part])
    return table[keep]


def record(
    p: Mapping[str, Any], kind: str, multiplier: float, spec: Spec, common, condition: str = ""
) -> dict | None:
    """The compact record of ``spec``'s finished run (None where it has not finished); a
    condition's runs carry the condition's name."""
    result, folder = load_result(spec, common)
    if result is None or "stop_reason" not in result:
        return None
    code = result.get("code") or {}
    row = {
        "protocol": p["name"], "kind": kind, "arm": spec.arm, "seed": spec.seed,
        "multiplier": multiplier, "lr": spec.lr,
        "train_until_loss": spec.values.get("train_until_loss"), "run_id": folder.name,
        "code_training": code.get("training"), "code_measuring": code.get("measuring"),
        "cpu": (result.get("machine") or {}).get("cpu"),
        "cpu_capability": (result.get("machine") or {}).get("cpu_capability"),
        "status": result.get("status"),
        "stop_reason": result.get("stop_reason"),
        "reached": reached(result, fixed_budget=kind == BUDGET),
        "steps_trained": result.get("steps_trained"), "train_loss": result.get("train_loss"),
        "val_error": result.get("val_error"), "test_error": result.get("test_error"),
    }  # fmt: skip
    if condition:
        row["condition"] = condition
    for name, m in (result.get("metrics") or {}).items():
        row[f"metric.{name}"] = m.get("value") if isinstance(m, Mapping) else m
    return row


def condition_records(p: Mapping[str, Any], records: Path, kind: str, name: str) -> pd.DataFrame:
    """The frozen records of one condition's runs of ``kind`` (``reached`` as a flag)."""
    table = frozen(p, read_records(p, records))
    if "condition" not in table:
        return table.iloc[0:0]
    mine = table[(table["kind"] == kind) & (table["condition"] == name)].copy()
    mine["reached"] = mine["reached"].astype(str).eq("True")
    return mine


def check_frozen(p: Mapping[str, Any]) -> None:
    """Refuse to run where the code that determines results is not the block's frozen code."""
    code, want = code_hashes(), block(p).get("frozen_code") or {}
    if changed := [k for k in ("training", "measuring") if want.get(k) and want[k] != code[k]]:
        raise ProtocolError(
            f"robustness.frozen_code: the {' and '.join(changed)} code is not the code this stage "
            f"was frozen with ({want} against this checkout's {code}); its records would not be "
            "read. Check out the frozen code, or freeze the stage anew (and rerun it)"
        )


def run_robust(
    p: Mapping[str, Any],
    rates: Mapping[str, float],
    common: Mapping[str, Any],
    jobs: int,
    records: Path,
    eligible_double: Iterable[str] = (),
) -> int:
    """Run the second endpoints and the rate grid the committed records lack (refused where the
    code that determines results is not the frozen code), then add the new runs' records. The
    number of runs that failed."""
    check_frozen(p)
    # the second endpoints first: they are the condition the labels read; the grid is descriptive
    todo = [(ENDPOINT, 1.0, s, "") for s in endpoint_specs(p, rates, common)]
    todo += [(BUDGET, 1.0, s, "") for s in budget_specs(p, rates, common)]
    todo += [(GRID, m, s, "") for m, s in grid_specs(p, rates, eligible_double)]
    return run_and_record(p, todo, common, jobs, records, "robustness")


def run_and_record(
    p: Mapping[str, Any],
    todo: list[tuple[str, float, Spec, str]],
    common: Mapping[str, Any],
    jobs: int,
    records: Path,
    label: str,
) -> int:
    """Run each (kind, multiplier, spec, condition) of ``todo`` whose record is not kept yet, writing
    the records as each chunk finishes. The number of runs that failed."""
    have = frozen(p, read_records(p, records))
    conditions = have["condition"].fillna("") if "condition" in have else [""] * len(have)
    done = set(zip(have["kind"], conditions, have["run_id"], strict=True))
    missing = [t for t in todo if (t[0], t[3], run_dir(t[2], common).name) not in done]
    failed = recorded = 0
    for start in range(0, len(missing), CHUNK * jobs):  # records kept as each chunk finishes
        chunk = missing[start : start + CHUNK * jobs]
        desc = f"{p['name']} {label} {start + len(chunk)}/{len(missing)}"
        failed += execute([s for _, _, s, _ in chunk], common, jobs, desc)
        rows = [r for k, m, s, c in chunk if (r := record(p, k, m, s, common, c)) is not None]
        _append(p, records, rows)
        recorded += len(rows)
    print(f"{label}: {len(todo) - len(missing)} of {len(todo)} runs already recorded; "
          f"{recorded} recorded now in {records_path(p, records)}")  # fmt: skip
    return failed


def _append(p: Mapping[str, Any], records: Path, rows: list[dict]) -> None:
    if not rows:
        return
    table = pd.concat([read_records(p, records), pd.DataFrame(rows)], ignore_index=True)
    records.mkdir(parents=True, exist_ok=True)
    columns = RECORD_COLUMNS + sorted(c for c in table.columns if c not in RECORD_COLUMNS)
    atomic_write_bytes(records_path(p, records), table[columns].to_csv(index=False).encode())
