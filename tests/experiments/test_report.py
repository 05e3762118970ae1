"""The report built from a tiny version of every sweep in a temporary directory: every figure file
exists and REPORT.md names every claim with a verdict."""

import itertools

from hydra import compose, initialize_config_dir

from experiments import aggregate, audit, report, run, wilson
from tests.conftest import CONF

TINY_DATA = [
    "dataset=synthetic",
    "dataset.num_samples_train=512",
    "dataset.num_samples_test=128",
    "epochs=2",
    "progress=false",
]
SWEEPS = {  # every sweep of conf/experiment, cut to a few tiny runs
    "batch_size": {
        "optimizer": ["sgd", "adam"],
        "batch_size": [32, 256],
        "lr_scaling": ["none"],
        "seed": [0, 1],
        "train_until_loss": ["null"],
    },
    "optimizer": {
        "optimizer": ["sgd", "momentum", "adam", "adamw", "sam", "asam"],
        "batch_size": [64, 256],
        "lr_factor": [1.0],
        "seed": [0],
        "metrics": ["none"],
    },
    "weight_decay": {
        "optimizer": ["momentum", "adam"],
        "batch_size": [64, 256],
        "weight_decay": [0.0, 5e-4],
        "metrics": ["none"],
    },
    "batchnorm": {
        "+bn_variant": ["small", "large", "large_ghost"],
        "seed": [0, 1],
        "batch_size": ["null"],
    },
    "correlation": {"lr": [0.01, 0.05], "batch_size": [64, 256], "model.width": [16, 32]},
}


def run_sweep(name, grid, common):
    keys = list(grid)
    for values in itertools.product(*(grid[k] for k in keys)):
        overrides = [f"{k}={v}" for k, v in zip(keys, values, strict=True) if v != "null"]
        if name == "batchnorm":  # the variants set the batch size; scale them to the tiny data
            overrides += ["model.ghost_batch_size=16"] if "large_ghost" in values else []
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose("config", overrides=[f"experiment={name}", *common, *overrides])
        if name == "batchnorm":
            cfg.batch_size = 32 if "small" in values else 256
        run.main(cfg)


def test_report_from_tiny_sweeps_has_every_figure_and_claim(tmp_path, data_dir):
    runs_dir, results = tmp_path / "runs", tmp_path / "results"
    common = [*TINY_DATA, f"runs_dir={runs_dir}", f"data_dir={data_dir}"]
    for name, grid in SWEEPS.items():
        run_sweep(name, grid, common)
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            "config",
            overrides=[*common, "name=pca", "surface=pca", "surface.points=5", "metrics=none"],
        )
    run.main(cfg)
    audit.main(
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
            str(results),
            *common,
        ]
    )
    wilson.main(["--n", "10", "--seeds", "2", "--steps", "200", "--out", str(results / "tables")])
    for name in SWEEPS:
        aggregate.aggregate(runs_dir / name, results / "tables", samples=50)
    path = report.build(results, runs_dir)
    for number, figure in report.FIGURES.items():
        assert (results / "figures" / figure).exists(), f"figure {number} missing: {figure}"
    text = path.read_text()
    for claim in (
        "Scale invariance",
        "SGD vs Adam",
        "Batch size",
        "Filter-normalised visualisation",
        "Wilson",
        "Batch norm",
        "Metrics against the generalisation gap",
    ):
        assert claim in text
    assert "not run" not in text
    assert text.count("**Verdict:") == 6


def test_protocol_verdicts_lead_the_report_when_they_exist(tmp_path):
    from experiments import report

    tables = tmp_path / "tables"
    assert report.protocol_verdicts(tables) == []
    tables.mkdir()
    (tables / "verdicts.md").write_text("| claim | verdict |\n|---|---|\n| batch size | partly |\n")
    lines = report.protocol_verdicts(tables)
    assert "## Verdicts at equal footing (conf/protocol)" in lines
    assert lines[-1].endswith("| batch size | partly |")
