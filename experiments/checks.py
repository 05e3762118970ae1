"""Validation of a resolved config before anything is trained or written: what the run schema
(:class:`experiments.schema.RunSchema`, which OmegaConf checks for unknown keys, types and missing
keys) cannot say. Ranges and allowed values, rules across keys (``epochs`` null with
``max_steps``), and the keys of each config group, which depend on the option chosen.

Each failure is a :class:`ConfigError` whose message is one line naming the key and the allowed
values or range, so the command line can print it and exit non-zero with no run directory left.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

import flatness
from experiments.budget import full_epochs
from experiments.continuation import check_shortcut
from experiments.errors import ConfigError
from experiments.landscape import SURFACE_KINDS
from experiments.optim import BASE_OPTIMIZERS, LR_SCALINGS, LR_SCHEDULES
from experiments.schema import RunSchema, check_run
from experiments.transform import TRANSFORMS
from flatness.registry import SEED_MAX


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def number(
    cfg: Mapping,
    key: str,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    integer: bool = False,
    prefix: str = "",
) -> None:
    """Check that ``cfg[key]`` is a finite number (an integer if asked) within the given bounds:
    NaN and infinity are refused here, since every comparison with NaN is false."""
    value = cfg.get(key)
    kind = "an integer" if integer else "a finite number"
    lo = "" if low is None else f"{'>' if low_open else '>='} {low}"
    hi = "" if high is None else f"{'<' if high_open else '<='} {high}"
    rng = " and ".join(x for x in (lo, hi) if x)
    expected = f"{kind}{' ' + rng if rng else ''}"
    if not (_is_int(value) if integer else _is_number(value) and math.isfinite(value)):
        raise ConfigError(f"{prefix}{key}: expected {expected} (got {value!r})")
    if low is not None and (value <= low if low_open else value < low):
        raise ConfigError(f"{prefix}{key}: expected {expected} (got {value!r})")
    if high is not None and (value >= high if high_open else value > high):
        raise ConfigError(f"{prefix}{key}: expected {expected} (got {value!r})")


def seed(cfg: Mapping, key: str, prefix: str = "") -> None:
    """A seed: an integer every generator seeded from it accepts (numpy's and mnist1d's take
    [0, 2**32 - 1]; the epoch generators mix it into a 64-bit integer)."""
    number(cfg, key, low=0, high=SEED_MAX, integer=True, prefix=prefix)


def path(cfg: Mapping, key: str, *, relative: bool = False) -> None:
    """A path key: a non-empty string of names the file system accepts (no NUL, each at most 255
    bytes); ``relative``: also inside its root (not absolute, no ``..``), like a run's ``name``."""
    value = cfg.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{key}: expected a non-empty path (got {value!r})")
    if "\0" in value:
        raise ConfigError(f"{key}: a path cannot hold a NUL character (got {value!r})")
    parts = Path(value).parts
    if relative and not parts:  # a name of "." is the root itself
        raise ConfigError(f"{key}: expected a path below its root (got {value!r})")
    if long := [p for p in parts if len(p.encode()) > 255]:
        raise ConfigError(f"{key}: the name {long[0][:40]!r}... is longer than 255 bytes")
    if relative and (Path(value).is_absolute() or ".." in parts):
        raise ConfigError(
            f"{key}: expected a path inside runs_dir, without '..' and not absolute (got {value!r})"
        )


def choice(cfg: Mapping, key: str, allowed: tuple[str, ...], prefix: str = "") -> None:
    if cfg.get(key) not in allowed:
        raise ConfigError(f"{prefix}{key}: must be one of {list(allowed)} (got {cfg.get(key)!r})")


CONF = Path(__file__).resolve().parent.parent / "conf"
# The groups whose keys are the union of their option files' keys (metrics: the library validates
# them; model: the builder refuses unknown keys too, but their types are checked here).
TYPED_GROUPS = ("dataset", "model", "optimizer", "surface", "transform")


@functools.cache
def conf_settings() -> tuple[frozenset[str], dict[str, dict[str, dict[str, Any]]]]:
    """The top-level keys of a run (the run schema's) and the config groups, and for each typed
    group the settings of each of its option files (read once)."""
    from omegaconf import OmegaConf

    groups = {d.name for d in CONF.iterdir() if d.is_dir()}
    known = frozenset({f.name for f in dataclasses.fields(RunSchema)} | groups)
    options = {
        group: {
            f.stem: OmegaConf.to_container(OmegaConf.load(f)) or {}
            for f in sorted((CONF / group).glob("*.yaml"))
        }
        for group in TYPED_GROUPS
    }
    return known, options


