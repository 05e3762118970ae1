"""The catalogue: every registered measure, with its one-line definition and its reference.

Each entry registers a function of :mod:`flatness.curvature`, :mod:`flatness.sharpness` or
:mod:`flatness.norms` as it is; its defaults come from its signature (see :mod:`flatness.registry`).
Only the loss/accuracy entries and two norm baselines that need the data's shape are defined here.
References name the paper and the metric or part of it that defines the measure. Curvature and
sharpness use the training loss without a weight-decay term, in the mode ``measure`` is given (eval
by default), on the whole training set unless ``subset`` names the first N samples. Accuracy measures
on a task without class labels are NaN with the reason in ``extra["not_applicable"]``.
"""

from __future__ import annotations

import math

from flatness import barrier, curvature, margin, minibatch, norms, sharpness
from flatness.objective import Objective
from flatness.registry import (
    NON_NEGATIVE,
    POSITIVE,
    SEED,
    SUBSET,
    Limit,
    Measurement,
    at_least,
    one_of,
    register,
)

# What each setting means and its unit, shown by flatness.describe(name) with its default and limits.
SEED_NOTE = (
    "seed of the random draws (an integer in [0, 2**32 - 1]); the same seed, the same number"
)
SUBSET_NOTE = "measure on the first N training samples only (None: all of them)"
LANCZOS_NOTES = {
    "tol": "stop when the error bound is <= tol × λ (relative, a fraction of λ: 1e-3 = 0.1%)",
    "bound": "'residual': the guaranteed bound ‖Hx − λx‖; 'gap': the sharper estimate r²/δ "
    "(fewer products, reliable once the Ritz gap δ has settled)",
    "max_iter": "most Hessian-vector products (Lanczos steps); `converged` in extra says if it stopped",
    "seed": SEED_NOTE,
    "subset": SUBSET_NOTE,
    "precision": "dtype of the stored Lanczos basis: 'auto' (that of the parameters, so float32 for "
    "a float32 model: fast, ~4 bytes per parameter per step, within ~1e-6 relative of float64), "
    "'float32', or 'float64' (the numbers of flatness <= 0.2 bit for bit); extra['basis_dtype'] "
    "says which ran",
}
RHO_NOTE = (
    "radius of the perturbation ball, in the units of the weights (plain) or relative to |w| + η "
    "(adaptive): δ = (|w| + η)⊙u with ‖u‖ <= ρ, so ρ = 0.5 lets each weight move by about half "
    "its size in ℓ2 over all weights. Plain SAM (Foret et al. 2021) uses 0.05; adaptive ASAM "
    "(Kwon et al. 2021) uses 0.5 — pass rho=0.5 with adaptive=True (see the function's docstring "
    "for the audit's numbers)"
)
SHARP_NOTES = {
    "rho": RHO_NOTE,
    "norm": "'l2' ball or 'linf' box for u",
    "adaptive": "scale the perturbation by |w| + η (ASAM, Kwon et al. 2021): invariant to Dinh's "
    "layer and neuron rescaling",
    "eta": "added to |w| in the adaptive scale, so that zero weights can move too (ASAM uses 0.01)",
    "seed": SEED_NOTE,
}


# --- loss, accuracy and the generalisation gap -------------------------------------------------


def _accuracy(obj: Objective, fn=lambda a: a) -> float | Measurement:
    """``fn`` of the accuracy; on a task without class labels (regression), NaN with the reason
    in ``extra["not_applicable"]`` instead of a number that means nothing."""
    evaluation = obj.evaluation()
    if evaluation.accuracy is None:
        return Measurement(math.nan, {}, {"not_applicable": evaluation.accuracy_note})
    return fn(evaluation.accuracy)


def train_loss(obj: Objective) -> float:
    return obj.evaluation().loss


def train_acc(obj: Objective) -> float | Measurement:
    return _accuracy(obj)


def train_error(obj: Objective) -> float | Measurement:
    return _accuracy(obj, lambda a: 1.0 - a)


def test_loss(obj: Objective, *, test: Objective) -> float:
    return test.evaluation().loss


def test_acc(obj: Objective, *, test: Objective) -> float | Measurement:
    return _accuracy(test)


def test_error(obj: Objective, *, test: Objective) -> float | Measurement:
    return _accuracy(test, lambda a: 1.0 - a)


def gap(obj: Objective, *, test: Objective) -> float | Measurement:
    train = _accuracy(obj)
    return train if isinstance(train, Measurement) else _accuracy(test, lambda a: train - a)


