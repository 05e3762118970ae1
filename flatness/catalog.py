"""The catalogue of registered metrics: names, defaults and one-line definitions.

Each entry adapts a function of :mod:`flatness.norms`, :mod:`flatness.hessian` or
:mod:`flatness.sharpness` to the registry's calling convention ``fn(ctx, **settings)``. Curvature and
sharpness use the training loss without a weight-decay term, in eval mode, on the whole training set
unless ``subset`` names the first N samples.
"""

from __future__ import annotations

from flatness import hessian, norms, sharpness
from flatness.metrics import MetricContext, register

# --- loss, accuracy and the generalisation gap -------------------------------------------------


def _register_split_metrics(split: str) -> None:
    @register(f"{split}_loss", description=f"mean loss on the {split} set (eval mode)")
    def _loss(ctx: MetricContext) -> float:
        return ctx.evaluation(split).loss

    @register(f"{split}_acc", description=f"classification accuracy on the {split} set")
    def _acc(ctx: MetricContext) -> float:
        return _require_accuracy(ctx.evaluation(split).accuracy)

    @register(
        f"{split}_error", description=f"classification error (1 − accuracy) on the {split} set"
    )
    def _error(ctx: MetricContext) -> float:
        return 1.0 - _require_accuracy(ctx.evaluation(split).accuracy)


def _require_accuracy(accuracy: float | None) -> float:
    if accuracy is None:
        raise ValueError("accuracy needs integer class labels as targets")
    return accuracy


_register_split_metrics("train")
_register_split_metrics("test")


@register("gap", description="generalisation gap: test error − train error")
def _gap(ctx: MetricContext) -> float:
    train, test = ctx.evaluation("train"), ctx.evaluation("test")
    return _require_accuracy(train.accuracy) - _require_accuracy(test.accuracy)


@register("gap_loss", description="loss gap: test loss − train loss")
def _gap_loss(ctx: MetricContext) -> float:
    return ctx.evaluation("test").loss - ctx.evaluation("train").loss


# --- norm baselines ------------------------------------------------------------------------------


@register(
    "param_norm",
    description="Euclidean norm of all trainable parameters",
    reference="Jiang et al. 2020 (norm baselines)",
)
def _param_norm(ctx: MetricContext) -> float:
    return norms.param_norm(ctx.model)


@register(
    "distance_from_init",
    description="Euclidean distance of the parameters from their initial values",
    reference="Nagarajan & Kolter 2019; Jiang et al. 2020",
)
def _distance_from_init(ctx: MetricContext) -> float:
    if ctx.init is None:
        raise ValueError("distance_from_init needs the initial weights: pass init=")
    return norms.distance_from_init(ctx.model, ctx.init)


@register("param_count", description="number of trainable parameters")
def _param_count(ctx: MetricContext) -> float:
    return norms.param_count(ctx.model)


@register(
    "fisher_rao_norm",
    description="sqrt(E⟨θ, ∇θ ℓ_i⟩²) over training samples, eval mode",
    reference="Liang et al. 2019",
    subset=None,
)
def _fisher_rao(ctx: MetricContext, subset: int | None) -> float:
    x, y = ctx.train
    return norms.fisher_rao_norm(ctx.model, x[:subset], y[:subset], batch_size=ctx.batch_size)


@register("frobenius_sum", description="Σ_layers ‖W‖_F²", reference="Jiang et al. 2020")
def _frobenius_sum(ctx: MetricContext) -> float:
    return norms.frobenius_sum(ctx.model)


@register("frobenius_product", description="Π_layers ‖W‖_F²", reference="Jiang et al. 2020")
def _frobenius_product(ctx: MetricContext) -> float:
    return norms.frobenius_product(ctx.model)


@register(
    "spectral_product",
    description="Π_layers ‖W‖₂² (conv kernels as out×(in·k·k) matrices)",
    reference="Bartlett et al. 2017; Jiang et al. 2020",
)
def _spectral_product(ctx: MetricContext) -> float:
    return norms.spectral_product(ctx.model)


