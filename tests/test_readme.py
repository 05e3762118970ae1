"""The README's library sections hold: the snippets of "Use flatness on your own model" run in order
in one namespace and do what their comments say, its metric table matches the registry, and the
"Add a metric" recipe of "Extending" registers a metric that passes its own test."""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

import flatness
from flatness import params as P
from flatness import registry

README = Path(__file__).resolve().parents[1] / "README.md"
USE = "Use flatness on your own model"
BUILTIN = frozenset(flatness.REGISTRY)  # the registered metrics, before any test adds one


def section(heading: str, level: int = 2) -> str:
    """The text under ``heading`` up to the next heading of the same or a higher level."""
    lines = README.read_text().splitlines()
    marker = "#" * level + " " + heading
    starts = [i for i, line in enumerate(lines) if line.strip() == marker]
    assert len(starts) == 1, f"README.md needs exactly one heading {marker!r}"
    body = []
    for line in lines[starts[0] + 1 :]:
        hashes = len(line) - len(line.lstrip("#"))
        if 1 <= hashes <= level and line[hashes : hashes + 1] == " ":
            break
        body.append(line)
    return "\n".join(body)


def blocks(text: str, language: str) -> list[str]:
    """The fenced code blocks of ``language`` (indented fences included, their indent removed)."""
    found = re.findall(rf"^( *)```{language}\n(.*?)^\1```", text, re.S | re.M)
    return [re.sub(rf"^{indent}", "", code, flags=re.M) for indent, code in found]


def run_blocks(code: list[str], where: str, namespace: dict) -> None:
    for i, block in enumerate(code, 1):
        # The file name in a traceback says which snippet failed.
        exec(compile(block, f"README.md ({where}, python block {i})", "exec"), namespace)


@pytest.fixture
def one_thread():
    # Tiny problems on a shared CPU: thread start-up and contention cost more than they save.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_use_on_your_own_model_snippets_run_and_hold(tmp_path, monkeypatch, capsys, one_thread):
    code = blocks(section(USE), "python")
    assert len(code) >= 10, "the section lost its snippets"
    monkeypatch.chdir(tmp_path)  # saved figures and surfaces land here
    ns: dict = {"__name__": "readme"}
    run_blocks(code, USE, ns)
    printed = capsys.readouterr().out

    # default metrics, each with its settings and error bound
    results = ns["results"]
    assert list(results) == list(flatness.DEFAULT_METRICS)
    lam = results["lambda_max"]
    assert lam.extra["converged"] and 0 <= lam.error_bound <= lam.settings["tol"] * lam.value
    assert ns["from_loader"]["lambda_max"].value == pytest.approx(lam.value, rel=1e-5)

    # a request by dict, the validation message the comment shows, and the pandas row
    chosen = ns["chosen"]
    assert chosen["keskar_5e-4"].settings["epsilon"] == 5e-4
    assert chosen["lambda_max"].settings["tol"] == 1e-6
    assert chosen["distance_from_init"].value > 0
    assert "metrics.lambda_max.tol: expected a finite number > 0 (got -1)" in printed
    assert ns["table"].shape[0] == 1 and "lambda_max.error_bound" in ns["table"].columns

    # the Hessian: top eigenvalues descending, the first one λmax; unit eigenvectors; trace vs SLQ
    top = ns["top"]
    assert len(top.value) == 3 and top.value == sorted(top.value, reverse=True)
    assert top.value[0] == pytest.approx(lam.value, rel=1e-4)
    assert all(b >= 0 for b in top.error_bound)
    assert P.norm(ns["vectors"][0]).item() == pytest.approx(1.0, rel=1e-5)
    model, trace, esd = ns["model"], ns["trace"], ns["esd"]
    n_params = sum(p.numel() for p in model.parameters())
    combined_se = math.hypot(trace.error_bound, esd.error_bound * n_params)
    assert abs(esd.mean() * n_params - trace.value) < 4 * combined_se

    # surfaces: shapes, the centre is the model itself, files written and read back
    line, plane = ns["line"], ns["plane"]
    assert line.values["train_loss"].shape == (11,) and "test_loss" in line.values
    assert plane.values["train_loss"].shape == (9, 9) and plane.settings["kind"] == "2d"
    train_loss = results["train_loss"].value
    assert plane.values["train_loss"][4, 4] == pytest.approx(train_loss, rel=1e-5)
    for name in ("line.png", "plane.png", "density.png", "plane.npz", "plane.json"):
        assert (tmp_path / name).stat().st_size > 0, name

    # models of any shape: the encoder measured in eval mode; dict batches equal tensors
    assert ns["on_encoder"]["lambda_max"].value > 0
    assert ns["on_encoder"]["lambda_max"].settings["mode"] == "eval"
    for name in flatness.DEFAULT_METRICS:
        assert ns["on_dicts"][name].value == pytest.approx(ns["on_tensors"][name].value, rel=1e-5)

    # interpolation runs from the initial weights to the trained ones
    path = ns["path"].values["train_loss"]
    start_loss = flatness.measure(ns["start"], (ns["x"], ns["y"]), metrics=["train_loss"])
    assert path[0] == pytest.approx(start_loss["train_loss"].value, rel=1e-5)
    assert path[-1] == pytest.approx(train_loss, rel=1e-5)

    # Dinh's rescaling: the same logits, a different λmax
    rescaled, x = ns["rescaled"], ns["x"]
    assert rescaled.relative_change < 1e-5
    with torch.no_grad():
        torch.testing.assert_close(rescaled.model(x), model(x), rtol=1e-4, atol=1e-5)
    assert ns["lam_before"] == pytest.approx(lam.value, rel=1e-4)
    assert ns["lam_after"] > 10 * ns["lam_before"]

    # describe() printed every registered metric
    for name in flatness.REGISTRY:
        assert name in printed


def test_metric_table_lists_every_registered_metric_with_its_defaults():
    rows = {}
    for line in section(USE).splitlines():
        match = re.match(r"^\| `([^`]+)` \|.*\| ([^|]*) \|$", line)
        if match:
            rows[match.group(1)] = match.group(2).strip()
    assert set(rows) == set(flatness.REGISTRY)
    for name, metric in flatness.REGISTRY.items():
        listed = ", ".join(f"`{k}`={v}" for k, v in metric.defaults.items()) or "—"
        assert rows[name] == listed, name


def test_import_flatness_does_not_load_matplotlib():
    code = "import sys, flatness; print(sorted({'matplotlib', 'pandas'} & set(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


def test_extending_recipe_registers_a_metric_that_passes_its_test(one_thread):
    recipe = section("Add a metric", level=3)
    code = blocks(recipe, "python")
    assert len(code) == 3, "the recipe's function, register call and test"
    ns: dict = {"__name__": "recipe"}
    try:
        run_blocks(code, "Extending", ns)
        (name,) = set(flatness.REGISTRY) - BUILTIN
        (test,) = [fn for key, fn in ns.items() if key.startswith("test_")]
        test()
        (group,) = [yaml.safe_load(b) for b in blocks(recipe, "yaml")]
        assert group == {name: registry.get(name).defaults}
        assert name in {row["name"] for row in flatness.describe()}
    finally:
        for added in set(flatness.REGISTRY) - BUILTIN:
            del flatness.REGISTRY[added]