def gap_loss(obj: Objective, *, test: Objective) -> float:
    return test.evaluation().loss - obj.evaluation().loss


for _fn, _text in [
    (train_loss, "mean loss on the training set (eval mode)"),
    (train_acc, "classification accuracy on the training set"),
    (train_error, "classification error (1 − accuracy) on the training set"),
    (test_loss, "mean loss on the test set (eval mode)"),
    (test_acc, "classification accuracy on the test set"),
    (test_error, "classification error (1 − accuracy) on the test set"),
    (gap, "generalisation gap: test error − train error"),
    (gap_loss, "loss gap: test loss − train loss"),
]:
    register(_fn.__name__, _fn, description=_text)


# --- norm baselines ------------------------------------------------------------------------------


def distance_from_init(model, *, init) -> float:
    if init is None:
        raise ValueError("distance_from_init needs the initial weights: pass init=")
    return norms.distance_from_init(model, init)


def path_norm(obj: Objective) -> float:
    return norms.path_norm(obj.model, obj.data.sample_shape())


JIANG = "Jiang et al. 2020"
register(
    "param_norm",
    norms.param_norm,
    description="Euclidean norm of all trainable parameters",
    reference=f"{JIANG}, App. C (norm-based)",
)
register(
    "distance_from_init",
    distance_from_init,
    reference=f"Nagarajan & Kolter 2019; {JIANG}, App. C (norm-based)",
    description="Euclidean distance of the parameters from their initial values",
)
register("param_count", norms.param_count, description="number of trainable parameters")
register(
    "linear_barrier",
    barrier.linear_barrier,
    limits={"points": at_least(2), "subset": SUBSET},
    notes={"points": "evenly spaced points t in [0, 1] on the path", "subset": SUBSET_NOTE},
    description="largest rise of the training loss on the straight path from init above its chord",
    reference="Frankle et al. 2020 (linear mode connectivity); the deck's Adam explanation",
)
register(
    "fisher_rao_norm",
    norms.fisher_rao_norm,
    limits={"subset": SUBSET},
    notes={"subset": SUBSET_NOTE},
    description="sqrt(E⟨θ, ∇θ ℓ_i⟩²) over training samples, eval mode",
    reference=f"Liang et al. 2019; {JIANG}, App. C (norm-based)",
)
register(
    "inverse_margin",
    margin.inverse_margin,
    limits={"quantile": Limit(low=0, high=1, low_open=True, high_open=True), "subset": SUBSET},
    notes={
        "quantile": "which quantile of the margins is γ (0.1: the 10th percentile)",
        "subset": SUBSET_NOTE,
    },  # fmt: skip
    description="1/γ², γ the 10th percentile of the training margins f(x)_y − max_{j≠y} f(x)_j",
    reference=f"{JIANG}, App. C.1 (output & margin based)",
)
register(
    "frobenius_sum",
    norms.frobenius_sum,
    description="Σ_layers ‖W‖_F²",
    reference=f"{JIANG}, App. C (norm-based)",
)
register(
    "frobenius_product",
    norms.frobenius_product,
    description="Π_layers ‖W‖_F²",
    reference=f"{JIANG}, App. C (norm-based)",
)
register(
    "spectral_product",
    norms.spectral_product,
    reference=f"Bartlett et al. 2017; {JIANG}, App. C (norm-based)",
    description="Π_layers ‖W‖₂² (conv kernels as out×(in·k·k) matrices)",
)
register(
    "path_norm",
    path_norm,
    reference=f"Neyshabur et al. 2015; {JIANG}, App. C (norm-based)",
    description="ℓ2 path norm: sqrt of the outputs of the squared-weight network on ones",
)


# --- curvature -----------------------------------------------------------------------------------

