"""``python -m experiments.analyse.audit``: which metrics does Dinh et al.'s α-rescaling fool?

Audits finished runs (``--run DIR``: their final weights, which must have met the run's training
criterion) or trains (or reuses) the default MLP and CNN to cross-entropy 0.01; rescales each with
α ∈ {0.01, 0.1, 1, 10, 100} layer-wise (×α, ×1/α on the first two weight layers) and per neuron (every
unit of the first layer by its own factor around α), measures every metric on the same function, and
writes:

- ``results/tables/audit.csv`` and ``audit.md``: metric × α → value and ratio to the unrescaled
  model, with a verdict per metric. The rule is deterministic: the function must be unchanged (max
  |Δlogits| / max |logits| ≤ ``--function-tolerance``, else every verdict is "function changed");
  a metric is "invariant" when every ratio is within ``--tolerance`` of 1, "at bound" when a search
  of it hit its bound at some α (no ratio is shown for it), otherwise the factor it moves by;
- ``results/tables/audit_values.csv``: every value measured, the table the report draws its small
  multiples from (a panel per metric family and rescaling mode);
- ``results/tables/audit_slices.csv``: the filter-normalised 1D slice before and after, which the
  report draws.

Tables in, tables out: the figures are the report's (``python -m experiments.report``).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from experiments import run
from experiments.analyse.tune import read_rates
from experiments.errors import ProtocolError
from experiments.measurements import measure_model
from experiments.plan import final_specs, load_protocol, run_dir
from experiments.runs import NotTrained, load_trained
from flatness.io import atomic_write_bytes
from flatness.reparam import rescale
from flatness.surface import surface_1d

log = logging.getLogger(__name__)
CONF = Path(__file__).resolve().parents[2] / "conf"
ALPHAS = (0.01, 0.1, 1.0, 10.0, 100.0)
DEFAULT_MODELS = ("mlp", "cnn1d")
# The default models are trained to the criterion the protocols use, under a step budget.
CRITERION = [
    "train_until_loss=0.01",
    "epochs=null",
    "max_steps=20000",
    "criterion_every_samples=3200",
]


class AuditError(Exception):
    """A model the audit refuses (e.g. one that never met its training criterion)."""


def trained(model_name: str, overrides: list[str]) -> tuple[Any, torch.nn.Module, Any, dict]:
    """Train the configuration (or reuse its finished run) and return config, model, data, init."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=[f"model={model_name}", "metrics=none", *overrides])
    result = run.main(cfg)
    if result["status"] != "finished":
        raise AuditError(
            f"training {model_name} did not finish: {result['status']} ({result['run_dir']})"
        )
    return from_run(result["run_dir"], require_criterion=cfg.train_until_loss is not None)


def from_run(run_dir: str | Path, require_criterion: bool = True):
    """:func:`experiments.runs.load_trained`, its refusal an AuditError."""
    try:
        return load_trained(run_dir, require_criterion)
    except NotTrained as exc:
        raise AuditError(str(exc)) from None


def audit_model(
    name: str, model, data, init, requested: dict, alphas, modes, batch_size: int
) -> list[dict[str, Any]]:
    """One row per (mode, α, metric): the value on the rescaled model, and the value on the original."""
    reference = measure_model(model, data, init, requested, batch_size)
    rows = []
    for mode in modes:
        for alpha in alphas:
            layers = [0, 1] if mode == "layer" else [0]
            scaled = rescale(model, alpha=alpha, layers=layers, mode=mode, check=data.x_train)
            measured = measure_model(scaled.model, data, init, requested, batch_size)
            values = {"test_error": (measured["test_error"], reference["test_error"], False)}
            for metric, entry in measured["metrics"].items():
                ref = reference["metrics"].get(metric)
                bound = _at_bound(entry) or (ref is not None and _at_bound(ref))
                values[metric] = (entry["value"], np.nan if ref is None else ref["value"], bound)
            for metric in measured["metric_failures"]:
                values[metric] = (np.nan, np.nan, False)
            for metric, (value, ref, bound) in values.items():
                rows.append(
                    {
                        "model": name,
                        "mode": mode,
                        "alpha": alpha,
                        "metric": metric,
                        "value": value,
                        "reference": ref,
                        "at_bound": bool(bound),
                        "logit_change": scaled.relative_change,
                    }
                )
            log.info("%s %s α=%g done", name, mode, alpha)
    return rows


def _at_bound(entry: dict[str, Any]) -> bool:
    return bool((entry.get("extra") or {}).get("at_bound"))


