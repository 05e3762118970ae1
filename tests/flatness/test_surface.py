import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from flatness import params as P
from flatness.directions import random_direction
from flatness.evaluate import evaluate
from flatness.plot import plot_1d, plot_2d, save_figure
from flatness.surface import Surface, interpolate, surface_1d, surface_2d


def mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))


def cnn_bn(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 5 * 5, 3),
    )


def data(shape, n=60, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *shape, generator=g), torch.randint(0, 3, (n,), generator=g)


def state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("make, shape", [(mlp, (6,)), (cnn_bn, (1, 5, 5))])
def test_batched_and_per_point_engines_agree_and_leave_the_model_untouched(make, shape):
    model = make()
    model.train()  # measurements use eval mode and must give the mode back
    before = state(model)
    train, test = data(shape), data(shape, seed=1)
    loop = surface_2d(model, train, test, x_points=4, y_points=3, engine="loop")
    batched = surface_2d(model, train, test, x_points=4, y_points=3, engine="vmap", chunk_size=5)
    for k in loop.values:
        np.testing.assert_allclose(loop.values[k], batched.values[k], rtol=1e-5, atol=1e-6)
    assert model.training
    after = state(model)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_non_square_grid_lands_in_ij_orientation():
    model = mlp()
    train = data((6,))
    g = torch.Generator().manual_seed(3)
    dirs = [random_direction(model, generator=g) for _ in range(2)]
    surf = surface_2d(
        model, train, directions=dirs, x_span=(-1, 1), y_span=(-2, 0.5), x_points=5, y_points=3
    )
    assert surf.values["train_loss"].shape == (5, 3)
    theta = P.named_params(model)
    for i, j in ((4, 0), (1, 2)):  # off the diagonal: (x, y) = (1, -2) and (-0.5, 0.5)
        point = P.axpy(surf.coords[1][j], dirs[1], P.axpy(surf.coords[0][i], dirs[0], theta))
        direct = evaluate(model, train, params=point).loss
        assert surf.values["train_loss"][i, j] == pytest.approx(direct, rel=1e-6)
    assert surf.coords[0][4] == 1.0 and surf.coords[1][0] == -2.0


def test_surface_1d_centre_is_the_model_and_the_ends_move():
    model = mlp()
    train = data((6,))
    surf = surface_1d(model, train, points=5)
    assert surf.values["train_loss"][2] == pytest.approx(evaluate(model, train).loss, rel=1e-6)
    assert surf.settings["normalization"] == "filter" and surf.settings["n_train"] == 60


def test_interpolation_end_points_equal_the_two_models_with_bn():
    a, b = cnn_bn(0), cnn_bn(1)
    train = data((1, 5, 5))
    for m in (a, b):  # give the BN layers distinct running statistics
        m.train()
        m(train[0])
    before = state(a)
    surf = interpolate(a, b, train, ts=[-0.5, 0.0, 0.5, 1.0])
    assert surf.values["train_loss"][1] == pytest.approx(evaluate(a, train).loss, rel=1e-6)
    assert surf.values["train_loss"][3] == pytest.approx(evaluate(b, train).loss, rel=1e-6)
    assert all(torch.equal(before[k], a.state_dict()[k]) for k in before)
    recomputed = interpolate(a, b, train, ts=[0.5], bn_policy="recompute")
    assert recomputed.settings["bn_policy"] == "recompute"
    assert recomputed.values["train_loss"][0] != pytest.approx(
        surf.values["train_loss"][2], rel=1e-6
    )


def test_recompute_policy_uses_fresh_statistics_at_each_point():
    model = cnn_bn()
    train = data((1, 5, 5))
    before = state(model)
    surf = surface_1d(model, train, points=3, bn_policy="recompute", bn_samples=60)
    # At α = 0 the statistics are the exact mean/variance of the data, so eval equals train-mode BN.
    model.train()
    with torch.no_grad():
        batch_stats_loss = F.cross_entropy(model(train[0]), train[1]).item()
    model.load_state_dict(before)
    assert surf.values["train_loss"][1] == pytest.approx(batch_stats_loss, rel=1e-4)
    assert all(torch.equal(before[k], model.state_dict()[k]) for k in before)


