"""A protocol's plan: ``conf/protocol/<name>.yaml`` read and validated, and turned into run
specifications (arm, rate, seed, overrides), their composed configs and run directories, and the
records of their runs, checked against the runs they are read for.

A protocol states before any run what is compared and how it is judged: ``base`` overrides common to
every arm, the ``arms``, the learning-rate search (``tune``: a log grid per arm, search seeds, the
rule), the final ``seeds`` and the ``comparisons``, each with its decision rule in the format of
:mod:`experiments.analyse.verdicts`. Every arm is trained to the same training cross-entropy under a step
budget, its rate chosen on validation only (:mod:`experiments.analyse.tune`), and its seeds are paired with
the other arms' (seed s: the same initial weights and batch order). Running the specifications is
:mod:`experiments.execute`'s; the command line is :mod:`experiments.protocol`'s.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from experiments import records, schema, store
from experiments.config import RunConfig
from experiments.errors import ProtocolError
from experiments.schema import ARM_KEYS, check_rule_values
from flatness.registry import SEED_MAX

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "conf"
RULE = schema.TuneRule.lowest_val_error_where_all_reached.value
MIN_GRID = 5
SCALES = ("quick", "full")


# --- the protocol -------------------------------------------------------------------------------------


def load_protocol(ref: str | Path, scale: str = "quick") -> dict[str, Any]:
    """A protocol by name (``conf/protocol/<name>.yaml``) or path, validated. ``scale="full"``
    applies the protocol's ``full`` block (overrides of ``base`` and of arms, sized for one GPU) and
    names it ``<name>_full``, so its runs, learning-rate table and verdicts are its own."""
    path = Path(ref)
    if not path.exists():
        path = CONF / "protocol" / f"{ref}.yaml"
    if not path.exists():
        raise ProtocolError(f"no protocol {ref!r} (looked for {path})")
    if scale not in SCALES:
        raise ProtocolError(f"scale must be one of {SCALES}, got {scale!r}")
    text = path.read_text()
    return copy.deepcopy(_load_protocol(str(path), text, scale))


@functools.lru_cache(maxsize=64)
def _load_protocol(path: str, text: str, scale: str) -> dict[str, Any]:
    """A protocol file read and checked once per text and scale: every same_as arm of every seed
    reads its source protocol, and OmegaConf's checks take tens of milliseconds a file."""
    raw = OmegaConf.to_container(OmegaConf.create(text), resolve=True)
    p = schema.protocol(raw, path, ProtocolError)  # the whole file, ``full`` included
    full = p.pop("full", None)
    where = path
    if scale == "full":
        if full is None:
            raise ProtocolError(f"{path}: has no `full` block")
        p["name"] = f"{p['name']}_full"
        p["base"] = {**p["base"], **full.get("base", {})}
        for arm, over in full.get("arms", {}).items():
            if arm not in p["arms"]:
                raise ProtocolError(f"{path}: full.arms.{arm} is not an arm")
            p["arms"][arm] = {**(p["arms"][arm] or {}), **over}
        if p.get("tune"):
            p["tune"] = {**p["tune"], "grid": {**p["tune"]["grid"], **full.get("tune", {})}}
        where = f"{path} (full)"
        p = schema.protocol(p, where, ProtocolError)  # the arms as the full block left them
    p["scale"] = scale
    _check_values(p, where)
    return p


# Arm keys the protocol resolves itself (the rest are run overrides; their types: schema.ArmKeys):
#   same_as: "<protocol>/<arm>"   the arm IS that protocol's arm (its runs and rate); this protocol's
#                                 base.metrics are measured on them (metrics never change a run id)
#   lr_from: {arm, factor, scaling}  the rate of another arm of this protocol x factor, x sqrt(B/B_arm)
#                                 with scaling sqrt (Hoffer et al. 2017); the arm is not tuned
#   steps_from: <arm>             max_steps = the steps that arm's run of the same seed trained
#   init_from: <arm>              start from that arm's final weights of the same seed (a continuation)
#   fixed_budget: true            trained for its budget, no criterion: "reached" means the budget ran out


def arm_keys(p: Mapping[str, Any], arm: str) -> dict[str, Any]:
    return {k: v for k, v in (p["arms"][arm] or {}).items() if k in ARM_KEYS}


def tuned_arms(p: Mapping[str, Any]) -> list[str]:
    """Arms whose rate the search chooses (not taken from another arm or protocol)."""
    return [a for a in p["arms"] if not {"same_as", "lr_from"} & set(arm_keys(p, a))]


