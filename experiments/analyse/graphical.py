"""The graphical multiple-testing procedure of Bretz, Maurer, Brannath and Posch (2009), for a family
in which an effect passes its share of α on to its mechanism (issue 27).

A family of m hypotheses carries weights w (summing to at most 1) and a transition matrix G (row i:
how H_i's weight is shared out once H_i is rejected; zero diagonal, rows summing to at most 1). The
procedure (Bretz et al. 2009, Algorithm 1) rejects any H_j with p_j ≤ w_j α, moves w_j along row j
of G, updates G so the graph stays a graph on the hypotheses left, and repeats until nothing more
can be rejected. It controls the familywise error strongly at α. Holm's procedure is the graph with
equal weights whose every edge carries 1/(m − 1); a fixed sequence E → M is an edge of weight 1.

The adjusted p-value of H_i is the smallest α at which the procedure rejects it (Bretz et al. 2009,
§3.3); computed here by bisection on α, since the set rejected grows with α.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

TOLERANCE = 1e-12  # weights and p-values compared with this slack (sums of floats)


def _check(p: np.ndarray, w: np.ndarray, g: np.ndarray) -> None:
    m = len(p)
    if w.shape != (m,) or g.shape != (m, m):
        raise ValueError(f"weights must have {m} entries and transitions be {m} x {m}")
    if (w < 0).any() or w.sum() > 1 + TOLERANCE:
        raise ValueError(f"weights must be non-negative and sum to at most 1, got {w.tolist()}")
    if (g < 0).any() or np.any(np.diag(g) != 0) or (g.sum(axis=1) > 1 + TOLERANCE).any():
        raise ValueError(
            "transitions must be non-negative, 0 on the diagonal, rows summing to <= 1"
        )
    if np.isnan(p).any() or (p < 0).any() or (p > 1).any():
        raise ValueError("p-values must lie in [0, 1]")


def graphical_rejections(
    p: Sequence[float],
    weights: Sequence[float],
    transitions: Sequence[Sequence[float]],
    alpha: float,
) -> np.ndarray:
    """Which hypotheses the graphical procedure rejects at ``alpha`` (Bretz et al. 2009, Alg. 1)."""
    p = np.asarray(p, dtype=float)
    w = np.asarray(weights, dtype=float).copy()
    g = np.asarray(transitions, dtype=float).copy()
    _check(p, w, g)
    left = set(range(len(p)))
    rejected = np.zeros(len(p), dtype=bool)
    while True:
        found = [j for j in sorted(left) if p[j] <= w[j] * alpha * (1 + TOLERANCE)]
        if not found:
            return rejected
        j = found[0]
        rejected[j] = True
        left.discard(j)
        new_g = np.zeros_like(g)
        for i in left:
            w[i] += w[j] * g[j, i]
            for k in left:
                if i == k:
                    continue
                denom = 1 - g[i, j] * g[j, i]
                new_g[i, k] = (g[i, k] + g[i, j] * g[j, k]) / denom if denom > 0 else 0.0
        w[j] = 0.0
        g = new_g


def graphical_adjusted(
    p: Sequence[float], weights: Sequence[float], transitions: Sequence[Sequence[float]]
) -> np.ndarray:
    """Each hypothesis's adjusted p-value: the smallest α at which it is rejected (capped at 1)."""
    p = np.asarray(p, dtype=float)
    out = np.ones(len(p))
    for i in range(len(p)):
        if not graphical_rejections(p, weights, transitions, 1.0)[i]:
            continue  # not rejected even at α = 1
        lo, hi = 0.0, 1.0
        for _ in range(60):  # 2^-60: far below any p-value's own precision
            mid = (lo + hi) / 2
            lo, hi = (
                (lo, mid) if graphical_rejections(p, weights, transitions, mid)[i] else (mid, hi)
            )
        out[i] = hi
    return out


def effect_then_mechanism(has_mechanism: Sequence[bool]) -> tuple[np.ndarray, np.ndarray]:
    """The family's graph for claims each with an effect and possibly a mechanism, hypotheses in
    the order effect₁, [mechanism₁], effect₂, …: α split equally over the effects; an effect
    rejected passes all its weight to its own mechanism (or, without one, equally to the other
    effects); a mechanism rejected passes its weight equally to the other claims' effects. So a
    mechanism is tested only once its effect is established, at that effect's share of α."""
    index, effects = [], []
    for k, mech in enumerate(has_mechanism):
        effects.append(len(index))
        index.append(("effect", k))
        if mech:
            index.append(("mechanism", k))
    m, n_claims = len(index), len(has_mechanism)
    w = np.zeros(m)
    w[effects] = 1 / n_claims
    g = np.zeros((m, m))
    for i, (part, k) in enumerate(index):
        others = [e for e in effects if index[e][1] != k]
        if part == "effect" and has_mechanism[k]:
            g[i, i + 1] = 1.0
        elif others:
            g[i, others] = 1 / len(others)
    return w, g
