"""Curvature against exact answers: a quadratic loss whose Hessian is known in closed form, and a tiny
MLP whose Hessian is computed densely by torch.autograd.functional.hessian."""

import numpy as np
import pytest
import scipy.linalg
import torch
import torch.nn.functional as F
from torch import nn

from flatness.hessian import hutchinson_trace, hutchpp_trace, lanczos, power_iteration, slq
from flatness.objective import Objective


def mse(out, y):
    return F.mse_loss(out, y)


@pytest.fixture
def regression():
    """Linear regression with MSE: H = (2/N) [X 1]ᵀ[X 1] exactly, for every parameter value."""
    torch.manual_seed(0)
    n, d = 64, 12
    x = torch.randn(n, d) * torch.linspace(0.2, 3.0, d)  # a spread-out spectrum
    y = torch.randn(n, 1)
    model = nn.Linear(d, 1)
    design = torch.cat([x, torch.ones(n, 1)], dim=1).double()  # parameter order: weight, then bias
    hessian = (2.0 / n) * design.T @ design
    return model, x, y, hessian.numpy()


def dense_hessian(model, x, y, loss_fn):
    names = [k for k, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    flat0 = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def f(flat):
        params, start = {}, 0
        for k, s in zip(names, shapes, strict=True):
            params[k] = flat[start : start + s.numel()].view(s)
            start += s.numel()
        return loss_fn(torch.func.functional_call(model, params, (x,)), y)

    return torch.autograd.functional.hessian(f, flat0).double().numpy()


def test_hvp_matches_dense_hessian_on_a_tiny_mlp_in_both_modes():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 3))
    x, y = torch.randn(37, 3), torch.randint(0, 3, (37,))
    H = dense_hessian(model, x, y, F.cross_entropy)
    obj = Objective(model, (x, y), batch_size=10)  # 37 samples: batches of 10, 10, 10, 7
    v = torch.randn(obj.dim, dtype=torch.float64)
    for mode in ("forward-over-reverse", "reverse-over-reverse"):
        hv = obj.flat_hvp(v, mode=mode).numpy()
        np.testing.assert_allclose(hv, H @ v.numpy(), rtol=1e-4, atol=1e-5)
    # The cached graphs (one per batch, built once) give the same products, again and again.
    for batch_size in (37, 10):
        cached = Objective(model, (x, y), batch_size=batch_size)
        for _ in range(2):
            np.testing.assert_allclose(
                cached.flat_hvp(v, mode="cached-graph").numpy(), H @ v.numpy(), rtol=1e-4, atol=1e-5
            )
        cached.flat_hvp(v)
        assert cached.hvp_mode == "cached-graph"  # auto took it: this tiny graph fits
    with pytest.raises(ValueError, match="own weights"):
        obj.hvp(obj.params, obj.params, "cached-graph")
    nocache = Objective(model, (x, y), batch_size=10, graph_memory=0)
    nocache.flat_hvp(v)
    assert nocache.hvp_mode == "forward-over-reverse"  # the graphs do not fit in 0 bytes


def test_lanczos_top_k_and_power_iteration_on_a_known_quadratic(regression):
    model, x, y, H = regression
    exact = np.sort(np.linalg.eigvalsh(H))[::-1]
    obj = Objective(model, (x, y), mse, batch_size=16)  # several batches: no cached graph
    res = lanczos(obj.flat_hvp, obj.dim, k=3, tol=1e-8, max_iter=obj.dim)
    np.testing.assert_allclose(res.eigenvalues, exact[:3], rtol=1e-5)
    # the residual bound holds: each true eigenvalue lies within it (plus float32 HVP noise)
    assert np.all(np.abs(res.eigenvalues - exact[:3]) <= res.residuals + 1e-5 * exact[0])
    # the eigenvectors are eigenvectors of the exact Hessian
    for lam, vec in zip(res.eigenvalues, res.eigenvectors.numpy(), strict=True):
        np.testing.assert_allclose(H @ vec, lam * vec, atol=1e-4 * exact[0])
    power = power_iteration(obj.flat_hvp, obj.dim, tol=1e-3, max_iter=100)
    assert power.eigenvalues[0] == pytest.approx(exact[0], rel=5e-2)


def test_lanczos_says_when_it_is_not_converged(regression):
    model, x, y, H = regression
    obj = Objective(model, (x, y), mse)
    res = lanczos(obj.flat_hvp, obj.dim, k=1, tol=1e-12, max_iter=2)
    assert not res.converged and res.products == 2
    exact = np.linalg.eigvalsh(H).max()
    assert abs(res.eigenvalues[0] - exact) <= res.residuals[0] * (1 + 1e-6)
    with pytest.raises(ValueError, match="k must be"):
        lanczos(obj.flat_hvp, obj.dim, k=obj.dim + 1, tol=1e-6, max_iter=100)