def dependent(p: Mapping[str, Any], arm: str) -> bool:
    """Whether the arm's runs need another arm's finished runs (their steps or weights)."""
    return bool({"steps_from", "init_from"} & set(arm_keys(p, arm)))


def run_refs(p: Mapping[str, Any], arm: str) -> list[str]:
    """The arms whose finished runs this arm's runs need (steps_from, init_from)."""
    keys = arm_keys(p, arm)
    return [keys[k] for k in ("steps_from", "init_from") if k in keys]


def waves(p: Mapping[str, Any]) -> list[list[str]]:
    """The arms in the order their runs can be made: each wave needs only earlier waves' runs."""
    done: set[str] = set()
    remaining, order = list(p["arms"]), []
    while remaining:
        ready = [a for a in remaining if set(run_refs(p, a)) <= done]
        if not ready:
            raise ProtocolError(f"{p['name']}: arms {remaining} depend on each other in a cycle")
        order.append(ready)
        done |= set(ready)
        remaining = [a for a in remaining if a not in ready]
    return order


def source_of(p: Mapping[str, Any], arm: str) -> tuple[dict[str, Any], str] | None:
    """(protocol, arm) a ``same_as`` arm stands for, at this protocol's scale; None otherwise."""
    ref = arm_keys(p, arm).get("same_as")
    if ref is None:
        return None
    name, _, other = str(ref).rpartition("/")  # a protocol's name or path, then its arm
    return load_protocol(name, p.get("scale", "quick")), other


def check_protocol(p: Mapping[str, Any], where: str = "protocol") -> dict[str, Any]:
    """The protocol as its schema types it (:func:`experiments.schema.protocol`: unknown keys,
    types and missing keys are OmegaConf's to refuse), its ranges and the rules across its keys
    checked; ProtocolError naming the first malformed key."""
    p = schema.protocol(p, where, ProtocolError)
    _check_values(p, where)
    return p


def _check_values(p: dict[str, Any], where: str) -> None:
    """What a protocol's schema cannot say: ranges, and the rules across its keys."""

    def fail(msg: str) -> None:
        raise ProtocolError(f"{where}: {msg}")

    _check_seeds(p["seeds"], "seeds", fail)
    if p.get("tune") is not None:
        _check_seeds(p["tune"]["seeds"], "tune.seeds", fail)
    arms, base = p["arms"], p["base"]
    if not arms:
        fail("arms must be a non-empty mapping of arm -> overrides")
    for arm, over in arms.items():
        over = over or {}
        if set(over) & {"lr", "seed", "name"}:
            fail(f"arms.{arm}: lr, seed and name are set by the protocol")
        keys = arm_keys(p, arm)
        if "same_as" in keys:
            if set(over) != {"same_as"} or not all(str(keys["same_as"]).rpartition("/")[::2]):
                fail(f"arms.{arm}: same_as takes '<protocol>/<arm>' and nothing else")
            try:
                other, name = source_of(p, arm)
            except ProtocolError as exc:
                fail(f"arms.{arm}: same_as: {exc}")
            if name not in other["arms"] or source_of(other, name):
                fail(f"arms.{arm}: same_as: {keys['same_as']} is not a trained arm")
            continue
        for key in ("lr_from", "steps_from", "init_from"):
            ref = keys.get(key)
            ref = ref.get("arm") if isinstance(ref, Mapping) else ref
            if key in keys and (ref not in arms or ref == arm):
                fail(f"arms.{arm}: {key} must name another arm of the protocol")
            if key == "lr_from" and key in keys and "lr_from" in arm_keys(p, ref):
                fail(f"arms.{arm}: lr_from must name an arm whose rate is its own")
        if "steps_from" in keys and "max_steps" in over:
            fail(f"arms.{arm}: steps_from sets max_steps; give one of them")
        lr_from = keys.get("lr_from")
        if lr_from is not None and not 0 < lr_from.get("factor", 1.0) < float("inf"):
            fail(f"arms.{arm}: lr_from.factor must be a finite number > 0")
        cfg = {**base, **{k: v for k, v in over.items() if k not in ARM_KEYS}}
        if cfg.get("epochs", 100) is not None or not (cfg.get("max_steps") or "steps_from" in keys):
            fail(f"arms.{arm}: needs a max_steps budget (or steps_from) with epochs: null")
        if keys.get("fixed_budget"):
            if cfg.get("train_until_loss") is not None:
                fail(f"arms.{arm}: a fixed_budget arm has train_until_loss: null")
            continue
        if "steps_from" in keys:
            fail(f"arms.{arm}: steps_from sets a budget: declare the arm fixed_budget: true")
        if cfg.get("train_until_loss") is None:
            fail(f"arms.{arm}: needs train_until_loss")
        every, batch = cfg.get("criterion_every_samples", 4000), cfg.get("batch_size", 128)
        if every % batch:
            fail(f"arms.{arm}: criterion_every_samples {every} is not a multiple of batch {batch}")
    try:
        waves(p)
    except ProtocolError as exc:
        fail(str(exc))
    tuned = tuned_arms(p)
    tune = p.get("tune")
    if not tuned:
        if tune:
            fail("tune: no arm is tuned (every rate is taken from another arm or protocol)")
        _check_comparisons(p, fail)
        return
    if tune is None:
        fail(f"tune: needs seeds, rule ({RULE!r}) and grid for the tuned arms ({', '.join(tuned)})")
    within = tune.get("reach_within", 1.0)
    if not 0 < within <= 1:
        fail(f"tune.reach_within must be a fraction of the step budget in (0, 1], got {within!r}")
    if set(tune["grid"]) != set(tuned):
        fail(f"tune: needs one grid per tuned arm ({', '.join(tuned)})")
    for arm, grid in tune["grid"].items():
        rates = all(isinstance(r, int | float) and not isinstance(r, bool) for r in grid)
        g = np.asarray(grid if rates else [], dtype=float)
        if len(g) < MIN_GRID or (g <= 0).any() or (np.diff(g) <= 0).any():
            fail(f"tune.grid.{arm}: needs >= {MIN_GRID} increasing positive rates")
        if np.ptp(np.diff(np.log(g))) > 0.01 * np.log(g[-1] / g[0]):
            fail(f"tune.grid.{arm}: rates must be log-spaced (a constant ratio)")
    _check_comparisons(p, fail)


