"""transform=rescale in the runner: metrics before and after on the same weights, equal errors,
refusal before training of what the transform cannot keep equal, and a tolerance that fails a run."""

from pathlib import Path

import pytest
import torch

from experiments.errors import ConfigError
from experiments.run import main
from tests.conftest import TINY


def test_rescale_records_metrics_before_and_after_with_equal_errors(make_cfg):
    result = main(make_cfg(*TINY, "transform=rescale", "transform.alpha=10"))
    t = result["transform"]
    assert result["status"] == "finished" and t["relative_logit_change"] < 1e-5
    assert t["before"]["test_error"] == result["test_error"]
    assert t["before"]["train_error"] == result["train_error"]
    lam_before, lam_after = (
        t["before"]["metrics"]["lambda_max"]["value"],
        result["metrics"]["lambda_max"]["value"],
    )
    assert lam_after > 5 * lam_before  # the same function, a much sharper minimum by this measure
    run_dir = Path(result["run_dir"])
    final = torch.load(run_dir / "final.pt", weights_only=True)
    transformed = torch.load(run_dir / "transformed.pt", weights_only=True)
    assert torch.allclose(transformed["1.weight"], 10 * final["1.weight"])
    assert torch.allclose(transformed["3.weight"], final["3.weight"] / 10)


def test_neuron_mode_runs_and_keeps_the_function(make_cfg):
    result = main(
        make_cfg(
            *TINY,
            "transform=rescale",
            "transform.mode=neuron",
            "transform.layers=[0]",
            "transform.alpha=5",
            "metrics=none",
        )
    )
    assert result["transform"]["relative_logit_change"] < 1e-5
    assert result["transform"]["before"]["test_loss"] == pytest.approx(
        result["test_loss"], rel=1e-5
    )


@pytest.mark.parametrize(
    "overrides, key",
    [
        (["transform.alpha=0"], "transform.alpha"),
        (["transform.layers=[0,2]"], "adjacent"),
        (["transform.mode=neuron"], "transform.layers"),
        (["model=resnet20", "model.width=2", "dataset.input_shape=[3,8,8]"], "BasicBlock"),
    ],
)
def test_bad_transforms_fail_before_training(make_cfg, tmp_path, overrides, key):
    with pytest.raises(ConfigError, match=key):
        main(make_cfg(*TINY, "transform=rescale", *overrides))
    assert not (tmp_path / "runs").exists()


def test_a_transform_beyond_tolerance_fails_the_run(make_cfg):
    result = main(
        make_cfg(
            *TINY,
            "transform=rescale",
            "transform.alpha=1000",
            "transform.tolerance=1e-12",
            "metrics=none",
        )
    )
    assert result["status"] == "failed" and "transform.tolerance" in result["error"]