def test_subset_bad_settings_and_save_load_round_trip(tmp_path):
    model = mlp()
    train, test = data((6,)), data((6,), seed=1)
    surf = surface_2d(model, train, test, x_points=3, y_points=2, subset=10)
    assert surf.settings["n_train"] == 10 and surf.settings["subset"] == 10
    surf.save(tmp_path / "s")
    back = Surface.load(tmp_path / "s")
    assert back.settings == surf.settings
    assert all(np.array_equal(a, b) for a, b in zip(back.coords, surf.coords, strict=True))
    assert all(np.array_equal(back.values[k], surf.values[k]) for k in surf.values)
    with pytest.raises(ValueError, match="resolution"):
        surface_1d(model, train, points=1)
    with pytest.raises(ValueError, match="min < max"):
        surface_1d(model, train, span=(1, -1))
    with pytest.raises(ValueError, match="engine"):
        surface_1d(model, train, engine="gpu")


def test_plots_write_pngs(tmp_path):
    model = mlp()
    train, test = data((6,)), data((6,), seed=1)
    line = surface_1d(model, train, test, points=5)
    plane = surface_2d(model, train, x_points=4, y_points=3)
    paths = [save_figure(plot_1d({"a": line, "b": line}), tmp_path / "line.png")]
    for kind in ("contour", "filled", "heatmap", "3d"):
        traj = np.array([[0.5, 0.5], [0.0, 0.0]]) if kind == "contour" else None
        paths.append(
            save_figure(plot_2d(plane, kind=kind, trajectory=traj), tmp_path / f"{kind}.png")
        )
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="kind"):
        plot_2d(plane, kind="pie")


def test_plane_through_three_models_passes_through_each():
    from flatness.directions import plane_through

    a, b, c = mlp(0), mlp(1), mlp(2)
    train = data((6,))
    surf = surface_2d(
        a,
        train,
        directions=plane_through(a, b, c),
        x_span=(0, 1),
        y_span=(0, 1),
        x_points=2,
        y_points=2,
    )
    assert surf.values["train_loss"][0, 0] == pytest.approx(evaluate(a, train).loss, rel=1e-5)
    assert surf.values["train_loss"][1, 0] == pytest.approx(evaluate(b, train).loss, rel=1e-5)
    assert surf.values["train_loss"][0, 1] == pytest.approx(evaluate(c, train).loss, rel=1e-5)


def test_out_of_memory_halves_the_chunk_and_finishes(monkeypatch):
    """Inject an out-of-memory error into the batched forward for chunks above 3 points."""
    import importlib

    S = importlib.import_module("flatness.evaluate")  # the module, not the function of that name

    real_vmap = S.vmap

    def vmap_that_runs_out_of_memory(fn, in_dims):
        batched = real_vmap(fn, in_dims=in_dims)

        def call(stacked, xb, yb):
            if stacked[0].shape[0] > 3:
                raise torch.OutOfMemoryError("injected: CUDA out of memory")
            return batched(stacked, xb, yb)

        return call

    model = mlp()
    train = data((6,))
    reference = surface_2d(model, train, x_points=4, y_points=4, engine="loop")
    monkeypatch.setattr(S, "vmap", vmap_that_runs_out_of_memory)
    surf = surface_2d(model, train, x_points=4, y_points=4, engine="vmap", chunk_size=16)
    assert surf.settings["chunk_size"] == 2  # 16 → 8 → 4 → 2
    np.testing.assert_allclose(surf.values["train_loss"], reference.values["train_loss"], rtol=1e-5)


def test_bf16_forward_is_close_to_fp32_and_recorded():
    model = mlp()
    train = data((6,))
    fp32 = surface_1d(model, train, points=5)
    bf16 = surface_1d(model, train, points=5, precision="bf16")
    assert bf16.settings["precision"] == "bf16"
    np.testing.assert_allclose(bf16.values["train_loss"], fp32.values["train_loss"], rtol=2e-2)
    assert not np.array_equal(bf16.values["train_loss"], fp32.values["train_loss"])
    with pytest.raises(ValueError, match="precision"):
        surface_1d(model, train, points=5, precision="fp8")