def _check_seeds(seeds: Any, key: str, fail) -> None:
    """Paired seeds: at least two distinct integers each generator takes ("2", 2.7 and True are
    not seeds: a YAML string or float would hash into other run ids than the integer)."""
    ok = isinstance(seeds, list) and len(seeds) >= 2 and len(set(map(repr, seeds))) == len(seeds)
    if not ok or not all(type(s) is int and 0 <= s <= SEED_MAX for s in seeds):
        fail(
            f"{key} must be a list of at least two distinct integers in [0, {SEED_MAX}], got {seeds!r}"
        )


def _check_comparisons(p: Mapping[str, Any], fail) -> None:
    arms = p["arms"]
    for pair in p.get("pairs", []):
        if not {pair["a"], pair["b"]} <= set(arms):
            fail(f"pairs: {pair['name']}: a and b must be arms of the protocol, got {pair!r}")
    names = [c["name"] for c in p["comparisons"]]
    if not names or len(set(names)) != len(names):
        fail("every comparison needs a unique name")
    for c in p["comparisons"]:
        kind = c.get("kind", "paired")
        used = c.get("arms") or [] if kind == "kendall_tau" else [c.get("a"), c.get("b")]
        if kind == "interaction":
            a, b = c.get("a"), c.get("b")
            if not (isinstance(a, list) and isinstance(b, list) and len(a) == len(b) == 2):
                fail(f"comparison {c['name']}: an interaction's a and b are two arms each")
            used = a + b
        if not used or not set(map(str, used)) <= set(arms):
            unknown = sorted(str(a) for a in set(map(str, used)) - set(arms)) or "none given"
            fail(f"comparison {c['name']}: arms not in the protocol: {unknown}")
        if kind == "paired" and c["a"] == c["b"]:
            fail(f"comparison {c['name']}: a and b must differ")
        if kind == "kendall_tau" and not (c.get("x") and c.get("y")):
            fail(f"comparison {c['name']}: a kendall_tau comparison needs x and y")
        try:
            check_rule_values(c["rule"])  # typed with the protocol
        except ValueError as exc:
            fail(f"comparison {c['name']}: {exc}")
    _check_mechanism(p, names, fail)
    _check_conditions(p, fail)