def _like(value: Any, defaults: list[Any]) -> bool:
    """Whether ``value`` has a type one of the option files gives this key (null is free)."""
    if value is None or any(d is None for d in defaults):
        return True
    for d in defaults:
        if isinstance(d, bool):
            if isinstance(value, bool):
                return True
        elif isinstance(d, numbers.Integral):
            if _is_int(value):
                return True
        elif isinstance(d, numbers.Real):
            if _is_number(value):
                return True
        elif isinstance(d, str | list | dict):
            if isinstance(value, type(d)):
                return True
        else:
            return True
    return False


def check_keys(cfg: Mapping[str, Any]) -> None:
    """Each group key one its chosen option has (a ``+optimizer.foo=1`` typo would otherwise be
    recorded and change the run's id), of a type its option files give it
    (``model.batch_norm=maybe`` is not a boolean). The run schema cannot say this: a group's keys
    depend on the option chosen (its top-level keys are the schema's, checked by OmegaConf)."""
    _, options = conf_settings()
    for group, settings in options.items():
        keys: dict[str, list[Any]] = {}  # every key any option sets, with the values it sets
        for values in settings.values():
            for key, value in values.items():
                keys.setdefault(key, []).append(value)
        chosen = cfg.get(group) or {}
        option = str(chosen.get("name", chosen.get("kind")))
        own = set(settings[option]) if option in settings else set(keys)
        for key, value in chosen.items():
            if key not in own:  # another option's key (optimizer.momentum for sgd) does nothing
                what = f"the {option} {group}" if option in settings else f"the {group} group"
                raise ConfigError(f"{group}.{key}: not a setting of {what} (known: {sorted(own)})")
            if not _like(value, keys[key]):
                raise ConfigError(
                    f"{group}.{key}: expected a value like {keys[key][0]!r} (got {value!r})"
                )


def check_paths(cfg: Mapping[str, Any]) -> None:
    """``name`` stays inside ``runs_dir``; ``data_dir``, if it exists, is a directory."""
    path(cfg, "name", relative=True)
    path(cfg, "runs_dir")
    path(cfg, "data_dir")
    if Path(cfg["data_dir"]).exists() and not Path(cfg["data_dir"]).is_dir():
        raise ConfigError(f"data_dir: {cfg['data_dir']} exists and is not a directory")


def check_config(cfg: Mapping[str, Any]) -> None:
    """Check every top-level knob and the optimizer and metric settings of a resolved config:
    against the run schema first (a mapping that was not composed from ``conf/``, like a run's
    saved config, has not been), then what the schema cannot say."""
    check_run(cfg)
    check_keys(cfg)
    check_paths(cfg)
    number(cfg, "batch_size", low=1, integer=True)
    number(cfg, "lr", low=0, low_open=True)
    if cfg.get("max_steps") is None:
        number(cfg, "epochs", low=0, integer=True)
    else:
        number(cfg, "max_steps", low=1, integer=True)
        if cfg.get("epochs") is not None:
            raise ConfigError(
                f"epochs: must be null when max_steps is set, which alone ends the run (got {cfg['epochs']!r})"
            )
    number(cfg, "weight_decay", low=0)
    init_from = cfg.get("init_from")
    if init_from is not None and not Path(init_from).is_file():
        raise ConfigError(f"init_from: expected the path of a weights file, got {init_from!r}")
    if cfg.get("start_from") is not None and Path(cfg["start_from"]).exists():
        # a missing one is no error: the run trains from scratch, the same run (run.py says so)
        check_shortcut(cfg["start_from"], cfg)
    choice(cfg, "lr_schedule", LR_SCHEDULES)
    number(cfg, "lr_step_gamma", low=0, high=1, low_open=True)
    milestones = cfg.get("lr_step_milestones")
    if not all(0 < m < 1 for m in milestones):
        raise ConfigError(
            f"lr_step_milestones: expected a list of fractions in (0, 1) (got {milestones!r})"
        )
    choice(cfg, "lr_scaling", LR_SCALINGS)
    number(cfg, "base_batch_size", low=1, integer=True)
    if cfg.get("train_until_loss") is not None:
        number(cfg, "train_until_loss", low=0, low_open=True)
    number(cfg, "criterion_every_samples", low=1, integer=True)
    if cfg.get("criterion_samples") is not None:
        number(cfg, "criterion_samples", low=1, integer=True)
    seed(cfg, "seed")
    number(cfg, "eval_batch_size", low=1, integer=True)
    number(cfg, "checkpoint_every", low=1, integer=True)
    if "checkpoint_seconds" in cfg:
        number(cfg, "checkpoint_seconds", low=0)
    every = cfg.get("eval_every", "auto")
    if every != "auto" and not (_is_int(every) and every >= 1):
        raise ConfigError(f"eval_every: expected 'auto' or an integer >= 1 (got {every!r})")
    if cfg.get("threads") is not None:
        number(cfg, "threads", low=1, integer=True)
    number(cfg, "track_sharpness_every", low=0, integer=True)
    number(cfg, "track_sharpness_samples", low=1, integer=True)
    save_epochs = cfg.get("save_epochs")
    if not all(e >= 1 for e in save_epochs):
        raise ConfigError(f"save_epochs: expected a list of epochs >= 1 (got {save_epochs!r})")
    check_device(cfg.get("device"))
    check_dataset(cfg["dataset"])
    check_optimizer(cfg["optimizer"])
    check_metrics(cfg.get("metrics") or {})
    check_surface(cfg.get("surface") or {"kind": "none"})
    check_transform_settings(cfg.get("transform") or {"kind": "none"})


