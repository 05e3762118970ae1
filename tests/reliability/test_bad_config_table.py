"""Issue 16's bad-input table: every cause a hostile user found, several values each, refused with
one line naming the key before any directory exists (in-process through the compose API, as the
command composes it: a type the run schema refuses stops the composition; a few on the command
line, where Hydra's own errors must read the same)."""

from __future__ import annotations

import pytest

from experiments.command_line import precheck
from experiments.errors import ConfigError
from experiments.run import main
from tests.conftest import TINY, refusal

LONG = "x" * 300

CASES = {
    # out of range, unknown or inconsistent: ε ≤ 0, ρ ≤ 0, inverted σ bounds, one grid point, …
    "out of range": [
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
        (["eval_every=0"], "eval_every"),
        (["eval_every=sometimes"], "eval_every"),
        (["eval_every=2.5"], "eval_every"),
        (["checkpoint_seconds=-1"], "checkpoint_seconds"),
        (["threads=0"], "threads"),
    ],
    # NaN and infinity pass every comparison: one finite-number check refuses them all
    "non-finite": [
        (["lr=nan"], "lr"),
        (["lr=inf"], "lr"),
        (["weight_decay=nan"], "weight_decay"),
        (["weight_decay=inf"], "weight_decay"),
        (["optimizer=momentum", "optimizer.momentum=nan"], "optimizer.momentum"),
        (["optimizer=adam", "optimizer.eps=inf"], "optimizer.eps"),
        (["optimizer=sam", "optimizer.rho=inf"], "optimizer.rho"),
        (["lr_schedule=step", "lr_step_gamma=nan"], "lr_step_gamma"),
        (["dataset.separation=inf"], "dataset.separation"),
        (["train_until_loss=nan"], "train_until_loss"),
        (["metrics.keskar_sharpness.epsilon=inf"], "metrics.keskar_sharpness.epsilon"),
        (["metrics.lambda_max.tol=nan"], "metrics.lambda_max.tol"),
        (["surface=1d", "surface.span=[-inf,inf]"], "surface.span"),
        (["surface=1d", "surface.span=[nan,1]"], "surface.span"),
        (["surface=pca", "surface.margin=nan"], "surface.margin"),
        (["surface=pca", "surface.margin=inf"], "surface.margin"),
        (["transform=rescale", "transform.tolerance=nan"], "transform.tolerance"),
        (["transform=rescale", "transform.alpha=inf"], "transform.alpha"),
    ],
    # every seed within what numpy, mnist1d and torch's generators take
    "seed range": [
        (["seed=18446744073709551615"], "seed"),
        (["seed=4294967296"], "seed"),
        (["dataset.seed=99999999999"], "dataset.seed"),
        (["surface=1d", "surface.seed=4294967296"], "surface.seed"),
        (["transform=rescale", "transform.seed=18446744073709551616"], "transform.seed"),
        (["metrics.lambda_max.seed=4294967296"], "metrics.lambda_max.seed"),
    ],
    # path keys: strings that stay inside their root
    "paths": [
        (["name=5"], "name"),
        (["name=null"], "name"),
        (["name=''"], "name"),
        (["name=."], "name"),
        (["name=../../outside"], "name"),
        (["name=/tmp/elsewhere"], "name"),
        ([f"name={LONG}"], "name"),
        (["runs_dir=5"], "runs_dir"),
        (["data_dir=7"], "data_dir"),
    ],
    # a `+key` that the project does not have would change the run id silently
    "unknown keys": [
        (["+foo=1"], "foo"),
        (["+optimizer.foo=1"], "optimizer.foo"),
        (["+optimizer.momentum=0.9"], "optimizer.momentum"),  # another optimizer's: does nothing
        (["optimizer=adam", "+optimizer.rho=0.1"], "optimizer.rho"),
        (["+dataset.foo=1"], "dataset.foo"),
        (["+surface.foo=1"], "surface.foo"),
        (["+transform.foo=1"], "transform.foo"),
    ],
    # each group key has the type its option files give it
    "types": [
        (["model.batch_norm=maybe"], "model.batch_norm"),
        (["model.batch_norm=1"], "model.batch_norm"),
        (["model.width=wide"], "model.width"),
        (["progress=maybe"], "progress"),
    ],
    # a setting that would silently do nothing
    "no effect": [
        (["save_epochs=[100]"], "save_epochs"),
        (["save_epochs=[6]"], "save_epochs"),
    ],
}
TABLE = [
    pytest.param(overrides, key, id=f"{cause}: {' '.join(overrides)[:40]}")
    for cause, cases in CASES.items()
    for overrides, key in cases
]


@pytest.mark.parametrize("overrides, key", TABLE)
def test_bad_input_is_one_line_naming_the_key_before_any_directory(
    make_cfg, tmp_path, overrides, key
):
    message = refusal(make_cfg, [*TINY, *overrides])
    assert message.split(":")[0] == key and "\n" not in message, message
    assert not (tmp_path / "runs").exists() and not (tmp_path.parent / "outside").exists()


def test_a_data_dir_that_is_a_file_is_refused_before_any_data_is_made(make_cfg, tmp_path):
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(ConfigError, match="^data_dir: "):
        main(make_cfg(*TINY, f"data_dir={tmp_path / 'file'}"))
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    "overrides, said",
    [
        (["optimizer=bogus"], "optimizer/bogus"),
        (["model=bogus"], "model/bogus"),
        (["bogus=1"], "bogus"),
        (["lr=0.1,"], "override 'lr=0.1,'"),
    ],
)
def test_hydras_own_errors_become_one_line(overrides, said):
    """What Hydra refuses before the run's checks (an unknown choice or key, a malformed
    override) comes back as one line, which the command prints with exit status 2."""
    message = precheck([*TINY, *overrides])
    assert message is not None and said in message and "\n" not in message
    assert precheck(["-m", *TINY, "lr=0.1,0.2", "seed=range(0,3)"]) is None  # a sweep composes
    said = precheck([*TINY, "lr=0.1,0.2"])  # ... but only as one: without -m Hydra refuses it
    assert said is not None and said.startswith("lr: a list of values is a sweep; add -m")


def test_a_key_of_another_option_or_a_misspelt_key_says_what_to_do():
    """Hydra's "Could not override" becomes which option has the key, or the key meant."""
    said = precheck([*TINY, "optimizer.rho=0.1"])
    assert said.startswith("optimizer.rho: the chosen optimizer has no setting 'rho'")
    assert "optimizer=sam" in said and "optimizer=asam" in said
    assert precheck([*TINY, "optimzer=adam"]) == (
        "optimzer: not a setting of this project (did you mean 'optimizer'?)"
    )


def test_hydras_flags_with_a_value_are_not_read_as_overrides():
    from experiments.command_line import split_command_line

    flags, overrides = split_command_line(["--cfg", "job", "lr=0.1", "-p", "optimizer", "--info"])
    assert flags == {"--cfg": "job", "-p": "optimizer", "--info": None}
    assert overrides == ["lr=0.1"]
    assert precheck(["--cfg", "job", *TINY]) is None
