"""Runs that are cheap to extend: a run directory is identified by its training, measurements are
records inside it, and ``experiments.measure`` adds measurements to finished runs without training."""

import json
from pathlib import Path

import pytest

from experiments import measure as M
from experiments import measurements as MS
from experiments import store
from experiments.run import main
from tests.conftest import TINY


def records(run_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((run_dir / "measurements" / "final").glob("*"))}


def test_a_new_metric_trains_nothing_and_leaves_earlier_records_alone(make_cfg, capsys):
    first = main(make_cfg(*TINY, "metrics=none", "+metrics.param_norm={}"))
    run_dir = Path(first["run_dir"])
    weights = (run_dir / "final.pt").read_bytes()
    before = records(run_dir)
    assert any(name.startswith("param_norm-") for name in before)

    second = main(
        make_cfg(*TINY, "metrics=none", "+metrics.param_norm={}", "+metrics.lambda_max={}")
    )
    assert second["run_id"] == first["run_id"]  # the same training, so the same directory
    assert second["timings"]["train_s"] == first["timings"]["train_s"]  # kept, not retrained
    assert (run_dir / "final.pt").read_bytes() == weights
    after = records(run_dir)
    assert {k: after[k] for k in before} == before  # byte-identical
    assert (
        set(after) - set(before) == {n for n in after if n.startswith("lambda_max-")}
        and len(after) == len(before) + 1
    )
    assert second["metrics"]["lambda_max"]["value"] > 0

    capsys.readouterr()
    third = main(
        make_cfg(*TINY, "metrics=none", "+metrics.param_norm={}", "+metrics.lambda_max={}")
    )
    assert "already done" in capsys.readouterr().out
    assert third["metrics"] == second["metrics"]


def test_a_deleted_record_is_measured_again_and_comes_back_the_same(make_cfg):
    cfg = make_cfg(*TINY, "metrics=none", "+metrics.hessian_trace={}")
    first = main(cfg)
    run_dir = Path(first["run_dir"])
    (record,) = [p for p in (run_dir / "measurements" / "final").glob("hessian_trace-*")]
    content = json.loads(record.read_text())
    record.unlink()
    again = main(cfg)
    restored = json.loads(record.read_text())
    assert restored["value"] == content["value"] and restored["settings"] == content["settings"]
    assert again["metrics"]["hessian_trace"]["value"] == first["metrics"]["hessian_trace"]["value"]


def test_measured_settings_are_part_of_the_record_key(make_cfg):
    a = main(make_cfg(*TINY, "metrics=none", "+metrics.lambda_max.tol=1e-2"))
    b = main(make_cfg(*TINY, "metrics=none", "+metrics.lambda_max.tol=1e-5"))
    assert a["run_id"] == b["run_id"]
    run_dir = Path(a["run_dir"])
    assert len(list((run_dir / "measurements" / "final").glob("lambda_max-*"))) == 2
    assert b["metrics"]["lambda_max"]["settings"]["tol"] == 1e-5


def test_a_setting_added_later_keeps_older_records_at_its_default_value():
    import flatness

    requested = {"average_sharpness": {"rho": 0.01}}
    resolved = flatness.validate(requested)["average_sharpness"]
    assert resolved["norm"] == "l2"
    key = MS.record_key("average_sharpness", requested, resolved)
    older = {k: v for k, v in resolved.items() if k != "norm"}  # a record made before `norm`
    assert key == {**older, "metric": "average_sharpness"}
    box = {"average_sharpness": {"rho": 0.01, "norm": "linf"}}
    other = MS.record_key("average_sharpness", box, flatness.validate(box)["average_sharpness"])
    assert other["norm"] == "linf" and MS.settings_hash(other) != MS.settings_hash(key)


def test_run_id_ignores_what_is_measured(make_cfg):
    from omegaconf import OmegaConf

    def rid(*overrides):
        return store.run_id(OmegaConf.to_container(make_cfg(*TINY, *overrides), resolve=True))

    assert rid() == rid("metrics=full") == rid("surface=1d") == rid("track_sharpness_every=2")
    assert rid() != rid("seed=1") and rid() != rid("max_steps=50", "epochs=null")


