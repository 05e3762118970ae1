"""Analysis of the deck's second explanation (each sample's sharp minimum averaged flat by a big
batch): per-batch sharpness of each minimum, tidy, and Kendall τ of each batch size's sharpness with
test error, with a seed-bootstrap interval (Efron & Tibshirani 1993, §8).

Tables in, tables out: the verdicts step writes ``sharpness_by_batch_<protocol>.csv`` (τ) and
``sharpness_by_batch_values_<protocol>.csv`` (the tidy values) from the protocol's paired and runs
tables, and the report reads them; the bootstraps (2,000 draws for each of
28 rows, 40 s) are computed once here, not each time the report is written.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from experiments.analyse.stats import kendall_tau_bootstrap

N_BOOT = 2000
QUANTITIES = r"^(lmax|msharp)_"  # λmax(L_B) and m-sharpness at batch size B, recorded per run


def _b_of(quantity: str, n_all: dict[str, int], arm: str) -> float:
    tail = quantity.rsplit("_b", 1)[-1] if "_b" in quantity else "all"
    return float(n_all[arm]) if tail == "all" or quantity.endswith("_all") else float(tail)


def sharpness_by_b(paired: pd.DataFrame, runs: pd.DataFrame, name: str) -> pd.DataFrame:
    """Tidy rows (model, arm, seed, measure, B, value, test_error) of every λmax(L_B) and
    m-sharpness value of protocol ``name``, B = the training set's size for the whole-set values."""
    rows = paired[paired["quantity"].str.match(QUANTITIES)].drop_duplicates(
        ["arm", "seed", "quantity"]
    )
    mine = runs[runs["protocol"] == name]
    n_all = mine.drop_duplicates("arm").set_index("arm")["num_train"].to_dict()
    test = mine.set_index(["arm", "seed"])["test_error"]
    out = pd.DataFrame(
        {
            "model": rows["arm"].str.split("_").str[0].str.upper(),
            "arm": rows["arm"],
            "batch": rows["arm"].str.split("_").str[1],
            "seed": rows["seed"],
            "measure": np.where(
                rows["quantity"].str.startswith("lmax"), "λmax(L_B)", "m-sharpness (ρ = 0.05)"
            ),
            "quantity": rows["quantity"],
            "B": [_b_of(q, n_all, a) for q, a in zip(rows["quantity"], rows["arm"], strict=True)],
            "whole_set": rows["quantity"].str.endswith("_all"),
            "value": rows["value"],
        }
    )
    out["test_error"] = [test[a, s] for a, s in zip(out["arm"], out["seed"], strict=True)]
    return out


def tau_table(tidy: pd.DataFrame, n_boot: int = N_BOOT) -> pd.DataFrame:
    """Kendall τ of each (model, measure, batch size)'s sharpness with test error over the minima
    of both arms, with its 95% seed-bootstrap interval."""
    rows = []
    for (model, measure, quantity), sub in tidy.groupby(
        ["model", "measure", "quantity"], sort=False
    ):
        both = sub.dropna(subset=["value"])
        tau, lo, hi = kendall_tau_bootstrap(
            both["value"], both["test_error"], both["seed"], n_boot=n_boot
        )
        rows.append(
            {"model": model, "measure": measure, "quantity": quantity, "tau": tau,
             "tau_low": lo, "tau_high": hi}
        )  # fmt: skip
    return pd.DataFrame(rows)


def write_tau_table(name: str, tables: Path, out: Path | None = None) -> Path | None:
    """``sharpness_by_batch_<name>.csv`` (τ) and ``sharpness_by_batch_values_<name>.csv`` (the tidy
    values) from ``paired_<name>.csv`` and ``protocol_runs.csv`` in ``tables`` (written to ``out``,
    default ``tables``), where the protocol records per-batch sharpness; None (and no files) where
    it does not."""
    out = tables if out is None else out
    path, values = (
        out / f"sharpness_by_batch_{name}.csv",
        out / f"sharpness_by_batch_values_{name}.csv",
    )
    paired = pd.read_csv(tables / f"paired_{name}.csv")
    if not paired["quantity"].str.match(QUANTITIES).any():
        path.unlink(missing_ok=True)
        values.unlink(missing_ok=True)
        return None
    tidy = sharpness_by_b(paired, pd.read_csv(tables / "protocol_runs.csv"), name)
    tidy.to_csv(values, index=False)
    tau_table(tidy).to_csv(path, index=False)
    return path