def test_hutchinson_stops_on_its_standard_error_and_is_right_about_it(regression):
    model, x, y, H = regression
    obj = Objective(model, (x, y), mse)
    exact = np.trace(H)
    res = hutchinson_trace(obj.flat_hvp, obj.dim, rtol=0.02, min_probes=30, max_probes=1000, seed=3)
    assert res.stderr <= 0.02 * abs(res.trace) or res.products == 1000
    assert abs(res.trace - exact) <= 4 * res.stderr  # 4 standard errors: fails with p < 1e-4
    pp = hutchpp_trace(obj.flat_hvp, obj.dim, products=39)  # 13 dims: the sketch captures all
    assert pp.trace == pytest.approx(exact, rel=1e-4)


def test_slq_density_integrates_to_one_and_its_mean_is_trace_over_n(regression):
    model, x, y, H = regression
    obj = Objective(model, (x, y), mse)
    esd = slq(obj.flat_hvp, obj.dim, vectors=8, steps=13, seed=0)
    np.testing.assert_allclose(esd.weights.sum(axis=1), 1.0, atol=1e-8)
    eig = np.linalg.eigvalsh(H)
    grid = np.linspace(eig.min() - 1, eig.max() + 1, 4001)
    assert np.trapezoid(esd.density(grid), grid) == pytest.approx(1.0, abs=1e-3)
    # With 13 Lanczos steps on a 13-dimensional problem the quadrature is exact: nodes = eigenvalues.
    np.testing.assert_allclose(np.sort(esd.nodes[0]), eig, rtol=1e-5, atol=1e-6)
    # First moment: Σ w θ = qᵀHq for each unit start vector q; averaged, an estimate of tr(H)/n.
    assert esd.mean() == pytest.approx(np.trace(H) / len(H), rel=0.25)


def test_objective_is_exact_over_batches_and_leaves_the_model_alone():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 2))
    model.train()
    x, y = torch.randn(50, 4), torch.randint(0, 2, (50,))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    a = Objective(model, (x, y), batch_size=7)
    b = Objective(model, (x, y), batch_size=50)
    va, ga = a.value_and_grad()
    vb, gb = b.value_and_grad()
    assert va == pytest.approx(vb, rel=1e-6)
    assert all(torch.allclose(ga[k], gb[k], atol=1e-6) for k in ga)
    assert model.training and all(torch.equal(before[k], model.state_dict()[k]) for k in before)


class SquaredErrorWithoutForwardMode(torch.autograd.Function):
    """(out − y)² mean with a (twice differentiable) backward but no forward-mode rule."""

    @staticmethod
    def forward(out, y):
        return ((out - y) ** 2).mean()

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs)

    @staticmethod
    def backward(ctx, grad):
        out, y = ctx.saved_tensors
        return grad * 2 * (out - y) / out.numel(), None


def test_auto_falls_back_to_double_backward_without_forward_mode(regression):
    model, x, y, H = regression
    obj = Objective(
        model, (x, y), SquaredErrorWithoutForwardMode.apply, batch_size=16, graph_memory=0
    )
    v = torch.randn(obj.dim, dtype=torch.float64)
    hv = obj.flat_hvp(v)
    assert obj.hvp_mode == "reverse-over-reverse"
    np.testing.assert_allclose(hv.numpy(), H @ v.numpy(), rtol=1e-4, atol=1e-5)


def test_out_of_memory_in_hessian_vector_products_halves_the_batch(regression, monkeypatch):
    """Inject an out-of-memory error for batches above 16 samples: the product comes out the same."""
    model, x, y, H = regression
    obj = Objective(model, (x, y), mse, batch_size=64)
    real = obj._batch_loss

    def limited(params, xb, yb):
        if len(xb) > 16:
            raise torch.OutOfMemoryError("injected: CUDA out of memory")
        return real(params, xb, yb)

    monkeypatch.setattr(obj, "_batch_loss", limited)
    v = torch.randn(obj.dim, dtype=torch.float64)
    hv = obj.flat_hvp(v)
    assert obj.batch_size == 16
    np.testing.assert_allclose(hv.numpy(), H @ v.numpy(), rtol=1e-4, atol=1e-5)
    assert obj.value() == pytest.approx(mse(model(x), y).item(), rel=1e-5)


def test_a_cached_graph_survives_a_measurement_that_restores_batch_norm_buffers():
    """measure() puts the model's buffers back in place; a Hessian built before must not break."""
    import flatness

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    x, y = torch.randn(64, 4), torch.randint(0, 3, (64,))
    model.train()
    model(x)  # non-trivial running statistics
    model.eval()
    hessian = flatness.Hessian(model, (x, y))
    first = hessian.eigenvalues(2).value
    flatness.measure(model, (x, y), metrics=["lambda_max"])
    assert hessian.eigenvalues(2).value == pytest.approx(first, rel=1e-6)


# --- the basis: float32 by default, float64 as before, memory-capped SLQ ---------------------------


