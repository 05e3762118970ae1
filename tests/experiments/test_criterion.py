"""Whether a run counts is decided in one place, for a record and for a table of runs alike."""

import pandas as pd

from experiments.criterion import reached, reached_rows


def test_a_run_counts_at_its_criterion_or_through_a_fixed_budget_and_only_if_finished():
    cases = [
        ({"status": "finished", "stop_reason": "train_until_loss"}, False, True),
        ({"status": "finished", "stop_reason": "max_steps"}, False, False),
        ({"status": "finished", "stop_reason": "max_steps"}, True, True),
        ({"status": "finished", "stop_reason": "train_until_loss"}, True, False),
        ({"status": "diverged", "stop_reason": "diverged"}, False, False),
        ({"status": "failed", "stop_reason": "train_until_loss"}, False, False),
    ]
    for result, fixed, counts in cases:
        assert reached(result, fixed_budget=fixed) is counts, (result, fixed)
    table = pd.DataFrame([r for r, _, _ in cases])
    for fixed in (False, True):  # the table's answer is the record's, row by row
        expected = [reached(r, fixed_budget=fixed) for r, _, _ in cases]
        assert reached_rows(table, fixed_budget=fixed).tolist() == expected
