"""Whether a run counts: the one place it is decided, for a run's record and for a table of runs.

Runs are compared at equal training loss (Jiang et al. 2020's stopping criterion): a run counts when
it finished at its criterion (``stop_reason == "train_until_loss"``), or, for an arm that trains for a
stated number of steps (``fixed_budget``), through its whole step budget. Everything that asks —
the search, the verdicts, the study, the audit, the report's counts — asks here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

REACHED = "train_until_loss"  # the stop_reason of a run that met its training criterion
BUDGET = "max_steps"  # the stop_reason of a run that used its whole step budget


def reached(result: Mapping[str, Any], *, fixed_budget: bool = False) -> bool:
    """Whether the run of this record counts."""
    if result.get("status", "finished") != "finished":
        return False
    return result.get("stop_reason") == (BUDGET if fixed_budget else REACHED)


def reached_rows(runs: pd.DataFrame, *, fixed_budget: bool = False) -> pd.Series:
    """:func:`reached` for every row of a runs table (``stop_reason`` and, where present,
    ``status`` columns)."""
    done = runs["status"].eq("finished") if "status" in runs else True
    return runs["stop_reason"].eq(BUDGET if fixed_budget else REACHED) & done