def check_device(device: Any) -> None:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N``; a CUDA device must exist."""
    if not (
        device in ("auto", "cpu", "cuda") or (device.startswith("cuda:") and device[5:].isdigit())
    ):
        raise ConfigError(
            f"device: must be one of ['auto', 'cpu', 'cuda', 'cuda:N'] (got {device!r})"
        )
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(
                f"device: {device!r} was asked for but CUDA is not available; use device=auto or cpu"
            )
        index = int(device[5:]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            raise ConfigError(
                f"device: {device!r} does not exist ({torch.cuda.device_count()} CUDA devices)"
            )


def resolve_device(device: str) -> torch.device:
    """``auto`` → CUDA when present, else CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def check_dataset(ds: Mapping[str, Any]) -> None:
    """Numbers in the dataset group (unknown dataset names are reported by the builder)."""
    p = "dataset."
    name = ds.get("name")
    if name == "mnist1d":
        number(ds, "num_samples", low=10, integer=True, prefix=p)
        number(ds, "train_split", low=0, high=1, low_open=True, high_open=True, prefix=p)
        seed(ds, "seed", prefix=p)
    elif name == "synthetic":
        seed(ds, "seed", prefix=p)
        number(ds, "num_classes", low=2, integer=True, prefix=p)
        number(ds, "separation", low=0, prefix=p)
        number(ds, "num_samples_train", low=1, integer=True, prefix=p)
        number(ds, "num_samples_test", low=1, integer=True, prefix=p)
        shape = ds.get("input_shape")
        if not (isinstance(shape, list) and shape and all(_is_int(d) and d >= 1 for d in shape)):
            raise ConfigError(
                f"dataset.input_shape: expected a list of positive integers (got {shape!r})"
            )
    elif "download" in ds and not isinstance(ds["download"], bool):
        raise ConfigError(f"dataset.download: expected true or false (got {ds['download']!r})")
    for key in ("num_train", "num_test"):
        if ds.get(key) is not None:
            number(ds, key, low=1, integer=True, prefix=p)


def check_optimizer(opt: Mapping[str, Any]) -> None:
    p = "optimizer."
    name = opt.get("name")
    base = opt.get("base", name)
    if name in ("sam", "asam"):
        choice(opt, "base", BASE_OPTIMIZERS, prefix=p)
        number(opt, "rho", low=0, low_open=True, prefix=p)
        if name == "asam":
            number(opt, "eta", low=0, prefix=p)
    if base == "momentum":
        number(opt, "momentum", low=0, high=1, high_open=True, prefix=p)
        if not isinstance(opt.get("nesterov"), bool):
            raise ConfigError(
                f"optimizer.nesterov: expected true or false (got {opt.get('nesterov')!r})"
            )
        if opt.get("nesterov") and opt.get("momentum") == 0:
            raise ConfigError("optimizer.nesterov: needs optimizer.momentum > 0")
    if base in ("adam", "adamw"):
        betas = opt.get("betas")
        if not (
            isinstance(betas, list)
            and len(betas) == 2
            and all(_is_number(b) and 0 <= b < 1 for b in betas)
        ):
            raise ConfigError(f"optimizer.betas: expected two numbers in [0, 1) (got {betas!r})")
        number(opt, "eps", low=0, low_open=True, prefix=p)


def check_metrics(metrics: Mapping[str, Any], parameter_count: int | None = None) -> None:
    """Every metric name must be registered and every setting known and in range; the library's
    :func:`flatness.validate` holds the rules, this only turns its error into a ConfigError."""
    try:
        flatness.validate(metrics, num_params=parameter_count)
    except (KeyError, ValueError) as exc:
        message = str(exc.args[0] if exc.args else exc)
        if not str(message).startswith("metrics."):
            message = f"metrics: {message}"
        raise ConfigError(message) from None