@register(
    "path_norm",
    description="ℓ2 path norm: sqrt of the outputs of the squared-weight network on an input of ones",
    reference="Neyshabur et al. 2015; Jiang et al. 2020",
)
def _path_norm(ctx: MetricContext) -> float:
    return norms.path_norm(ctx.model, tuple(ctx.train[0].shape[1:]))


# --- curvature -----------------------------------------------------------------------------------


def _hessian_extra(obj, res) -> dict:
    return {"products": res.products, "converged": bool(res.converged), "hvp_mode": obj.hvp_mode}


@register(
    "lambda_max",
    description="largest Hessian eigenvalue of the training loss (Lanczos, residual error bound)",
    reference="Keskar et al. 2017; Ghorbani et al. 2019",
    tol=1e-4,
    bound="residual",
    max_iter=100,
    seed=0,
    subset=None,
)
def _lambda_max(
    ctx: MetricContext, tol: float, bound: str, max_iter: int, seed: int, subset: int | None
):
    obj = ctx.objective(subset)
    res = hessian.lanczos(
        obj.flat_hvp, obj.dim, k=1, tol=tol, bound=bound, max_iter=max_iter, seed=seed
    )
    bounds = {"error_bound": float(res.residuals[0]), "error_estimate": float(res.gap_estimates[0])}
    return res.eigenvalues[0], {**bounds, **_hessian_extra(obj, res)}


@register(
    "hessian_top_k",
    description="the k-th largest Hessian eigenvalue; all k in extra.eigenvalues (Lanczos)",
    k=5,
    tol=1e-4,
    max_iter=200,
    seed=0,
    subset=None,
)
def _top_k(ctx: MetricContext, k: int, tol: float, max_iter: int, seed: int, subset: int | None):
    obj = ctx.objective(subset)
    res = hessian.lanczos(obj.flat_hvp, obj.dim, k=k, tol=tol, max_iter=max_iter, seed=seed)
    extra = {"eigenvalues": res.eigenvalues.tolist(), "error_bounds": res.residuals.tolist()}
    return res.eigenvalues[-1], {**extra, **_hessian_extra(obj, res)}


@register(
    "hessian_trace",
    description="Hessian trace by Hutchinson (Rademacher), stopped on its standard error",
    reference="Hutchinson 1989; Yao et al. 2020",
    rtol=0.05,
    min_probes=30,
    max_probes=200,
    seed=0,
    subset=None,
)
def _trace(ctx: MetricContext, rtol, min_probes, max_probes, seed, subset):
    obj = ctx.objective(subset)
    res = hessian.hutchinson_trace(
        obj.flat_hvp, obj.dim, rtol=rtol, min_probes=min_probes, max_probes=max_probes, seed=seed
    )
    return res.trace, {"stderr": res.stderr, "products": res.products}


@register(
    "hessian_trace_hutchpp",
    description="Hessian trace by Hutch++ (low-rank part exact, residual by Hutchinson)",
    reference="Meyer et al. 2021",
    products=90,
    seed=0,
    subset=None,
)
def _trace_pp(ctx: MetricContext, products, seed, subset):
    obj = ctx.objective(subset)
    res = hessian.hutchpp_trace(obj.flat_hvp, obj.dim, products=products, seed=seed)
    return res.trace, {"stderr": res.stderr, "products": res.products}


@register(
    "hessian_esd",
    description="eigenvalue spectral density by SLQ; value = its mean (≈ trace / parameter count)",
    reference="Ubaru et al. 2017; Ghorbani et al. 2019",
    vectors=3,
    steps=60,
    seed=0,
    subset=None,
)
def _esd(ctx: MetricContext, vectors, steps, seed, subset):
    obj = ctx.objective(subset)
    esd = hessian.spectral_density(obj.flat_hvp, obj.dim, vectors=vectors, steps=steps, seed=seed)
    return esd.mean(), {"nodes": esd.nodes.tolist(), "weights": esd.weights.tolist()}


