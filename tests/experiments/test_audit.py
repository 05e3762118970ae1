"""The invariance audit end to end on a tiny configuration: tables and verdicts that follow from
the theory (test error invariant, λmax not, Fisher-Rao and path norm invariant), and the report's
figures drawn from those tables alone."""

import pandas as pd

from experiments.analyse import audit
from experiments.report import document as report


def test_audit_writes_tables_and_figures_with_the_expected_verdicts(tmp_path, data_dir):
    out = tmp_path / "results"
    judged = audit.main(
        [
            "--models",
            "mlp",
            "--alphas",
            "0.1",
            "1",
            "10",
            "--metrics",
            "default",
            "--out",
            str(out),
            f"runs_dir={tmp_path / 'runs'}",
            f"data_dir={data_dir}",
            "dataset=synthetic",
            "epochs=5",
            "max_steps=null",
            "train_until_loss=null",
            "model.width=16",
        ]
    )
    verdict = {(r.mode, r.metric): r.verdict for r in judged.itertuples()}
    for mode in ("layer", "neuron"):
        assert verdict[(mode, "test_error")] == "invariant"
        assert verdict[(mode, "lambda_max")].startswith("moves")
        assert verdict[(mode, "hessian_trace")].startswith("moves")
    table = pd.read_csv(out / "tables" / "audit.csv")
    assert {"ratio α=0.1", "ratio α=1", "ratio α=10", "verdict"} <= set(table.columns)
    layer_one = table[(table["mode"] == "layer") & (table["metric"] == "lambda_max")][
        "ratio α=1"
    ].item()
    assert abs(layer_one - 1) < 1e-3  # α = 1 in layer mode is the identity
    assert (out / "tables" / "audit.md").read_text().startswith("|")
    assert not (out / "figures").exists()  # tables in, tables out: the report draws
    report.build(out)
    for name in ("audit_mlp.png", "audit_mlp_slice.png"):
        assert (out / "figures" / name).read_bytes()[:4] == b"\x89PNG"
    # each figure with the CSV of what it draws: the ratios and verdicts of the table
    drawn = pd.read_csv(out / "figures" / "audit_mlp.csv")
    values = pd.read_csv(out / "tables" / "audit_values.csv")
    assert len(drawn) == (~values["at_bound"].astype(bool)).sum()
    judged = table.set_index(["mode", "metric"])["verdict"]
    assert all(
        judged[m, k] == v
        for m, k, v in zip(drawn["mode"], drawn["metric"], drawn["verdict"], strict=True)
    )
    slice_ = pd.read_csv(out / "figures" / "audit_mlp_slice.csv")
    assert slice_["curve"].nunique() == 3 and {"t", "train_loss"} <= set(slice_.columns)
    # Li et al.'s filter normalisation undoes a layer-wise rescaling exactly (each filter's
    # direction scales with the filter, ReLU is positively homogeneous), not a neuron-wise one
    saved = pd.read_csv(out / "tables" / "audit_slices.csv")
    curves = saved.pivot_table(index="t", columns="curve", values="train_loss")
    layer = curves["layer-wise α=10"] / curves["original"] - 1
    neuron = curves["neuron-wise α=10"] / curves["original"] - 1
    assert layer.abs().max() < 1e-4 and neuron.abs().max() > 0.01
    # --tables-only rebuilds the tables from the values, and the report the same figures from them
    for png in (out / "figures").glob("audit_mlp*"):
        png.unlink()
    audit.main(["--tables-only", "--out", str(out)])
    assert pd.read_csv(out / "tables" / "audit.csv").equals(table)
    report.build(out)
    assert pd.read_csv(out / "figures" / "audit_mlp_slice.csv").equals(slice_)