def _span(cfg: Mapping, key: str, prefix: str) -> None:
    span = cfg.get(key)
    if not (
        isinstance(span, list)
        and len(span) == 2
        and all(_is_number(v) and math.isfinite(v) for v in span)
        and span[0] < span[1]
    ):
        raise ConfigError(
            f"{prefix}{key}: expected [min, max], finite, with min < max (got {span!r})"
        )


def check_surface(surface: Mapping[str, Any]) -> None:
    """Resolution, ranges, normalisation, BN policy, engine and plot names of the surface group."""
    p = "surface."
    choice(surface, "kind", SURFACE_KINDS, prefix=p)
    kind = surface["kind"]
    if kind == "none":
        return
    # imported only for a surface: flatness.plot loads matplotlib (0.4 s of every run otherwise)
    from flatness.directions import IGNORE, NORMALIZATIONS
    from flatness.plot import KINDS_2D
    from flatness.surface import BN_POLICIES, ENGINES, PRECISIONS

    number(surface, "points", low=2, integer=True, prefix=p)
    for key in ("x_points", "y_points"):
        if surface.get(key) is not None:
            number(surface, key, low=2, integer=True, prefix=p)
    if kind == "1d":
        _span(surface, "span", p)
    elif kind == "2d":
        _span(surface, "x_span", p)
        _span(surface, "y_span", p)
    else:
        number(surface, "every", low=1, integer=True, prefix=p)
        number(surface, "margin", low=0, low_open=True, prefix=p)
    if kind != "pca":
        choice(surface, "normalization", NORMALIZATIONS, prefix=p)
        seed(surface, "seed", prefix=p)
    choice(surface, "ignore", IGNORE, prefix=p)
    choice(surface, "bn_policy", BN_POLICIES, prefix=p)
    choice(surface, "engine", ENGINES, prefix=p)
    choice(surface, "precision", PRECISIONS, prefix=p)
    number(surface, "bn_samples", low=1, integer=True, prefix=p)
    if surface.get("subset") is not None:
        number(surface, "subset", low=1, integer=True, prefix=p)
    allowed = ("line",) if kind == "1d" else KINDS_2D
    plots = surface.get("plots")
    if not isinstance(plots, list) or not all(name in allowed for name in plots):
        raise ConfigError(f"{p}plots: expected a list of {list(allowed)} (got {plots!r})")
    if surface.get("engine") == "vmap" and surface.get("bn_policy") == "recompute":
        raise ConfigError(
            f"{p}engine: 'vmap' supports bn_policy=frozen only; use engine=loop or auto"
        )


def check_transform_settings(transform: Mapping[str, Any]) -> None:
    """α > 0, layer indices, mode and tolerance of the transform group (the model is checked later)."""
    p = "transform."
    choice(transform, "kind", TRANSFORMS, prefix=p)
    if transform["kind"] == "none":
        return
    number(transform, "alpha", low=0, low_open=True, prefix=p)
    choice(transform, "mode", ("layer", "neuron"), prefix=p)
    number(transform, "spread", low=0, prefix=p)
    seed(transform, "seed", prefix=p)
    number(transform, "tolerance", low=0, low_open=True, prefix=p)
    layers = transform.get("layers")
    want = 2 if transform["mode"] == "layer" else 1
    if not (
        isinstance(layers, list)
        and len(layers) == want
        and all(_is_int(i) and i >= 0 for i in layers)
    ):
        shape = "[k, k+1]" if want == 2 else "[k]"
        raise ConfigError(
            f"transform.layers: expected {shape} for mode={transform['mode']} (got {layers!r})"
        )


def check_against_data(cfg: Mapping[str, Any], num_train: int) -> None:
    """Checks that need the dataset's size."""
    if cfg["batch_size"] > num_train:
        raise ConfigError(
            f"batch_size: expected an integer in [1, {num_train}] (the training set size); got {cfg['batch_size']}"
        )
    if cfg.get("save_epochs"):
        last = full_epochs(cfg.get("epochs"), cfg.get("max_steps"), num_train, cfg["batch_size"],
                           cfg["drop_last"])  # fmt: skip
        if beyond := [e for e in cfg["save_epochs"] if e > last]:
            raise ConfigError(
                f"save_epochs: epoch {beyond[0]} is beyond the budget's {last} whole epochs, so "
                "nothing would be saved there"
            )