def test_the_measure_command_adds_a_group_to_a_sweep_and_resumes_after_a_kill(
    make_cfg, tmp_path, monkeypatch
):
    runs = tmp_path / "runs"
    for seed in (0, 1):
        main(make_cfg(*TINY, "metrics=none", f"seed={seed}"))
    sweep = runs / "default"
    assert M.cli([str(sweep), "metrics=default", "--jobs", "1"]) == 0
    dirs = M.run_dirs([str(sweep)])
    assert len(dirs) == 2
    for d in dirs:
        result = store.load_result(d / "result.json")
        assert set(result["metrics"]) == {
            "param_norm",
            "distance_from_init",
            "lambda_max",
            "hessian_trace",
            "keskar_sharpness",
        }

    # A kill in the middle of a measurement: the finished records survive and are not redone.
    calls = []
    real = MS.flatness.measure

    def killed_on_second(model, *args, metrics, **kwargs):
        names = list(metrics)
        if names != list(MS.CORE):
            calls.append(names[0])
            if len(calls) == 2:
                raise KeyboardInterrupt
        return real(model, *args, metrics=metrics, **kwargs)

    monkeypatch.setattr(MS.flatness, "measure", killed_on_second)
    with pytest.raises(KeyboardInterrupt):
        M.remeasure(dirs[0], ["+metrics.worst_case_sharpness={}", "+metrics.average_sharpness={}"])
    done = {p.name.split("-")[0] for p in (dirs[0] / "measurements" / "final").glob("*.json")}
    assert calls[0] in done and calls[1] not in done
    calls.clear()
    M.remeasure(dirs[0], ["+metrics.worst_case_sharpness={}", "+metrics.average_sharpness={}"])
    assert calls == [c for c in ("worst_case_sharpness", "average_sharpness") if c not in done]


def test_one_and_two_workers_write_identical_result_files(make_cfg, tmp_path):
    for seed in (0, 1):
        for runs in ("one", "two"):
            main(make_cfg(*TINY, "metrics=none", f"seed={seed}", runs_dir=tmp_path / runs))
    assert M.cli([str(tmp_path / "one"), "metrics=default", "--jobs", "1"]) == 0
    assert M.cli([str(tmp_path / "two"), "metrics=default", "--jobs", "2"]) == 0
    for one in M.run_dirs([str(tmp_path / "one")]):
        two = tmp_path / "two" / one.relative_to(tmp_path / "one")
        a, b = records(one), records(two)
        assert a.keys() == b.keys() and a
        for name in a:  # everything but the wall time of the measurement
            ra, rb = json.loads(a[name]), json.loads(b[name])
            ra.pop("seconds"), rb.pop("seconds")
            assert ra == rb, name


def test_bad_overrides_are_one_line_before_any_worker_starts(make_cfg, tmp_path, capsys):
    main(make_cfg(*TINY, "metrics=none"))
    sweep = str(tmp_path / "runs" / "default")
    for bad in ("metrics.lambda_max.tol=-1", "+metrics.hessian_top_k={k:3}"):
        capsys.readouterr()
        assert M.cli([sweep, "--jobs", "1", bad]) == 2  # --jobs anywhere among the arguments
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: metrics.") and "\n" not in err


@pytest.mark.parametrize(
    "bad, said",
    [
        ("optimizer=bogus", "optimizer: only the metrics and surface groups"),
        ("+foo=1", "foo: not a setting"),
        ("lr=0.5", "change what"),  # another run: experiments.measure only measures
        ("seed=3", "change what"),
    ],
)
def test_measuring_refuses_overrides_that_would_make_another_run(
    make_cfg, tmp_path, capsys, bad, said
):
    main(make_cfg(*TINY, "metrics=none"))
    sweep = str(tmp_path / "runs" / "default")
    capsys.readouterr()
    assert M.cli([sweep, "--jobs", "1", bad]) == 2
    err = capsys.readouterr().err.strip()
    assert said in err and "\n" not in err
    assert len(list((tmp_path / "runs" / "default").iterdir())) == 1  # nothing trained