def _check_conditions(p: Mapping[str, Any], fail) -> None:
    """A robustness block's conditions: unique names, final seeds among the protocol's (they pair
    with today's runs), search seeds disjoint from them, matched rates from arms of the protocol."""
    r = p.get("robustness") or {}
    if r and not set(r.get("seeds") or []) <= set(p["seeds"]):
        extra = sorted(set(r.get("seeds") or []) - set(p["seeds"]))
        fail(f"robustness.seeds: {extra} are not final seeds (the grid pairs with today's runs, "
             f"x1 being the final runs of these seeds; final seeds: {p['seeds']})")  # fmt: skip
    conditions = r.get("conditions") or []
    names = [c["name"] for c in conditions]
    if len(set(names)) != len(names):
        fail(f"robustness.conditions: names must be unique, got {names}")
    for c in conditions:
        where = f"robustness.conditions[{c['name']}]"
        _check_seeds(c["seeds"], f"{where}.seeds", fail)
        if extra := sorted(set(c["seeds"]) - set(p["seeds"])):
            fail(f"{where}.seeds: {extra} are not final seeds (they pair with today's runs; final "
                 f"seeds: {p['seeds']})")  # fmt: skip
        if c.get("search_seeds"):
            _check_seeds(c["search_seeds"], f"{where}.search_seeds", fail)
            if set(c["search_seeds"]) & set(p["seeds"]):
                fail(f"{where}.search_seeds: must be disjoint from the final seeds")
            if not p.get("tune"):
                fail(f"{where}: a search needs the protocol's tune block (its grid)")
        if set(c.get("base") or {}) & {"lr", "seed", "name"}:
            fail(f"{where}.base: lr, seed and name are set by the protocol")
        for arm, source in (c.get("rates") or {}).items():
            arms = ", ".join(p["arms"])
            if arm not in p["arms"]:
                fail(f"{where}.rates: {arm!r} is not an arm (arms: {arms})")
            if source["arm"] not in p["arms"] or source["arm"] == arm:
                fail(
                    f"{where}.rates.{arm}.arm: {source['arm']!r} must be another arm (arms: {arms})"
                )
            if not 0 < float(source["factor"]) < float("inf"):
                fail(f"{where}.rates.{arm}.factor must be a finite number > 0")
        within = c.get("reach_within")
        if within is not None and not 0 < within <= 1:
            fail(f"{where}.reach_within must be a fraction of the step budget in (0, 1]")
        if not 0 < c.get("budget_factor", 1.0) < float("inf"):
            fail(f"{where}.budget_factor must be a finite number > 0")


def _check_mechanism(p: Mapping[str, Any], names: list[str], fail) -> None:
    """The mechanism block's measures are measured by the protocol, and its comparisons exist."""
    m = p.get("mechanism")
    if not m:
        return
    measured = set(p["base"].get("metrics") or {})
    if unknown := set(m.get("per_comparison") or {}) - set(names):
        fail(f"mechanism.per_comparison: {sorted(unknown)} are not comparisons of the protocol")
    if (i := m.get("intervention")) and not {i["arm"], i["large"], i["small"]} <= set(p["arms"]):
        fail(f"mechanism.intervention: {i} must name three arms of the protocol")
    named = [m["primary"], *(m.get("per_comparison") or {}).values(), *(m.get("secondary") or [])]
    if missing := sorted(set(named) - measured):
        fail(f"mechanism: {missing} are not among the protocol's metrics (base.metrics)")


# --- runs ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Spec:
    """One run of a protocol: arm, rate, seed, and every override that defines it."""

    arm: str
    lr: float
    seed: int
    values: dict[str, Any]

    def overrides(self, common: Mapping[str, Any]) -> list[str]:
        out = []
        for key, value in {**self.values, **common}.items():
            if key == "metrics":  # the whole group, replaced
                out.append("metrics=none")
                out += [f"+metrics.{m}={_fmt(s or {})}" for m, s in value.items()]
            else:
                out.append(f"{key}={_fmt(value)}")
        return out