LANCZOS = {
    "tol": POSITIVE,
    "bound": one_of("residual", "gap"),
    "max_iter": at_least(1),
    "seed": SEED,
    "subset": SUBSET,
    "precision": one_of("auto", "float32", "float64"),
}
register(
    "lambda_max",
    curvature.lambda_max,
    limits=LANCZOS,
    notes=LANCZOS_NOTES,
    description="largest Hessian eigenvalue of the training loss (Lanczos, residual error bound)",
    reference="Keskar et al. 2017; Ghorbani et al. 2019",
)
register(
    "minibatch_lambda_max",
    minibatch.minibatch_lambda_max,
    limits={
        "b": at_least(1),
        "n_batches": at_least(1),
        "tol": POSITIVE,
        "max_iter": at_least(1),
        "seed": SEED,
        "subset": SUBSET,
        "precision": one_of("auto", "float32", "float64"),
    },
    notes={
        "b": "samples per batch",
        "n_batches": "disjoint batches (fewer if the data hold fewer than b × n_batches)",
        **{k: LANCZOS_NOTES[k] for k in ("tol", "max_iter", "subset", "precision")},
        "seed": "seed of the batches' permutation; batch i's Lanczos start uses seed + i",
    },
    description="mean largest Hessian eigenvalue of the loss on disjoint batches of b samples",
    reference="the deck's averaging explanation; Keskar et al. 2017 (sharpness at the batch scale)",
)
register(
    "hessian_top_k",
    curvature.top_eigenvalues,
    limits={**LANCZOS, "k": Limit(low=1, integer=True, at_most_params=True)},
    notes={"k": "how many of the largest eigenvalues", **LANCZOS_NOTES},
    description="the k largest Hessian eigenvalues, a list (Lanczos)",
    reference="Ghorbani et al. 2019; Yao et al. 2020 (PyHessian)",
)


def _probes(s) -> None:
    if s["min_probes"] > s["max_probes"]:
        raise ValueError(f"min_probes: must be <= max_probes (got {s['min_probes']})")


register(
    "hessian_trace",
    curvature.hessian_trace,
    check=_probes,
    limits={
        "rtol": POSITIVE,
        "min_probes": at_least(2),
        "max_probes": at_least(2),
        "seed": SEED,
        "subset": SUBSET,
    },
    notes={
        "rtol": "stop when the standard error is <= rtol × |trace| (relative)",
        "min_probes": "fewest Rademacher probes (Hessian-vector products) before stopping",
        "max_probes": "most probes; `converged` in extra says whether rtol was reached",
        "seed": SEED_NOTE,
        "subset": SUBSET_NOTE,
    },
    description="Hessian trace by Hutchinson (Rademacher), stopped on its standard error",
    reference="Hutchinson 1989; Yao et al. 2020 (PyHessian)",
)
register(
    "hessian_trace_hutchpp",
    curvature.hessian_trace_hutchpp,
    limits={"products": at_least(6), "seed": SEED, "subset": SUBSET},
    notes={
        "products": "Hessian-vector products in all (a third sketch, a third exact, a third probes)",
        "seed": SEED_NOTE,
        "subset": SUBSET_NOTE,
    },
    description="Hessian trace by Hutch++ (low-rank part exact, residual by Hutchinson)",
    reference="Meyer et al. 2021 (Hutch++)",
)
register(
    "hessian_esd",
    curvature.spectral_density,
    limits={
        "vectors": at_least(1),
        "steps": at_least(1),
        "seed": SEED,
        "subset": SUBSET,
        "precision": one_of("auto", "float32", "float64"),
        "memory": POSITIVE,
    },
    notes={
        "vectors": "random start vectors (quadratures averaged)",
        "steps": "Lanczos steps per vector: quadrature nodes, and Hessian-vector products",
        "seed": SEED_NOTE,
        "subset": SUBSET_NOTE,
        "precision": LANCZOS_NOTES["precision"],
        "memory": "GiB the stored Lanczos basis may take; beyond it, each step is "
        "reorthogonalised against the most recent vectors that fit (extra['window'])",
    },
    description="eigenvalue spectral density by SLQ; value = its mean (≈ trace / parameters)",
    reference="Ubaru et al. 2017; Ghorbani et al. 2019",
)


# --- sharpness -----------------------------------------------------------------------------------

