"""The invariance audit end to end on a tiny configuration: tables, figures and verdicts that
follow from the theory (test error invariant, λmax not, Fisher-Rao and path norm invariant)."""

import pandas as pd

from experiments import audit


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
    for name in ("audit_mlp.png", "audit_mlp_slice.png"):
        assert (out / "figures" / name).read_bytes()[:4] == b"\x89PNG"


def test_invariant_norms_are_judged_invariant(tmp_path, data_dir):
    metrics = {"fisher_rao_norm": {"subset": None}, "path_norm": {}, "spectral_product": {}}
    cfg, model, data, init = audit.trained(
        "mlp",
        [
            f"runs_dir={tmp_path / 'runs'}",
            f"data_dir={data_dir}",
            "dataset=synthetic",
            "epochs=3",
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