def verdicts(rows: pd.DataFrame, tol: float, function_tol: float = 1e-4) -> pd.DataFrame:
    """Per model, mode and metric: the spread max/min of value/reference over α and the original
    (ratio 1), and a verdict (the module's rule: function changed / at bound / invariant / changed
    for every α / moves)."""
    rows = rows.assign(ratio=rows["value"] / rows["reference"])
    if "at_bound" not in rows:
        rows = rows.assign(at_bound=False)

    def judge(group: pd.DataFrame) -> pd.Series:
        ratios = group["ratio"].to_numpy(dtype=float)
        change = np.nanmax(group["logit_change"].to_numpy(dtype=float))
        if not change <= function_tol:
            return pd.Series({"spread": np.nan, "verdict": f"function changed ({change:.2g})"})
        if group["at_bound"].astype(bool).any():
            return pd.Series({"spread": np.nan, "verdict": "at bound"})
        if np.isnan(ratios).any() or (ratios <= 0).any():
            spread = across = np.nan
        else:
            # the original model (ratio 1) counts: with α ∈ {0.1, 10} λmax grows ~×100 at both,
            # which is a move of ×100, not of max/min over the two
            with_original = np.append(ratios, 1.0)
            spread = with_original.max() / with_original.min()
            across = ratios.max() / ratios.min()
        invariant = bool(np.all(np.abs(ratios - 1) <= tol)) if not np.isnan(ratios).any() else False
        if invariant:
            verdict = "invariant"
        elif not np.isfinite(spread):
            verdict = "changes sign or failed"
        elif across <= 1 + tol:  # the same change for every α: the transform, not α, moved it
            verdict = f"changed ×{np.median(ratios):.3g} for every α"
        else:
            verdict = f"moves ×{spread:.3g}"
        return pd.Series({"spread": spread, "verdict": verdict})

    return (
        rows.groupby(["model", "mode", "metric"], sort=False)[["ratio", "logit_change", "at_bound"]]
        .apply(judge)
        .reset_index()
    )