SHARP = {"rho": POSITIVE, "eta": NON_NEGATIVE, "seed": SEED}
register(
    "keskar_sharpness",
    sharpness.keskar_sharpness,
    limits={
        "epsilon": POSITIVE,
        "subspace_dim": Limit(low=1, integer=True, optional=True, at_most_params=True),
        "method": one_of("lbfgsb", "pga"),
        "max_iter": at_least(1),
        "seed": SEED,
        "subset": SUBSET,
    },
    notes={
        "epsilon": "box half-width relative to the weights: |y_i| <= ε(|x_i| + 1) (the paper: 1e-3)",
        "subspace_dim": "maximise in a random subspace of this dimension (None: the full space)",
        "method": "'lbfgsb' (the paper's L-BFGS-B) or 'pga' (projected gradient ascent)",
        "max_iter": "optimiser iterations (the paper: 10)",
        "seed": SEED_NOTE,
        "subset": SUBSET_NOTE,
    },
    description="max loss rise in the box |y| ≤ ε(|x|+1), /(1+f(x)) ×100 (L-BFGS-B, 10 iterations)",
    reference="Keskar et al. 2017, Metric 2.1",
)
register(
    "worst_case_sharpness",
    sharpness.worst_case_sharpness,
    limits={
        **SHARP,
        "norm": one_of("l2", "linf"),
        "steps": at_least(1),
        "subset": SUBSET,
        "step_size": Limit(low=0, low_open=True, optional=True),
    },
    notes={
        **SHARP_NOTES,
        "steps": "projected gradient-ascent steps",
        "step_size": "length of each ascent step for u, an absolute length on ρ's scale, not a multiple of ρ (None: 2.5·ρ/steps, Madry et al.'s rule: the path travels 2.5·ρ whatever steps is, so more steps refine it without going further; away from a minimum give a larger step_size)",
        "subset": SUBSET_NOTE,
    },
    description="max over ‖δ‖ ≤ ρ (ℓ2 or ℓ∞, δ scaled by |w|+η if adaptive) of L(w+δ) − L(w)",
    reference="Foret et al. 2021 (SAM); Kwon et al. 2021 (ASAM); Andriushchenko et al. 2023",
)
register(
    "m_sharpness",
    sharpness.m_sharpness,
    limits={
        **SHARP,
        "norm": one_of("l2", "linf"),
        "steps": at_least(1),
        "m": at_least(1),
        "batches": at_least(1),
    },
    notes={
        **SHARP_NOTES,
        "steps": "projected gradient-ascent steps per batch",
        "m": "samples per batch (Foret et al.'s m)",
        "batches": "disjoint random batches averaged",
    },
    description="worst-case sharpness on batches of m samples, averaged",
    reference="Foret et al. 2021 (m-sharpness); Andriushchenko et al. 2023",
)
register(
    "average_sharpness",
    sharpness.average_sharpness,
    limits={**SHARP, "norm": one_of("l2", "linf"), "samples": at_least(2), "subset": SUBSET},
    notes={
        **SHARP_NOTES,
        "rho": "standard deviation of each Gaussian coordinate of δ ('l2'), or the half-width of "
        "the uniform box ('linf'); relative to |w| + η if adaptive",
        "norm": "'l2': Gaussian δ; 'linf': δ uniform in the box [−ρ, ρ]",
        "samples": "Monte Carlo draws of δ",
        "subset": SUBSET_NOTE,
    },
    description="E L(w+δ) − L(w), δ ~ N(0, ρ²) or U[−ρ, ρ] (ℓ2/ℓ∞; scaled by |w|+η if adaptive)",
    reference=f"Andriushchenko et al. 2023; {JIANG}, App. C (flatness-based)",
)


def _sigmas(s) -> None:
    if not s["sigma_min"] < s["sigma_max"]:
        raise ValueError(f"sigma_min: must be < sigma_max (got {s['sigma_min']}, {s['sigma_max']})")


register(
    "pacbayes_sigma",
    sharpness.pacbayes_sigma,
    check=_sigmas,
    limits={
        "target_rise": Limit(low=0, high=1, low_open=True, high_open=True),
        "epsilon": POSITIVE,
        "samples": at_least(1),
        "sigma_min": POSITIVE,
        "sigma_max": POSITIVE,
        "rel_tol": POSITIVE,
        "max_iter": at_least(1),
        "seed": SEED,
        "subset": SUBSET,
    },
    notes={
        "target_rise": "largest allowed rise of the training error (a fraction: 0.1 = 10 points)",
        "magnitude_aware": "noise N(0, σ²w² + ε²) per weight instead of N(0, σ²) (Jiang et al.'s "
        "magnitude-aware bound)",
        "epsilon": "the ε of the magnitude-aware noise (in weight units)",
        "samples": "noise draws per σ tried",
        "sigma_min": "lower end of the bisection (in weight units)",
        "sigma_max": "upper end of the bisection",
        "rel_tol": "stop the bisection when its interval is below rel_tol relative",
        "max_iter": "most bisection steps",
        "seed": SEED_NOTE,
        "subset": SUBSET_NOTE,
    },
    description="largest σ with train-error rise ≤ target under N(0, σ²) weight noise; 1/σ² in extra",
    reference=f"{JIANG}, App. C (PAC-Bayes flatness, plain and magnitude-aware)",
)
