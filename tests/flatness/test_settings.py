"""Settings that can be seen (describe(name), help(), signatures), progress bars, and the package's
one version and contents."""

import csv
import inspect
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import flatness
from flatness import progress, registry
from flatness.surface import surface_1d, surface_2d

ROOT = Path(__file__).resolve().parents[2]
tomllib = pytest.importorskip("tomllib")  # Python 3.11+


def test_describe_a_measure_gives_every_setting_its_default_limits_and_meaning():
    for name, metric in flatness.REGISTRY.items():
        info = flatness.describe(name)
        assert set(info.settings) == set(metric.defaults), name
        for key, entry in info.settings.items():
            assert entry["default"] == metric.defaults[key]
            assert entry["meaning"], f"{name}.{key} says nothing about what it means"
            assert f"{key} = {metric.defaults[key]!r}" in str(info)
    with pytest.raises(KeyError, match="known metrics"):
        flatness.describe("no_such_metric")


def test_help_of_a_measure_ends_with_its_settings_and_rho_guidance_quotes_asam_and_the_audit():
    doc = inspect.getdoc(flatness.curvature.lambda_max)
    assert registry.SETTINGS_HEADING in doc and "precision = 'auto'" in doc
    wcs = flatness.describe("worst_case_sharpness")
    assert "ASAM" in wcs.settings["rho"]["meaning"] and "0.5" in wcs.settings["rho"]["meaning"]
    text = inspect.getdoc(flatness.sharpness.worst_case_sharpness)
    # the audit's numbers, as results/tables/audit.csv holds them
    with open(ROOT / "results" / "tables" / "audit.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["mode"] == "layer"]
    value = "value (original, unrescaled)"
    plain = [float(r[value]) for r in rows if r["metric"] == "worst_case_sharpness"]
    adaptive = [float(r[value]) for r in rows if r["metric"] == "adaptive_worst_case_sharpness"]
    assert len(plain) == len(adaptive) == 2
    for v in plain:
        assert f"{v:.2g}" in text
    for v in adaptive:
        assert f"{v:.4f}" in text
    assert all(float(r["spread"]) < 1 + 1e-6 for r in rows if r["metric"].startswith("adaptive_w"))


def test_hessian_methods_and_surfaces_show_their_settings_instead_of_hiding_them():
    sig = inspect.signature(flatness.Hessian.eigenvalues)
    assert sig.parameters["k"].default == 1  # the method's own
    assert sig.parameters["precision"].default == "auto"  # read from top_eigenvalues
    assert "memory" in inspect.signature(flatness.Hessian.density).parameters
    shared = {}
    for fn in (surface_1d, surface_2d):
        params = inspect.signature(fn).parameters
        assert not any(p.kind is p.VAR_KEYWORD for p in params.values()), fn.__name__
        for key in ("batch_size", "subset", "bn_policy", "engine", "precision", "progress"):
            shared.setdefault(key, params[key].default)
            assert params[key].default == shared[key], key


def tiny():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    return model, (torch.randn(20, 3), torch.randint(0, 2, (20,)))


def test_progress_bars_draw_when_asked_and_stay_quiet_otherwise(capsys):
    model, data = tiny()
    flatness.measure(model, data, metrics=["lambda_max"], progress=True)
    assert "lanczos" in capsys.readouterr().err
    flatness.measure(model, data, metrics=["lambda_max"], progress=False)
    surface_1d(model, data, points=3, progress=False)
    flatness.measure(model, data, metrics=["lambda_max"])  # auto: stderr is not a terminal here
    assert capsys.readouterr().err == ""
    surface_1d(model, data, points=3, progress=True)
    assert "surface" in capsys.readouterr().err
    with progress.setting(False):  # a block's setting reaches the calls inside that say "auto"
        flatness.Hessian(model, data).trace()
        flatness.measure(model, data, metrics=["lambda_max"])
        surface_1d(model, data, points=3)
    assert capsys.readouterr().err == ""
    with progress.setting(True):
        flatness.measure(model, data, metrics=["lambda_max"])
        assert "lanczos" in capsys.readouterr().err
        flatness.measure(model, data, metrics=["lambda_max"], progress=False)  # the call's own wins
        assert capsys.readouterr().err == ""
    with pytest.raises(ValueError, match="progress must be"):
        flatness.measure(model, data, metrics=["lambda_max"], progress="yes")


def test_precision_float64_is_a_setting_of_the_measures_and_agrees_with_float32():
    model, data = tiny()
    out = flatness.measure(
        model,
        data,
        metrics={
            "a": {"metric": "lambda_max"},
            "b": {"metric": "lambda_max", "precision": "float64"},
        },
    )
    assert out["a"].settings["precision"] == "auto" and out["a"].extra["basis_dtype"] == "float32"
    assert (
        out["b"].settings["precision"] == "float64" and out["b"].extra["basis_dtype"] == "float64"
    )
    assert out["a"].value == pytest.approx(out["b"].value, rel=1e-5)
    # a float64 model gets a float64 basis under "auto": its products would be wasted on float32
    wide = flatness.measure(model.double(), (data[0].double(), data[1]), metrics=["lambda_max"])
    assert wide["lambda_max"].extra["basis_dtype"] == "float64"
    with pytest.raises(ValueError, match="precision"):
        flatness.validate({"lambda_max": {"precision": "float16"}})


def test_the_distribution_holds_the_library_only_and_one_version():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert meta["tool"]["setuptools"]["packages"]["find"]["include"] == ["flatness*"]
    assert "version" in meta["project"]["dynamic"] and "version" not in meta["project"]
    assert meta["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "flatness.__version__"}
    assert re.fullmatch(r"\d+\.\d+\.\d+", flatness.__version__)


def test_loss_fn_is_still_passed_through_the_surfaces_explicit_settings():
    model, data = tiny()
    a = surface_1d(model, data, points=3, loss_fn=F.cross_entropy, progress=False)
    b = surface_1d(model, data, points=3, loss_fn=lambda o, y: 2 * F.cross_entropy(o, y),
                   progress=False)  # fmt: skip
    torch.testing.assert_close(torch.tensor(b.values["train_loss"]),
                               2 * torch.tensor(a.values["train_loss"]))  # fmt: skip
