"""Bad metric, surface and transform settings: one line naming the key, before training, nothing
written."""

import pytest

from experiments.errors import ConfigError
from experiments.run import main
from tests.conftest import TINY

CASES = [
    (["metrics.keskar_sharpness.epsilon=0"], "metrics.keskar_sharpness.epsilon"),
    (["+metrics.worst_case_sharpness.rho=0"], "metrics.worst_case_sharpness.rho"),
    (["+metrics.worst_case_sharpness.norm=l3"], "metrics.worst_case_sharpness.norm"),
    (["+metrics.pacbayes_sigma.sigma_min=2.0"], "metrics.pacbayes_sigma.sigma_min"),
    (["+metrics.hessian_top_k.k=100000"], "metrics.hessian_top_k.k"),
    (["metrics.lambda_max.tol=-1"], "metrics.lambda_max.tol"),
    (["metrics.hessian_trace.min_probes=500"], "metrics.hessian_trace.min_probes"),
    (["+metrics.no_such_metric={}"], "metrics.no_such_metric"),
    (["surface=2d", "surface.points=1"], "surface.points"),
    (["surface=2d", "surface.x_span=[1,1]"], "surface.x_span"),
    (["surface=1d", "surface.normalization=unit"], "surface.normalization"),
    (["transform=rescale", "transform.alpha=-2"], "transform.alpha"),
    (["train_until_loss=-0.1"], "train_until_loss"),
]


@pytest.mark.parametrize("overrides, key", CASES)
def test_bad_settings_fail_before_training(make_cfg, tmp_path, overrides, key):
    with pytest.raises(ConfigError) as err:
        main(make_cfg(*TINY, *overrides))
    message = str(err.value)
    assert key in message and "\n" not in message
    assert not (tmp_path / "runs").exists()


def test_checkpoints_never_execute_pickled_code(tmp_path):
    """torch.load(weights_only=True) refuses a pickle that would run code."""
    import pickle

    from experiments.store import load_checkpoint

    class Exploit:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "checkpoint.pt"
    path.write_bytes(pickle.dumps(Exploit()))
    assert load_checkpoint(path) is None