def _old_lanczos_values(matvec, n, steps, seed):
    """The Lanczos recurrence of flatness 0.2 (a list of float64 vectors stacked at every step,
    reorthogonalised twice), written out independently: the α and β it produces."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(n, generator=g, dtype=torch.float64)
    basis, alphas, betas = [q / q.norm()], [], []
    for _ in range(steps):
        w = matvec(basis[-1]).to(torch.float64)
        alpha = torch.dot(w, basis[-1]).item()
        w = w - alpha * basis[-1] - (betas[-1] * basis[-2] if betas else 0.0)
        Q = torch.stack(basis)
        for _ in range(2):
            w = w - Q.T @ (Q @ w)
        alphas.append(alpha)
        betas.append(w.norm().item())
        basis.append(w / betas[-1])
    return alphas, betas[:-1]


def spread_matrix(n=40, seed=0):
    """A symmetric matrix with a known, spread spectrum (1 .. 100, log-spaced) and a gap at the top."""
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    eig = torch.logspace(0, 2, n, dtype=torch.float64)
    return (Q * eig) @ Q.T, eig.flip(0).numpy()


def test_float64_precision_reproduces_the_old_recurrence_bit_for_bit():
    A, _ = spread_matrix()
    matvec = lambda v: (A.float() @ v.float()).to(v.dtype)  # noqa: E731  (float32 products, as a model's)
    steps = 25  # past the basis's first doubling (16 rows)
    alphas, betas = _old_lanczos_values(matvec, 40, steps, seed=3)
    res = lanczos(matvec, 40, 1, tol=1e-300, max_iter=steps, seed=3, precision="float64")
    theta = np.sort(scipy.linalg.eigh_tridiagonal(np.array(alphas), np.array(betas))[0])[::-1]
    assert res.products == steps and res.eigenvalues[0] == theta[0]  # bit for bit, not approx


def test_float32_basis_finds_the_top_eigenvalues_past_its_growth_and_keeps_the_bound():
    A, exact = spread_matrix()
    res = lanczos(lambda v: A.to(v.dtype) @ v, 40, 3, tol=1e-5, max_iter=40, seed=1)
    assert res.settings["precision"] == "float32" and res.eigenvectors.dtype == torch.float32
    np.testing.assert_allclose(res.eigenvalues, exact[:3], rtol=1e-5)
    assert np.all(np.abs(res.eigenvalues - exact[:3]) <= res.residuals + 1e-5 * exact[0])
    V = res.eigenvectors.double()
    np.testing.assert_allclose((V @ V.T).numpy(), np.eye(3), atol=1e-5)  # still orthonormal
    with pytest.raises(ValueError, match="precision must be one of"):
        lanczos(lambda v: A.to(v.dtype) @ v, 40, 1, tol=1e-3, max_iter=5, precision="half")


def test_slq_within_a_memory_cap_keeps_a_window_and_still_integrates_the_spectrum():
    A, exact = spread_matrix()
    matvec = lambda v: A.to(v.dtype) @ v  # noqa: E731
    full = slq(matvec, 40, vectors=4, steps=30, seed=0, memory=None)
    # 8 vectors of 40 float32 entries: a cap of 1,280 bytes
    capped = slq(matvec, 40, vectors=4, steps=30, seed=0, memory=8 * 40 * 4 / 2**30)
    assert full.settings["window"] == 30 and capped.settings["window"] == 8
    np.testing.assert_allclose(capped.weights.sum(axis=1), 1.0, atol=1e-5)
    # the first moment is qᵀAq for each start vector q, whatever the reorthogonalisation
    np.testing.assert_allclose(capped.mean(), full.mean(), rtol=1e-5)
    assert capped.nodes.max() == pytest.approx(exact[0], rel=1e-4)  # extreme nodes converge
    assert capped.nodes.min() == pytest.approx(exact[-1], rel=1e-2)  # the clustered end, slower


# --- curvature of a part of the model -----------------------------------------------------------


def test_hessian_of_a_chosen_layer_is_the_block_of_the_dense_hessian():
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 3))
    x, y = torch.randn(40, 3), torch.randint(0, 3, (40,))
    H = dense_hessian(model, x, y, F.cross_entropy)  # order: 0.weight, 0.bias, 2.weight, 2.bias
    sizes = [p.numel() for p in model.parameters()]
    start = sizes[0] + sizes[1]
    block = H[start:, start:]  # the last layer's weight and bias
    from flatness import Hessian

    for choice in (model[2], ["2.weight", "2.bias"], [model[2]]):
        h = Hessian(model, (x, y), params=choice, progress=False)
        assert h.objective.dim == block.shape[0]
        top = h.eigenvalues(2, tol=1e-6)
        np.testing.assert_allclose(
            top.value, np.sort(np.linalg.eigvalsh(block))[::-1][:2], rtol=1e-4
        )
        assert top.settings["params"] == ["2.weight", "2.bias"]
    weight_only = Hessian(model, (x, y), params="0.weight", progress=False)
    w = sizes[0]
    exact = np.trace(H[:w, :w])
    assert weight_only.trace("hutch++", products=3 * w).value == pytest.approx(exact, rel=1e-4)
    with pytest.raises(ValueError, match="not a trainable parameter"):
        Hessian(model, (x, y), params="0.weights")
    with pytest.raises(ValueError, match="not a submodule"):
        Hessian(model, (x, y), params=nn.Linear(2, 2))
    with pytest.raises(ValueError, match="no trainable parameter"):
        Hessian(model, (x, y), params=model[1])  # Tanh has none