def test_measure_refuses_no_workers(make_cfg, tmp_path, capsys):
    main(make_cfg(*TINY, "metrics=none"))
    with pytest.raises(SystemExit) as exit_:
        M.cli([str(tmp_path / "runs" / "default"), "--jobs", "0"])
    assert exit_.value.code == 2 and "--jobs must be at least 1" in capsys.readouterr().err


def test_measure_never_trains_a_run_without_final_weights(make_cfg, tmp_path, capsys):
    """A run whose final.pt is gone is an error that names the command training it, not a new
    training reported as "0 new measurements"; that command gives the same run back."""
    run_dir = Path(main(make_cfg(*TINY, "metrics=none"))["run_dir"])
    (run_dir / "final.pt").unlink()
    capsys.readouterr()
    assert M.cli([str(run_dir), "--jobs", "1", "+metrics.param_norm={}"]) == 2
    err = capsys.readouterr().err.strip()
    assert "not trained" in err and "--config-path=" in err and "\n" not in err
    assert not (run_dir / "final.pt").exists()
    # the runner's own guard, whatever the command line checked
    cfg = M.compose_for(run_dir, [])
    with pytest.raises(M.ConfigError, match="not trained"):
        main(cfg, train=False)
    assert not (run_dir / "final.pt").exists()


def test_overrides_are_checked_against_every_run_of_a_sweep(make_cfg, tmp_path, capsys):
    """lr=0.1 is seed 0's own rate but another run for the lr=0.05 run: refused before any
    worker starts, so nothing is trained into the sweep."""
    main(make_cfg(*TINY, "metrics=none", "lr=0.1"))
    main(make_cfg(*TINY, "metrics=none", "lr=0.05"))
    sweep = tmp_path / "runs" / "default"
    before = sorted(p.name for p in sweep.iterdir())
    capsys.readouterr()
    assert M.cli([str(sweep), "--jobs", "1", "lr=0.1"]) == 2
    assert "change what" in capsys.readouterr().err
    assert sorted(p.name for p in sweep.iterdir()) == before


def test_a_path_with_an_equals_sign_is_a_path(make_cfg, tmp_path, capsys):
    """Hydra's sweep folders are named like lr=0.1: an existing path is never an override."""
    main(make_cfg(*TINY, "metrics=none"))
    folder = tmp_path / "lr=0.1"
    (tmp_path / "runs").rename(folder)  # as a Hydra sweep names its folders
    assert M.cli([str(folder), "--jobs", "1", "+metrics.param_norm={}"]) == 0
    out = capsys.readouterr().out
    assert "1 new measurements" in out


def test_the_train_command_measure_suggests_trains_the_same_run_where_it_is(make_cfg, tmp_path):
    """The command in measure's error, run as given from another folder: the same run id, in the
    run's own (moved) directory, and no Hydra output folder in the working directory."""
    import subprocess
    import sys

    from tests.conftest import ROOT

    run_dir = Path(main(make_cfg(*TINY, "metrics=none"))["run_dir"])
    moved = tmp_path / "elsewhere" / "default"
    moved.parent.mkdir()
    run_dir.parent.rename(moved)
    run_dir = moved / run_dir.name
    (run_dir / "final.pt").unlink()
    (run_dir / "result.json").unlink()
    command = MS.not_trained(run_dir).split("Train it with: ")[1].split()
    work = tmp_path / "work"
    work.mkdir()
    env = {**__import__("os").environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, *command[1:]], cwd=work, env=env, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (run_dir / "final.pt").exists() and list(work.iterdir()) == []


def test_measure_says_which_groups_exist_and_exits_2_on_a_missing_path(make_cfg, tmp_path, capsys):
    main(make_cfg(*TINY, "metrics=none"))
    assert M.cli([str(tmp_path / "runs" / "default"), "metrics=bogus"]) == 2
    assert "known: " in capsys.readouterr().err
    assert M.cli([str(tmp_path / "nowhere")]) == 2
    assert "does not exist" in capsys.readouterr().err