def write_tables(rows: pd.DataFrame, judged: pd.DataFrame, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    wide = rows.assign(ratio=rows["value"] / rows["reference"]).pivot_table(
        index=["model", "mode", "metric"], columns="alpha", values="ratio", sort=False
    )
    wide.columns = [f"ratio α={a:g}" for a in wide.columns]
    ref = (
        rows.groupby(["model", "mode", "metric"], sort=False)["reference"]
        .first()
        .rename("value (original, unrescaled)")
    )
    table = (
        pd.concat([ref, wide], axis=1).reset_index().merge(judged, on=["model", "mode", "metric"])
    )
    # a search that hit its bound gave no value: no ratio (and no reference) is shown for it
    at = table["verdict"].eq("at bound")
    table.loc[at, [c for c in table.columns if c.startswith(("ratio", "value"))]] = np.nan
    table.to_csv(out / "audit.csv", index=False)
    rows.to_csv(out / "audit_values.csv", index=False)
    (out / "audit.md").write_text(table.to_markdown(index=False, floatfmt=".4g") + "\n")


def slice_rows(model, data, name: str, alpha: float = 10.0) -> pd.DataFrame:
    """Filter-normalised 1D slices (41 points, seed 0, the first 2000 training samples) of the
    original model and of its layer- and neuron-wise α-rescalings: tidy rows (model, curve, t and
    each value), saved as ``tables/audit_slices.csv`` and drawn by the report."""
    train = (data.x_train[:2000], data.y_train[:2000])
    surfaces = {"original": surface_1d(model, train, points=41, seed=0)}
    for mode, layers in (("layer", [0, 1]), ("neuron", [0])):
        scaled = rescale(model, alpha=alpha, layers=layers, mode=mode, check=data.x_train)
        surfaces[f"{mode}-wise α={alpha:g}"] = surface_1d(scaled.model, train, points=41, seed=0)
    return pd.concat(
        [
            pd.DataFrame({"model": name, "curve": label, "t": s.coords[0], **s.values})
            for label, s in surfaces.items()
        ],
        ignore_index=True,
    )


def write_slices(slices: pd.DataFrame, tables: Path) -> None:
    """``audit_slices.csv``: these models' slices replace their earlier ones, others are kept."""
    path = tables / "audit_slices.csv"
    if path.exists():
        old = pd.read_csv(path)
        slices = pd.concat([old[~old["model"].isin(set(slices["model"]))], slices])
    atomic_write_bytes(path, slices.to_csv(index=False).encode())


def _models(args) -> list[tuple[str, Any]]:
    """(label, loader) per model to audit, every path checked before any measuring."""
    out = []
    for ref in args.run:
        label, _, path = ref.rpartition("=")
        path = Path(path)
        from_run(path)  # refuse early
        out.append((label or path.name, lambda path=path: from_run(path)))
    for ref in args.protocol_run:
        try:
            name, arm, seed = ref.split("/")
            p = load_protocol(name)
            rates = read_rates(p, args.out / "tables")
            spec = next(s for s in final_specs(p, rates) if (s.arm, s.seed) == (arm, int(seed)))
        except (ValueError, StopIteration, ProtocolError) as exc:
            raise AuditError(f"--protocol-run {ref}: {exc or 'no such arm and seed'}") from None
        path = run_dir(spec, {})
        from_run(path)
        out.append((f"{arm}_seed{seed}", lambda path=path: from_run(path)))
    if out:
        return out
    overrides = ["progress=false", "name=audit", *CRITERION, *args.overrides]
    return [(m, lambda m=m: trained(m, overrides)) for m in args.models]


def main(argv: list[str] | None = None) -> pd.DataFrame:
    ap = argparse.ArgumentParser(
        prog="python -m experiments.analyse.audit", description=__doc__.splitlines()[0]
    )
    ap.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS))
    ap.add_argument("--alphas", nargs="+", type=float, default=list(ALPHAS))
    ap.add_argument("--modes", nargs="+", default=["layer", "neuron"], choices=["layer", "neuron"])
    ap.add_argument(
        "--metrics", default="full", help="a metrics group of conf/metrics (default: full)"
    )
    ap.add_argument(
        "--tolerance", type=float, default=1e-2, help="relative change counted as invariant"
    )
    ap.add_argument(
        "--function-tolerance",
        type=float,
        default=1e-4,
        help="max |Δlogits| / max |logits| counted as the same function",
    )
    ap.add_argument(
        "--run",
        nargs="+",
        default=[],
        metavar="[LABEL=]DIR",
        help="audit these finished runs (trained to their criterion) instead of --models",
    )
    ap.add_argument(
        "--protocol-run",
        nargs="+",
        default=[],
        metavar="PROTOCOL/ARM/SEED",
        help="audit a protocol's final run (e.g. batch_size/momentum_small/0) instead of --models",
    )
    ap.add_argument(
        "--subset",
        type=int,
        default=None,
        help="measure every metric that takes `subset` on the first N training samples",
    )
    ap.add_argument("--out", type=Path, default=Path("results"))
    ap.add_argument(
        "--tables-only",
        action="store_true",
        help="rebuild the tables from <out>/tables/audit_values.csv without measuring",
    )
    ap.add_argument(
        "overrides",
        nargs="*",
        help="Hydra overrides for training, e.g. runs_dir=runs dataset=synthetic",
    )
    args = ap.parse_args(argv)
    if any(a <= 0 for a in args.alphas):
        ap.error("--alphas: every α must be > 0")
    if args.subset is not None and args.subset < 1:
        ap.error("--subset must be a positive number of samples")
    if args.tables_only:
        rows = pd.read_csv(args.out / "tables" / "audit_values.csv")
        judged = verdicts(rows, args.tolerance, args.function_tolerance)
        write_tables(rows, judged, args.out / "tables")
        print(judged.to_string(index=False))
        return judged
    group = CONF / "metrics" / f"{args.metrics}.yaml"
    if not group.exists():
        known = ", ".join(sorted(f.stem for f in group.parent.glob("*.yaml")))
        ap.error(f"--metrics {args.metrics!r}: no such group in conf/metrics (known: {known})")
    requested = OmegaConf.to_container(OmegaConf.load(group)) or {}
    if args.subset is not None:
        requested = {
            m: {**s, "subset": args.subset} if "subset" in (s or {}) else s
            for m, s in requested.items()
        }
    try:
        models = _models(args)
    except AuditError as exc:
        ap.exit(2, f"error: {exc}\n")
    all_rows, slices = [], []
    for name, load in models:
        cfg, model, data, init = load()
        print(
            f"auditing {name} ({sum(p.numel() for p in model.parameters())} parameters) ...",
            flush=True,
        )
        all_rows += audit_model(
            name, model, data, init, requested, args.alphas, args.modes, cfg.eval_batch_size
        )
        slices.append(slice_rows(model, data, name))
    rows = pd.DataFrame(all_rows)
    judged = verdicts(rows, args.tolerance, args.function_tolerance)
    write_tables(rows, judged, args.out / "tables")
    slices = pd.concat(slices, ignore_index=True)
    write_slices(slices, args.out / "tables")
    print(judged.to_string(index=False))
    print(f"tables in {args.out / 'tables'}; the report draws them (python -m experiments.report)")
    return judged


if __name__ == "__main__":
    main()