# --- sharpness -----------------------------------------------------------------------------------


@register(
    "keskar_sharpness",
    description="max loss rise in the box |y| ≤ ε(|x|+1), /(1+f(x)) ×100 (L-BFGS-B, 10 iterations)",
    reference="Keskar et al. 2017, Metric 2.1",
    epsilon=1e-3,
    subspace_dim=None,
    method="lbfgsb",
    max_iter=10,
    seed=0,
    subset=None,
)
def _keskar(ctx: MetricContext, epsilon, subspace_dim, method, max_iter, seed, subset):
    res = sharpness.keskar_sharpness(
        ctx.objective(subset),
        epsilon,
        subspace_dim=subspace_dim,
        method=method,
        max_iter=max_iter,
        seed=seed,
    )
    return res.value, res.extra


def _sharpness_settings(rho: float, **more):
    return {"rho": rho, "adaptive": False, "eta": 0.0, **more}


@register(
    "worst_case_sharpness",
    description="max over ‖δ‖ ≤ ρ (ℓ2 or ℓ∞, δ scaled by |w|+η if adaptive) of L(w+δ) − L(w)",
    reference="Foret et al. 2021; Kwon et al. 2021; Andriushchenko et al. 2023",
    **_sharpness_settings(0.05, norm="l2", steps=20, seed=0, subset=None),
)
def _worst(ctx: MetricContext, rho, adaptive, eta, norm, steps, seed, subset):
    res = sharpness.worst_case_sharpness(
        ctx.objective(subset), rho, norm=norm, adaptive=adaptive, eta=eta, steps=steps, seed=seed
    )
    return res.value, res.extra


@register(
    "m_sharpness",
    description="worst-case sharpness on batches of m samples, averaged",
    reference="Foret et al. 2021; Andriushchenko et al. 2023",
    **_sharpness_settings(0.05, norm="l2", steps=10, m=128, batches=8, seed=0),
)
def _m_sharp(ctx: MetricContext, rho, adaptive, eta, norm, steps, m, batches, seed):
    x, y = ctx.train
    res = sharpness.m_sharpness(
        ctx.model,
        x,
        y,
        ctx.loss_fn,
        m=m,
        batches=batches,
        seed=seed,
        rho=rho,
        norm=norm,
        adaptive=adaptive,
        eta=eta,
        steps=steps,
    )
    return res.value, res.extra


@register(
    "average_sharpness",
    description="E L(w+δ) − L(w), δ ~ N(0, ρ²) (scaled by |w|+η if adaptive), Monte Carlo",
    reference="Andriushchenko et al. 2023; Jiang et al. 2020",
    **_sharpness_settings(0.01, samples=20, seed=0, subset=None),
)
def _average(ctx: MetricContext, rho, adaptive, eta, samples, seed, subset):
    res = sharpness.average_sharpness(
        ctx.objective(subset), rho, adaptive=adaptive, eta=eta, samples=samples, seed=seed
    )
    return res.value, res.extra


@register(
    "pacbayes_sigma",
    description="largest σ with train-error rise ≤ target under N(0, σ²) weight noise; 1/σ² in extra",
    reference="Jiang et al. 2020, §C.2",
    target_rise=0.1,
    magnitude_aware=False,
    epsilon=1e-3,
    samples=10,
    sigma_min=1e-6,
    sigma_max=1.0,
    rel_tol=1e-2,
    seed=0,
    subset=None,
)
def _pacbayes(ctx: MetricContext, subset, **settings):
    x, y = ctx.train
    res = sharpness.pacbayes_sigma(
        ctx.model, x[:subset], y[:subset], init=ctx.init, batch_size=ctx.batch_size, **settings
    )
    return res.value, res.extra