def _fmt(v: Any) -> str:
    """A value in Hydra's override grammar."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(_fmt(x) for x in v) + "]"
    if isinstance(v, Mapping):
        return "{" + ",".join(f"{k}:{_fmt(x)}" for k, x in v.items()) + "}"
    s = str(v)
    if s and all(ch.isalnum() or ch in "_.-/" for ch in s):
        return s
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _spec(
    p: Mapping[str, Any], arm: str, lr: float, seed: int, base=None, plain=False, **extra: Any
) -> Spec:
    """``plain``: without the keys that only say what to measure on the run (a search run
    measures nothing beyond the core, so its ``surface.*`` settings are dropped with its surface)."""
    base = p["base"] if base is None else base
    over = {k: v for k, v in (p["arms"][arm] or {}).items() if k not in ARM_KEYS}
    if plain:
        base, over = (
            {k: v for k, v in d.items() if not k.startswith("surface.")} for d in (base, over)
        )
    values = {**base, **over, "lr": float(lr), "seed": int(seed), **extra}
    return Spec(arm, float(lr), int(seed), values)


def tune_specs(p: Mapping[str, Any]) -> list[Spec]:
    """Every tuned arm x rate x search seed, under ``<name>_tune``, measuring nothing beyond the core."""
    plain = {
        "name": f"{p['name']}_tune",
        "metrics": {},
        "surface": "none",
        "track_sharpness_every": 0,
    }
    return [
        _spec(p, arm, lr, s, plain=True, **plain)
        for arm in tuned_arms(p)
        for lr in p["tune"]["grid"][arm]
        for s in p["tune"]["seeds"]
    ]


def arm_spec(
    p: Mapping[str, Any],
    arm: str,
    rates: Mapping[str, float],
    seed: int,
    common: Mapping[str, Any] | None = None,
) -> Spec:
    """The final run of one arm and seed. A ``same_as`` arm is the other protocol's run (under its
    name) measuring this protocol's metrics; ``steps_from`` and ``init_from`` read the named arm's
    run of the same seed, which must have finished (``common`` says where runs live)."""
    if found := source_of(p, arm):
        other, name = found
        spec = _spec(other, name, rates[arm], seed, name=other["name"])
        values = {**spec.values, "metrics": p["base"].get("metrics", spec.values.get("metrics"))}
        return Spec(arm, spec.lr, spec.seed, values)
    keys, extra = arm_keys(p, arm), {}
    for key in ("steps_from", "init_from"):
        if key not in keys:
            continue
        source = arm_spec(p, keys[key], rates, seed, common)
        result, folder = load_result(source, common or {})
        if result is None or "steps_trained" not in result or not (folder / "final.pt").exists():
            raise ProtocolError(
                f"{p['name']}/{arm} seed {seed}: {key} needs the finished run of {keys[key]} "
                f"({folder}): run `python -m experiments.protocol run {p['name']}`"
            )
        if key == "steps_from":
            extra["max_steps"] = int(result["steps_trained"])
        else:
            extra["init_from"] = str(folder / "final.pt")
    return _spec(p, arm, rates[arm], seed, name=p["name"], **extra)


def final_specs(
    p: Mapping[str, Any],
    rates: Mapping[str, float],
    common: Mapping[str, Any] | None = None,
    arms: list[str] | None = None,
) -> list[Spec]:
    """Every arm (or the given ones) x final seed at the arm's chosen rate, under ``<name>``."""
    return [
        arm_spec(p, arm, rates, s, common)
        for arm in (p["arms"] if arms is None else arms)
        for s in p["seeds"]
    ]


_COMPOSED: dict[tuple[str, ...], Any] = {}


def compose_config(overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def configure(spec: Spec, common: Mapping[str, Any]):
    """The run's composed config. Composing costs ~0.3 s, so it is done once per arm and the rate
    and seed are set on a copy (the same config as composing with ``lr=`` and ``seed=``)."""
    key = tuple(Spec(spec.arm, 0.0, 0, {**spec.values, "lr": 0.0, "seed": 0}).overrides(common))
    if key not in _COMPOSED:
        try:
            _COMPOSED[key] = compose_config(list(key))
        except Exception as exc:
            raise ProtocolError(f"arm {spec.arm}: {str(exc).splitlines()[0]}") from None
    cfg = copy.deepcopy(_COMPOSED[key])
    cfg.lr, cfg.seed = spec.lr, spec.seed
    return cfg


def run_dir(spec: Spec, common: Mapping[str, Any]) -> Path:
    """Where the runner puts this run (the run id hashes what determines its weights)."""
    rc = RunConfig.from_hydra(configure(spec, common))
    return rc.runs_root / store.run_id(rc.values)


def load_result(spec: Spec, common: Mapping[str, Any]) -> tuple[dict[str, Any] | None, Path]:
    """The record of ``spec``'s run (None where it has none yet) and its directory; a finished
    record is checked against the run it is read for (:mod:`experiments.records`)."""
    folder = run_dir(spec, common)
    result = store.load_result(folder / "result.json")
    if result is not None and "stop_reason" in result:  # a finished record: it must be this run's
        try:
            records.check(result, folder, spec.seed)
        except records.RecordError as exc:
            raise ProtocolError(
                f"{exc}; remove it and run the same command to train the run"
            ) from None
    return result, folder
