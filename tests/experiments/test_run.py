"""The runner end to end: through ``main(cfg)`` with Hydra's compose API, and the real command line."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from experiments import store
from experiments.errors import ConfigError
from experiments.run import main
from tests.conftest import ROOT, TINY, refusal


def read_history(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "history.csv") as f:
        return list(csv.DictReader(f))


def test_default_mlp_on_mnist1d_learns(make_cfg):
    """The default configuration (40-100-100-10 MLP, SGD lr 0.1, batch 128, 100 epochs).

    Measured on one thread (the default): test accuracy 0.591, train accuracy 0.855 (README). The
    bound leaves room for other CPUs' floating-point differences.
    """
    result = main(make_cfg())
    assert result["status"] == "finished" and result["epochs_trained"] == 100
    history = read_history(Path(result["run_dir"]))
    # eval_every=auto: the initial weights and every 5th epoch, about 20 rows over 100 epochs
    assert [int(r["epoch"]) for r in history] == list(range(0, 101, 5))
    assert float(history[-1]["train_loss"]) < 0.5 * float(history[0]["train_loss"])
    assert result["test_acc"] >= 0.57
    assert result["train_acc"] > result["test_acc"]  # MNIST-1D MLPs overfit: a positive gap
    assert result["gap"] == pytest.approx(result["train_acc"] - result["test_acc"])


def test_same_config_and_seed_give_bit_identical_results(make_cfg, tmp_path):
    a = main(make_cfg(*TINY, runs_dir=tmp_path / "a"))
    b = main(make_cfg(*TINY, runs_dir=tmp_path / "b"))
    for key in ("train_loss", "test_loss", "train_acc", "test_acc", "gap", "metrics"):
        assert a[key] == b[key], key
    wa = torch.load(Path(a["run_dir"]) / "final.pt", weights_only=True)
    wb = torch.load(Path(b["run_dir"]) / "final.pt", weights_only=True)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    c = main(make_cfg(*TINY, "seed=1", runs_dir=tmp_path / "c"))
    assert c["train_loss"] != a["train_loss"]


def test_run_id_depends_on_what_determines_the_result_only(make_cfg, tmp_path):
    from omegaconf import OmegaConf

    def rid(*overrides):
        return store.run_id(OmegaConf.to_container(make_cfg(*TINY, *overrides), resolve=True))

    base = rid()
    assert base == rid("device=cpu", "progress=true", f"runs_dir={tmp_path}/x", "eval_batch_size=7")
    assert base != rid("lr=0.05")
    assert base != rid("seed=2")
    assert base != rid("optimizer=adam")


def test_result_json_holds_config_metrics_timings_and_loadable_weights(make_cfg):
    result = main(make_cfg(*TINY, "save_epochs=[2,4]"))
    run_dir = Path(result["run_dir"])
    on_disk = json.loads((run_dir / "result.json").read_text())
    assert on_disk["run_id"] == run_dir.name
    assert on_disk["config"]["optimizer.name"] == "sgd" and on_disk["config"]["batch_size"] == 32
    assert set(on_disk["metrics"]) == {
        "param_norm",
        "distance_from_init",
        "lambda_max",
        "hessian_trace",
        "keskar_sharpness",
    }
    assert on_disk["metrics"]["param_norm"]["value"] > 0 and on_disk["metric_failures"] == {}
    lam = on_disk["metrics"]["lambda_max"]
    assert (
        lam["settings"]["tol"] == 1e-3
        and lam["extra"]["converged"]
        and lam["extra"]["products"] >= 1
    )
    assert on_disk["versions"]["torch"] == torch.__version__ and on_disk["device"] == "cpu"
    assert on_disk["timings"]["total_s"] >= on_disk["timings"]["train_s"] > 0
    for name in ("init.pt", "final.pt", "weights/epoch_0002.pt", "weights/epoch_0004.pt"):
        state = torch.load(run_dir / name, weights_only=True)
        assert "0.weight" not in state and "1.weight" in state  # Sequential(Flatten, Linear, ...)
    init = torch.load(run_dir / "init.pt", weights_only=True)
    final = torch.load(run_dir / "final.pt", weights_only=True)
    moved = torch.cat([(final[k] - init[k]).reshape(-1) for k in init]).norm().item()
    assert on_disk["metrics"]["distance_from_init"]["value"] == pytest.approx(moved, rel=1e-5)
    assert (run_dir / "config.yaml").exists() and not (run_dir / "checkpoint.pt").exists()


def test_a_finished_run_is_skipped_and_force_reruns_it(make_cfg, capsys):
    first = main(make_cfg(*TINY))
    result_file = Path(first["run_dir"]) / "result.json"
    stamp = result_file.stat().st_mtime_ns
    capsys.readouterr()
    again = main(make_cfg(*TINY))
    assert f"already done: {first['run_dir']}" in capsys.readouterr().out
    assert result_file.stat().st_mtime_ns == stamp and again["train_loss"] == first["train_loss"]
    forced = main(make_cfg(*TINY, "force=true"))
    assert result_file.stat().st_mtime_ns != stamp and forced["train_loss"] == first["train_loss"]


def test_divergence_is_recorded_not_raised(make_cfg):
    result = main(make_cfg(*TINY, "lr=1e6", "dataset.separation=100"))
    assert result["status"] == "diverged" and result["diverged_epoch"] >= 1
    on_disk = json.loads((Path(result["run_dir"]) / "result.json").read_text())
    assert on_disk["status"] == "diverged" and on_disk["test_acc"] is None


def test_train_until_loss_stops_at_the_matched_loss(make_cfg):
    result = main(
        make_cfg(
            *TINY,
            "epochs=200",
            "train_until_loss=0.3",
            "dataset.separation=2",
            "criterion_every_samples=256",  # one check per epoch of these 256 samples
        )
    )
    history = read_history(Path(result["run_dir"]))
    assert result["stop_reason"] == "train_until_loss" and result["epochs_trained"] < 200
    assert float(history[-1]["train_loss"]) <= 0.3 < float(history[-2]["train_loss"])


@pytest.mark.parametrize(
    "optimizer, model",
    [
        ("sam", "model=cnn"),
        ("asam", "model=cnn"),
        ("adamw", "model=mlp"),
        ("momentum", "model=mlp"),
    ],
)
def test_every_optimizer_trains(make_cfg, optimizer, model):
    overrides = [
        "dataset=synthetic",
        "dataset.input_shape=[1,8,8]",
        "epochs=3",
        "batch_size=32",
        model,
    ]
    if model == "model=cnn":
        overrides += ["model.channels=4", "model.batch_norm=true"]
    result = main(make_cfg(*overrides, f"optimizer={optimizer}"))
    history = read_history(Path(result["run_dir"]))
    assert result["status"] == "finished"
    assert float(history[-1]["train_loss"]) < float(history[0]["train_loss"])


BAD_INPUTS = [
    ("batch_size=0", "batch_size"),
    ("batch_size=100000", "batch_size"),
    ("lr=0", "lr"),
    ("lr=-1", "lr"),
    ("epochs=-1", "epochs"),
    ("optimizer=momentum optimizer.momentum=1.0", "optimizer.momentum"),
    ("optimizer=momentum optimizer.momentum=-0.1", "optimizer.momentum"),
    ("device=tpu", "device"),
    ("lr=abc", "lr"),
    ("batch_size=1.5", "batch_size"),
    ("train_until_loss=0", "train_until_loss"),
    ("lr_schedule=linear", "lr_schedule"),
    ("+metrics.no_such_metric={}", "metrics.no_such_metric"),
    ("dataset=cifar10", "dataset.download=true"),
    ("dataset=mnist1d dataset.num_samples=abc", "dataset.num_samples"),
    ("dataset.input_shape=[0]", "dataset.input_shape"),
    ("model.width=abc", "model.width"),
    ("optimizer=sam optimizer.rho=0", "optimizer.rho"),
    ("optimizer=adam optimizer.betas=[0.9,1.0]", "optimizer.betas"),
]
if not torch.cuda.is_available():
    BAD_INPUTS.append(("device=cuda", "device"))


@pytest.mark.parametrize("overrides, key", BAD_INPUTS)
def test_bad_input_fails_before_training_naming_the_key(make_cfg, tmp_path, overrides, key):
    base = [o for o in TINY if not (o.startswith("dataset=") and "dataset=" in overrides)]
    message = refusal(make_cfg, [*base, *overrides.split()])
    assert key in message and "\n" not in message
    assert not (tmp_path / "runs").exists()


def cli(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "experiments.run", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_command_line_trains_and_writes_a_result(tmp_path, data_dir):
    start = time.perf_counter()
    proc = cli(
        "optimizer=adam", "batch_size=1024", f"data_dir={data_dir}", "progress=false", cwd=tmp_path
    )
    elapsed = time.perf_counter() - start
    assert proc.returncode == 0, proc.stderr
    (result_file,) = (tmp_path / "runs" / "default").glob("*/result.json")
    result = json.loads(result_file.read_text())
    assert result["status"] == "finished" and result["config"]["optimizer.name"] == "adam"
    assert result["config"]["batch_size"] == 1024 and result["test_acc"] > 0.3
    assert not (tmp_path / "outputs").exists()  # Hydra writes nothing outside the run directory
    print(f"command line run took {elapsed:.1f}s")


def test_a_normal_run_prints_no_warning(tmp_path, data_dir):
    """The default metrics include Hessian products, whose forward-mode path made torch print a
    FutureWarning on every run; nothing is hidden with -W ignore any more."""
    # fisher_rao_norm runs forward-mode products whatever the memory: the path that warned.
    metrics = ("metrics=default", "+metrics.fisher_rao_norm={}")
    proc = cli(*TINY, *metrics, f"data_dir={data_dir}", "progress=false", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "Warning" not in proc.stdout + proc.stderr, proc.stderr


@pytest.mark.parametrize(
    "args, key",
    [(["lr=-1"], "lr"), (["batch_size=abc"], "batch_size"), (["optimizer=nadam"], "optimizer")],
)
def test_command_line_bad_input_is_one_line_and_nonzero(tmp_path, args, key):
    proc = cli(*args, "dataset=synthetic", "progress=false", cwd=tmp_path, timeout=120)
    assert proc.returncode == 2  # every config error, Hydra's own included
    assert key in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    if key == "optimizer":  # an unknown choice names the known ones
        assert "sgd" in proc.stderr and "adam" in proc.stderr
    assert not (tmp_path / "runs").exists()


def test_command_line_divergence_exits_zero(tmp_path):
    proc = cli(
        *TINY, "lr=1e6", "dataset.separation=100", "progress=false", cwd=tmp_path, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert "diverged at epoch" in proc.stdout


def test_sigkill_then_resume_equals_an_uninterrupted_run(tmp_path):
    args = [
        "dataset=synthetic",
        "dataset.num_samples_train=2000",
        "epochs=40",
        "batch_size=8",
        "model.width=32",
        "progress=false",
        "checkpoint_seconds=0",  # a checkpoint every epoch: the default 30 s may outlast the kill
    ]
    killed_dir = tmp_path / "killed"
    killed_dir.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "experiments.run", *args],
        cwd=killed_dir,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    history = None
    while time.time() < deadline:
        found = list((killed_dir / "runs" / "default").glob("*/history.csv"))
        if (
            found
            and len(found[0].read_text().splitlines()) >= 4  # header + epoch 0 + 2 evaluations
            and (found[0].parent / "checkpoint.pt").exists()
        ):
            history = found[0]
            break
        time.sleep(0.05)
    assert history is not None, "training never got going"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    run_dir = history.parent
    assert not (run_dir / "result.json").exists(), "the run finished before it could be killed"

    resumed = cli(*args, cwd=killed_dir)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from epoch" in resumed.stdout + resumed.stderr
    clean_dir = tmp_path / "clean"
    clean_dir.mkdir()
    clean = cli(*args, cwd=clean_dir)
    assert clean.returncode == 0, clean.stderr

    a = json.loads((run_dir / "result.json").read_text())
    (clean_file,) = (clean_dir / "runs" / "default").glob("*/result.json")
    b = json.loads(clean_file.read_text())
    assert a["resumed_from_epoch"] > 0 and b["resumed_from_epoch"] == 0
    for key in ("train_loss", "test_loss", "train_acc", "test_acc", "metrics", "epochs_trained"):
        assert a[key] == b[key], key
    wa = torch.load(run_dir / "final.pt", weights_only=True)
    wb = torch.load(clean_file.parent / "final.pt", weights_only=True)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    drop = ("seconds",)
    ha = [{k: v for k, v in r.items() if k not in drop} for r in read_history(run_dir)]
    hb = [{k: v for k, v in r.items() if k not in drop} for r in read_history(clean_file.parent)]
    assert ha == hb


def test_init_from_continues_from_the_given_weights(make_cfg, tmp_path):
    """A continuation starts at the source's final weights (its init.pt is them, so distance_from_init
    and linear_barrier measure the way from them); its id hashes the weights' bytes, not the path."""
    from omegaconf import OmegaConf

    source = main(make_cfg(*TINY))
    final = Path(source["run_dir"]) / "final.pt"
    copy = tmp_path / "elsewhere.pt"
    copy.write_bytes(final.read_bytes())
    more = [*TINY, "epochs=2", "+metrics.linear_barrier={}"]
    cont = main(make_cfg(*more, f"init_from={final}"))
    start = torch.load(Path(cont["run_dir"]) / "init.pt", weights_only=True)
    want = torch.load(final, weights_only=True)
    assert all(torch.equal(start[k], want[k]) for k in want)
    moved = cont["metrics"]["distance_from_init"]["value"]
    assert 0 < moved < source["metrics"]["distance_from_init"]["value"]
    assert cont["metrics"]["linear_barrier"]["value"] >= 0

    def rid(*overrides):
        return store.run_id(OmegaConf.to_container(make_cfg(*overrides), resolve=True))

    assert rid(*more, f"init_from={final}") == rid(*more, f"init_from={copy}")
    assert rid(*more, f"init_from={final}") != rid(*more)
    copy.write_bytes((Path(source["run_dir"]) / "init.pt").read_bytes())  # other weights
    assert rid(*more, f"init_from={final}") != rid(*more, f"init_from={copy}")


@pytest.mark.parametrize("bad", ["missing.pt", "result.json", "init.pt@wide"])
def test_init_from_refuses_what_is_not_this_models_weights(make_cfg, tmp_path, bad):
    source = main(make_cfg(*TINY))
    name, _, variant = bad.partition("@")
    path = Path(source["run_dir"]) / name
    extra = ["model.width=32"] if variant == "wide" else []
    with pytest.raises(ConfigError, match="init_from"):
        main(make_cfg(*TINY, *extra, f"init_from={path}", runs_dir=tmp_path / "other"))
    assert not (tmp_path / "other").exists()
