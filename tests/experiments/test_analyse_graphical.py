"""The graphical procedure (Bretz et al. 2009) against independent computations: Holm's procedure as
the verdicts compute it (``stats.holm``, step-down over sorted p-values), a fixed sequence by hand, and the effect-then-mechanism graph's branches."""

from __future__ import annotations

import numpy as np
import pytest

from experiments.analyse.graphical import (
    effect_then_mechanism,
    graphical_adjusted,
    graphical_rejections,
)
from experiments.analyse.stats import holm


def _holm_graph(m):
    return np.full(m, 1 / m), (np.ones((m, m)) - np.eye(m)) / (m - 1)


@pytest.mark.parametrize("seed", range(20))
def test_the_holm_graph_rejects_and_adjusts_as_holm(seed):
    rng = np.random.default_rng(seed)
    m = int(rng.integers(2, 9))
    p = rng.uniform(0, 0.08, m) ** rng.uniform(0.5, 2)
    w, g = _holm_graph(m)
    adjusted = holm(p)
    reject = adjusted <= 0.05
    assert graphical_rejections(p, w, g, 0.05).tolist() == reject.tolist()
    assert graphical_adjusted(p, w, g) == pytest.approx(adjusted, abs=1e-9)


def test_a_fixed_sequence_tests_the_second_at_full_alpha_only_after_the_first():
    w, g = np.array([1.0, 0.0]), np.array([[0.0, 1.0], [0.0, 0.0]])
    assert graphical_rejections([0.04, 0.049], w, g, 0.05).tolist() == [True, True]
    assert graphical_rejections([0.06, 0.001], w, g, 0.05).tolist() == [False, False]
    assert graphical_adjusted([0.01, 0.03], w, g) == pytest.approx([0.01, 0.03])
    assert graphical_adjusted([0.03, 0.01], w, g) == pytest.approx([0.03, 0.03])


def test_an_effect_passes_its_alpha_to_its_own_mechanism():
    w, g = effect_then_mechanism([True, False])  # claim 0: effect, mechanism; claim 1: effect
    assert w.tolist() == [0.5, 0.0, 0.5]
    assert g[0].tolist() == [0.0, 1.0, 0.0] and g[1].tolist() == [0.0, 0.0, 1.0]
    assert g[2].tolist() == [1.0, 0.0, 0.0]
    # effect 0 at its half of α, then its mechanism at that half
    assert graphical_rejections([0.02, 0.024, 0.9], w, g, 0.05).tolist() == [True, True, False]
    # the mechanism alone, however small its p, is never tested before its effect
    assert graphical_rejections([0.3, 1e-9, 0.9], w, g, 0.05).tolist() == [False, False, False]
    # all established: α recycled to the other claim's effect, tested at the whole α
    assert graphical_rejections([0.01, 0.02, 0.045], w, g, 0.05).tolist() == [True, True, True]


def test_a_graph_that_is_not_one_is_refused():
    with pytest.raises(ValueError, match="sum to at most 1"):
        graphical_rejections([0.01, 0.02], [0.7, 0.7], [[0, 1], [1, 0]], 0.05)
    with pytest.raises(ValueError, match="diagonal"):
        graphical_rejections([0.01, 0.02], [0.5, 0.5], [[1, 0], [1, 0]], 0.05)
