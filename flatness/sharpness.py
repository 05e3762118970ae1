"""Sharpness of a minimum: Keskar's ε-sharpness, worst-case and average-case sharpness (plain or
adaptive, with m-sharpness), and PAC-Bayes flatness.

- ε-sharpness, Keskar et al. 2017 (Metric 2.1): max over the box |y_i| ≤ ε(|(A⁺x)_i| + 1) of
  f(x + Ay) − f(x), divided by 1 + f(x), ×100; A = I (full space) or a random n×p matrix with
  i.i.d. N(0, 1) entries; maximised by L-BFGS-B (scipy, 10 iterations as in the paper) or by projected
  gradient ascent. Both stay inside the box.
- Worst-case sharpness max_{‖δ‖≤ρ} L(w+δ) − L(w) in ℓ2 or ℓ∞ by projected gradient ascent, and
  average-case sharpness E L(w+δ) − L(w) with δ ~ N(0, ρ²I) (ℓ2) or uniform in [−ρ, ρ]^d (ℓ∞). Adaptive variants scale δ elementwise by
  T = |w| + η (Kwon et al. 2021; Andriushchenko et al. 2023), which makes them invariant to the
  α-rescaling of Dinh et al. 2017 when η = 0. m-sharpness (Foret et al. 2021; Andriushchenko et al.
  2023) averages the worst case over batches of m samples.
- PAC-Bayes flatness, Jiang et al. 2020 (§C.2): the largest σ such that the training error rises by at
  most d under weight noise N(0, σ²) (or the magnitude-aware N(0, σ'²w² + ε²)), found by bisection on a
  log scale with common random numbers, so the search is deterministic for a seed.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.optimize
import torch

from flatness import params as P
from flatness.evaluate import evaluate
from flatness.objective import Objective
from flatness.registry import Measurement, records_settings


def _params_at(obj: Objective, flat: torch.Tensor) -> P.Params:
    return P.unflatten(flat.to(next(iter(obj.params.values())).dtype), obj.params)


@records_settings
def keskar_sharpness(
    obj: Objective,
    epsilon: float = 1e-3,
    *,
    subspace_dim: int | None = None,
    method: str = "lbfgsb",
    max_iter: int = 10,
    seed: int = 0,
    subset: int | None = None,
) -> Measurement:
    """Keskar et al.'s ε-sharpness of the objective at the model's weights (see the module docstring):
    Metric 2.1 with ε = 1e-3 and 10 L-BFGS-B iterations, as in the paper."""
    obj = obj.subset(subset)
    if not epsilon > 0:
        raise ValueError(f"epsilon must be > 0 (got {epsilon!r})")
    if method not in ("lbfgsb", "pga"):
        raise ValueError(f"method must be 'lbfgsb' or 'pga' (got {method!r})")
    if subspace_dim is not None and not (
        isinstance(subspace_dim, int) and 1 <= subspace_dim <= obj.dim
    ):
        raise ValueError(
            f"subspace_dim must be an integer in [1, {obj.dim}] or None (got {subspace_dim!r})"
        )
    x = P.flatten(obj.params).double()
    device = x.device
    if subspace_dim is None:
        A = None
        half_width = epsilon * (x.abs() + 1)
    else:
        g = torch.Generator().manual_seed(seed)
        A = torch.randn(obj.dim, subspace_dim, generator=g, dtype=torch.float64).to(device)
        half_width = epsilon * (torch.linalg.pinv(A) @ x).abs() + epsilon
    f0 = obj.value()
    best = {"f": f0}

    def f_and_grad(y: torch.Tensor) -> tuple[float, torch.Tensor]:
        delta = y if A is None else A @ y
        value, grads = obj.value_and_grad(_params_at(obj, x + delta))
        g = P.flatten(grads).double()
        best["f"] = max(best["f"], value)
        return value, (g if A is None else A.T @ g)

    lo, hi = (-half_width).cpu().numpy(), half_width.cpu().numpy()
    if method == "lbfgsb":

        def neg(y_np):
            value, g = f_and_grad(torch.as_tensor(y_np, device=device))
            return -value, -g.cpu().numpy()

        res = scipy.optimize.minimize(
            neg,
            np.zeros_like(lo),
            jac=True,
            method="L-BFGS-B",
            bounds=list(zip(lo, hi, strict=True)),
            options={"maxiter": max_iter},
        )
        y = np.clip(res.x, lo, hi)
        evaluations = int(res.nfev)
    else:
        y_t = torch.zeros_like(half_width)
        for _ in range(max_iter):  # ℓ∞ ascent: the box is an ℓ∞ ball in scaled coordinates
            _, g = f_and_grad(y_t)
            y_t = torch.clamp(y_t + 0.25 * half_width * torch.sign(g), -half_width, half_width)
        y = y_t.cpu().numpy()
        evaluations = max_iter
    delta = (
        torch.as_tensor(y, device=device) if A is None else A @ torch.as_tensor(y, device=device)
    )
    best["f"] = max(best["f"], obj.value(_params_at(obj, x + delta)))
    value = 100.0 * (best["f"] - f0) / (1.0 + f0)
    return Measurement(
        value,
        {"n_samples": obj.n},
        {
            "loss": f0,
            "max_loss": best["f"],
            "evaluations": evaluations,
            "max_box_violation": float(np.maximum(np.abs(y) - hi, 0).max()),
        },
    )


def _scale(obj: Objective, adaptive: bool, eta: float) -> P.Params:
    if not adaptive:
        return {k: torch.ones_like(v) for k, v in obj.params.items()}
    return {k: v.abs() + eta for k, v in obj.params.items()}


@records_settings
def worst_case_sharpness(
    obj: Objective,
    rho: float = 0.05,
    *,
    norm: str = "l2",
    adaptive: bool = False,
    eta: float = 0.0,
    steps: int = 20,
    step_size: float | None = None,
    seed: int = 0,
    subset: int | None = None,
) -> Measurement:
    """max over ‖u‖ ≤ ρ of L(w + T⊙u) − L(w) by projected gradient ascent (T = 1, or |w| + η if
    adaptive): SAM's sharpness (Foret et al. 2021), adaptive as ASAM (Kwon et al. 2021).

    Choosing ρ. The default 0.05 is SAM's radius for the plain ball, in the units of the weights. With
    ``adaptive=True`` ρ is relative to |w| + η, and ASAM uses ρ = 0.5 (with η = 0.01): pass both, the
    default 0.05 is then a ball ten times smaller than ASAM's. The project's scale-invariance audit
    (results/tables/audit.csv: the MNIST-1D momentum MLPs of batch 64 and 1,600, Dinh's layer- and
    neuron-wise rescaling by α ∈ {0.01, 1, 100}) measured the plain ρ = 0.05 sharpness at 0.0034 and
    0.0045, moving up to ×9.6e4 under rescaling, and the adaptive ρ = 0.5 sharpness at 0.0246 and
    0.0490, unchanged to 2e-7: compare models with the adaptive form, at ASAM's ρ.
    """
    obj = obj.subset(subset)
    if not rho > 0:
        raise ValueError(f"rho must be > 0 (got {rho!r})")
    if norm not in ("l2", "linf"):
        raise ValueError(f"norm must be 'l2' or 'linf' (got {norm!r})")
    if not (isinstance(steps, int) and steps >= 1):
        raise ValueError(f"steps must be an integer >= 1 (got {steps!r})")
    alpha = (
        step_size if step_size is not None else 2.5 * rho / steps
    )  # the usual PGD step (Madry et al.)
    T = _scale(obj, adaptive, eta)
    g = torch.Generator().manual_seed(seed)
    # A small random start: at an exact critical point the gradient alone would not move.
    u = {
        k: torch.randn(v.shape, generator=g, dtype=v.dtype).to(v.device)
        for k, v in obj.params.items()
    }
    u = _project(
        {k: t * (0.01 * rho / max(P.norm(u).item(), 1e-30)) for k, t in u.items()}, rho, norm
    )
    f0 = obj.value()
    best = f0
    for _ in range(steps):
        value, grads = obj.value_and_grad({k: obj.params[k] + T[k] * u[k] for k in u})
        best = max(best, value)
        gu = {k: grads[k] * T[k] for k in u}
        if norm == "l2":
            gn = P.norm(gu).item()
            if gn == 0:
                break
            u = {k: u[k] + alpha * gu[k] / gn for k in u}
        else:
            u = {k: u[k] + alpha * torch.sign(gu[k]) for k in u}
        u = _project(u, rho, norm)
    best = max(best, obj.value({k: obj.params[k] + T[k] * u[k] for k in u}))
    settings = {"step_size": alpha, "n_samples": obj.n}
    return Measurement(best - f0, settings, {"loss": f0, "max_loss": best})


def _project(u: P.Params, rho: float, norm: str) -> P.Params:
    if norm == "linf":
        return {k: t.clamp(-rho, rho) for k, t in u.items()}
    n = P.norm(u).item()
    return u if n <= rho else {k: t * (rho / n) for k, t in u.items()}


@records_settings
def m_sharpness(
    obj: Objective,
    rho: float = 0.05,
    *,
    norm: str = "l2",
    adaptive: bool = False,
    eta: float = 0.0,
    steps: int = 10,
    m: int = 128,
    batches: int = 8,
    seed: int = 0,
) -> Measurement:
    """The worst-case sharpness on each of ``batches`` disjoint random batches of ``m`` training
    samples, averaged (Foret et al. 2021's m-sharpness); ``error_bound`` is its standard error."""
    whole = obj.on(obj.data.tensors())  # the loader read once, not once per batch
    n = whole.n
    if not (isinstance(m, int) and 1 <= m <= n):
        raise ValueError(f"m must be an integer in [1, {n}] (got {m!r})")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    count = min(batches, n // m)
    values = []
    for b in range(count):
        part = whole.on(whole.data.select(order[b * m : (b + 1) * m]))
        part.batch_size = m
        values.append(
            worst_case_sharpness(
                part, rho, norm=norm, adaptive=adaptive, eta=eta, steps=steps, seed=seed + b
            ).value
        )
    stderr = float(np.std(values, ddof=1) / math.sqrt(count)) if count > 1 else math.nan
    return Measurement(float(np.mean(values)), {"batches_used": count}, {}, stderr)


@records_settings
def average_sharpness(
    obj: Objective,
    rho: float = 0.01,
    *,
    norm: str = "l2",
    adaptive: bool = False,
    eta: float = 0.0,
    samples: int = 20,
    seed: int = 0,
    subset: int | None = None,
) -> Measurement:
    """E_δ L(w + T⊙δ) − L(w) by Monte Carlo, δ ~ N(0, ρ²I) for ``norm="l2"`` or uniform in the box
    [−ρ, ρ]^d for ``"linf"`` (the two average-case models of Andriushchenko et al. 2023);
    ``error_bound`` is its standard error."""
    obj = obj.subset(subset)
    if not rho > 0:
        raise ValueError(f"rho must be > 0 (got {rho!r})")
    if norm not in ("l2", "linf"):
        raise ValueError(f"norm must be 'l2' or 'linf' (got {norm!r})")
    if not (isinstance(samples, int) and samples >= 2):
        raise ValueError(f"samples must be an integer >= 2 (got {samples!r})")
    T = _scale(obj, adaptive, eta)
    g = torch.Generator().manual_seed(seed)
    f0 = obj.value()
    rises = []
    for _ in range(samples):
        if norm == "l2":
            noise = {
                k: torch.randn(v.shape, generator=g, dtype=v.dtype).to(v.device)
                for k, v in obj.params.items()
            }
        else:
            noise = {
                k: (2 * torch.rand(v.shape, generator=g, dtype=v.dtype) - 1).to(v.device)
                for k, v in obj.params.items()
            }
        rises.append(obj.value({k: obj.params[k] + rho * T[k] * noise[k] for k in noise}) - f0)
    return Measurement(
        float(np.mean(rises)),
        {"n_samples": obj.n},
        {"loss": f0},
        float(np.std(rises, ddof=1) / math.sqrt(samples)),
    )


@records_settings
def pacbayes_sigma(
    obj: Objective,
    *,
    init: dict[str, torch.Tensor] | None = None,
    target_rise: float = 0.1,
    magnitude_aware: bool = False,
    epsilon: float = 1e-3,
    samples: int = 10,
    sigma_min: float = 1e-6,
    sigma_max: float = 1.0,
    rel_tol: float = 1e-2,
    max_iter: int = 40,
    seed: int = 0,
    subset: int | None = None,
) -> Measurement:
    """Largest σ whose Gaussian weight noise raises the training error by at most ``target_rise``.

    Plain noise is N(0, σ²) on every parameter; magnitude-aware noise is N(0, σ²w² + ε²). The noise
    draws z are fixed for the search (u = σ·z plain), so the rise is a deterministic function of σ.
    The value is σ; ``extra`` holds 1/σ² (Jiang et al.'s flatness measure) and, with ``init``, the
    PAC-Bayes bound term ‖w − w₀‖²/(4σ²) + log(m/σ) + 10.
    """
    obj = obj.subset(subset)
    model, data, batch_size = obj.model, obj.data, obj.batch_size
    if not 0 < target_rise < 1:
        raise ValueError(f"target_rise must be in (0, 1) (got {target_rise!r})")
    if not 0 < sigma_min < sigma_max:
        raise ValueError(f"need 0 < sigma_min < sigma_max (got {sigma_min!r}, {sigma_max!r})")
    if not (isinstance(samples, int) and samples >= 1):
        raise ValueError(f"samples must be an integer >= 1 (got {samples!r})")
    theta = dict(obj.params)
    g = torch.Generator().manual_seed(seed)
    draws = [
        {k: torch.randn(v.shape, generator=g, dtype=v.dtype).to(v.device) for k, v in theta.items()}
        for _ in range(samples)
    ]

    def error(params=None) -> float:
        at = evaluate(model, data, obj.loss_fn, batch_size=batch_size, params=params, mode=obj.mode)
        if at.accuracy is None:
            raise ValueError(f"pacbayes_sigma is defined by the training error: {at.accuracy_note}")
        return 1.0 - at.accuracy

    base_error = error()

    def rise(sigma: float) -> float:
        errors = []
        for z in draws:
            if magnitude_aware:
                noisy = {
                    k: theta[k] + z[k] * torch.sqrt(sigma**2 * theta[k] ** 2 + epsilon**2)
                    for k in theta
                }
            else:
                noisy = {k: theta[k] + sigma * z[k] for k in theta}
            errors.append(error({**obj.frozen, **noisy}))
        return float(np.mean(errors)) - base_error

    lo, hi = sigma_min, sigma_max
    r_lo, r_hi = rise(lo), rise(hi)
    status = "ok"
    if r_lo > target_rise:
        status, hi = "below sigma_min", lo
    elif r_hi <= target_rise:
        status, lo = "above sigma_max", hi
    iterations = 0
    while status == "ok" and hi / lo > 1 + rel_tol and iterations < max_iter:
        mid = math.sqrt(lo * hi)  # bisection in log σ
        if rise(mid) <= target_rise:
            lo = mid
        else:
            hi = mid
        iterations += 1
    sigma = lo
    extra = {
        "inverse_sigma_squared": 1.0 / sigma**2,
        "rise_at_sigma": rise(sigma),
        "sigma_upper": hi,
        "status": status,
        "iterations": iterations,
        "base_error": base_error,
    }
    if init is not None:
        dist2 = P.norm(P.sub(theta, {k: init[k].to(theta[k]) for k in theta})).item() ** 2
        extra["bound_term"] = dist2 / (4 * sigma**2) + math.log(obj.n / sigma) + 10
    # A search that hit its bound is no value (DESIGN: "reported as such"): flag it for every reader.
    extra["at_bound"] = status != "ok"
    return Measurement(sigma, {"n_samples": obj.n}, extra, hi - sigma)