def test_invariant_norms_are_judged_invariant(tmp_path, data_dir):
    metrics = {"fisher_rao_norm": {"subset": None}, "path_norm": {}, "spectral_product": {}}
    cfg, model, data, init = audit.trained(
        "mlp",
        [
            f"runs_dir={tmp_path / 'runs'}",
            f"data_dir={data_dir}",
            "dataset=synthetic",
            "epochs=3",
            "max_steps=null",
            "train_until_loss=null",
            "progress=false",
        ],
    )
    rows = pd.DataFrame(
        audit.audit_model("mlp", model, data, init, metrics, [0.1, 10.0], ["layer", "neuron"], 512)
    )
    judged = audit.verdicts(rows, 1e-3)
    verdict = {(r.mode, r.metric): r.verdict for r in judged.itertuples()}
    for mode in ("layer", "neuron"):
        assert verdict[(mode, "fisher_rao_norm")] == "invariant"
        assert verdict[(mode, "path_norm")] == "invariant"
    assert verdict[("layer", "spectral_product")] == "invariant"  # ∏‖W‖² keeps the product of α²
    assert verdict[("neuron", "spectral_product")].startswith("changed")  # by the spread, not by α


def _rows(metric, ratios, at_bound=(), change=1e-7):
    return [
        {
            "model": "m",
            "mode": "layer",
            "alpha": alpha,
            "metric": metric,
            "value": 2.0 * r,
            "reference": 2.0,
            "at_bound": alpha in at_bound,
            "logit_change": change,
        }
        for alpha, r in zip((0.1, 1.0, 10.0), ratios, strict=True)
    ]


def test_the_rule_says_at_bound_and_never_shows_a_ratio_for_it(tmp_path):
    rows = pd.DataFrame(
        _rows("pacbayes_sigma", [1e-5, 1.0, 3.0], at_bound=(0.1,))
        + _rows("lambda_max", [100.0, 1.0, 0.01])
        + _rows("path_norm", [1.0, 1.0, 1.0 + 1e-4])
    )
    judged = audit.verdicts(rows, 1e-2)
    verdict = dict(zip(judged["metric"], judged["verdict"], strict=True))
    assert verdict == {
        "pacbayes_sigma": "at bound",
        "lambda_max": "moves ×1e+04",
        "path_norm": "invariant",
    }
    audit.write_tables(rows, judged, tmp_path)
    table = pd.read_csv(tmp_path / "audit.csv").set_index("metric")
    ratios = [c for c in table.columns if c.startswith(("ratio", "value"))]
    assert table.loc["pacbayes_sigma", ratios].isna().all()
    assert table.loc["lambda_max", "ratio α=0.1"] == 100.0


def test_a_changed_function_voids_every_verdict_of_the_model():
    rows = pd.DataFrame(_rows("path_norm", [1.0, 1.0, 1.0], change=1e-2))
    judged = audit.verdicts(rows, 1e-2, function_tol=1e-4)
    assert judged["verdict"].item().startswith("function changed")


def test_a_run_that_missed_its_criterion_is_refused(tmp_path, data_dir):
    import pytest

    from experiments.analyse.audit import AuditError

    args = [f"runs_dir={tmp_path / 'runs'}", f"data_dir={data_dir}", "dataset=synthetic"]
    args += ["epochs=null", "max_steps=3", "train_until_loss=1e-6", "model.width=8"]
    with pytest.raises(AuditError, match="not at its criterion"):
        audit.trained("mlp", ["progress=false", *args])
    out = tmp_path / "results"
    with pytest.raises(SystemExit) as stop:
        audit.main(["--run", str(next((tmp_path / "runs").glob("*/*"))), "--out", str(out)])
    assert stop.value.code == 2


def test_a_move_is_measured_from_the_original_not_only_across_alphas():
    # λmax of a two-layer ReLU net grows ~α² at α = 10 and ~1/α² at α = 0.1: ×100 at both
    rows = pd.DataFrame(_rows("lambda_max", [101.0, 1.0, 99.0]))
    rows = rows[rows["alpha"] != 1.0]
    judged = audit.verdicts(rows, 1e-2)
    assert judged["verdict"].item() == "moves ×101"
