"""One configuration schema: the typed shape of a run, a protocol and a study, as dataclasses.

OmegaConf checks a file or a composed config against its dataclass: a key the schema does not have,
a value of another type, a required key left out. What OmegaConf cannot say (ranges, choices that
depend on another key, rules across keys) stays with the project's checks: :mod:`experiments.checks`
for a run, :mod:`experiments.plan` for a protocol, :mod:`experiments.study` for a study and
:func:`validate_rule` for a decision rule. Every failure is one line that names
the key (:func:`experiments.errors.config_error_line`).

The run schema is composed by Hydra: ``conf/config.yaml`` lists ``run_schema`` first among its
defaults (it is registered in Hydra's ConfigStore when :mod:`experiments` is imported), so a wrong
type on the command line is refused while composing, and :func:`check_run` checks a config that was
not composed from ``conf/`` (a run's saved ``config.yaml``) the same way. Protocols and studies are
not composed by Hydra: :func:`typed` merges a file into its schema with ``OmegaConf.merge``.

Nothing here changes a value that a run id hashes (:func:`experiments.store.run_id`):

- numbers that may be written as integers are ``int | float`` (OmegaConf keeps either as written; a
  ``float`` field would turn ``lr: 1`` into ``1.0``, another run id);
- the schema's values are never substituted into what is hashed: :func:`check_run` only validates,
  and :func:`typed` returns the keys a file wrote (not the defaults the schema fills in), each as
  OmegaConf typed it, so a protocol or study reads as it did before;
- no key is added to a run: the run schema has exactly the top-level keys of ``conf/config.yaml``
  (a field that file lacked would put its key into every run's config, another id).
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from experiments.errors import ConfigError, config_error_line

# --- a run ----------------------------------------------------------------------------------------


@dataclass
class RunSchema:
    """The top level of a run's config (``conf/config.yaml``; each key in README's Config reference).

    The groups are open mappings: their keys depend on the option chosen (``optimizer.momentum``
    exists for ``momentum`` and ``sam``, not ``sgd``; ``surface.span`` for ``1d`` only), which one
    dataclass per group cannot say, and per-option schemas would retype values that run ids hash
    (``model.width`` is 100 for the MLP and 1.0 for VGG). ``checks.check_keys`` checks each group's
    keys against its chosen option file; the library validates ``metrics``.

    ``name``, ``data_dir`` and ``runs_dir`` are ``Any``: a ``str`` field would turn ``name=5`` into
    ``"5"``, and a path is refused unless written as one (``checks.path``). The four keys with a
    default were added after runs existed: a saved config without them reads with what those runs
    did. The values themselves live in ``conf/config.yaml`` (the fields' order is the composed
    config's, so that ``config.yaml`` in a run directory reads as before).
    """

    dataset: dict[str, Any] = MISSING
    model: dict[str, Any] = MISSING
    optimizer: dict[str, Any] = MISSING
    metrics: dict[str, Any] | None = MISSING
    surface: dict[str, Any] | None = MISSING
    transform: dict[str, Any] | None = MISSING
    name: Any = MISSING
    seed: int = MISSING
    batch_size: int = MISSING
    lr: int | float = MISSING
    weight_decay: int | float = MISSING
    epochs: int | None = MISSING
    max_steps: int | None = MISSING
    init_from: str | None = None
    start_from: str | None = None
    lr_schedule: str = MISSING
    lr_step_milestones: list[int | float] = MISSING
    lr_step_gamma: int | float = MISSING
    lr_scaling: str = MISSING
    base_batch_size: int = MISSING
    train_until_loss: int | float | None = MISSING
    criterion_every_samples: int = MISSING
    criterion_samples: int | None = MISSING
    drop_last: bool = MISSING
    device: str = MISSING
    eval_batch_size: int = MISSING
    progress: bool = MISSING
    data_dir: Any = MISSING
    runs_dir: Any = MISSING
    force: bool = MISSING
    save_epochs: list[int] = MISSING
    checkpoint_every: int = MISSING
    checkpoint_seconds: int | float = 0
    eval_every: int | str = 1  # "auto" or a number of epochs
    threads: int | None = None
    track_sharpness_every: int = MISSING
    track_sharpness_samples: int = MISSING


NOT_A_SETTING = "not a setting of this project (see README, Config reference)"
GROUPS = ("dataset", "model", "optimizer", "metrics", "surface", "transform")


def check_run(values: Mapping[str, Any]) -> dict[str, Any]:
    """A resolved run config checked against :class:`RunSchema` (ConfigError naming the key), as
    the schema types it, the defaults of older configs filled in. ``values`` itself is left as it
    is: it is what the run id hashes. Hydra's own ``hydra`` node is not the run's.

    The schema asks of a group only that it be a mapping, so a group's contents are not passed
    through OmegaConf's merge (a study's 45 measures took 40 ms of it) but kept as they are."""
    own = {k: v for k, v in values.items() if k != "hydra"}
    shallow = {k: {} if k in GROUPS and isinstance(v, Mapping) else v for k, v in own.items()}
    run = typed(RunSchema, shallow, "", ConfigError, as_written=False, unknown=NOT_A_SETTING)
    return {**run, **{k: own[k] for k in GROUPS if isinstance(own.get(k), Mapping)}}


# --- a decision rule ------------------------------------------------------------------------------


class Direction(enum.Enum):
    """The claimed sign of a − b."""

    greater = "greater"
    less = "less"


@dataclass
class RulePart:
    """One tested part of a claim (:mod:`experiments.analyse.verdicts`): exactly one of ``margin`` and
    ``margin_ratio`` (a rule across the two keys, :func:`validate_rule`)."""

    quantity: str = MISSING
    direction: Direction = MISSING
    margin: int | float | None = None
    margin_ratio: int | float | None = None


@dataclass
class Rule(RulePart):
    """A claim's decision rule: the effect and, under ``mechanism``, the measure the claim is about.
    ``mechanism`` must be written, ``null`` for a claim with none."""

    hypothesis: str = MISSING
    mechanism: RulePart | None = MISSING


# --- a protocol -----------------------------------------------------------------------------------


class Scaling(enum.Enum):
    none = "none"
    sqrt = "sqrt"  # x sqrt(B / B_arm), Hoffer et al. 2017


@dataclass
class LrFrom:
    """An arm's rate taken from another arm of the protocol, x ``factor`` (> 0)."""

    arm: str = MISSING
    factor: int | float = 1.0
    scaling: Scaling = Scaling.none


@dataclass
class ArmKeys:
    """The keys of an arm that the protocol resolves itself; the arm's other keys are run overrides
    (``model.batch_norm: true``), an open mapping checked when the run's config is composed. Which
    of these an arm may combine is :func:`experiments.plan.check_protocol`'s."""

    same_as: str | None = None  # "<protocol>/<arm>": the arm IS that protocol's arm (its runs)
    lr_from: LrFrom | None = None
    steps_from: str | None = None  # max_steps = the steps that arm's run of the same seed trained
    init_from: str | None = None  # start from that arm's final weights of the same seed
    fixed_budget: bool = False  # trained for its budget, no criterion


ARM_KEYS = tuple(f.name for f in dataclasses.fields(ArmKeys))


class TuneRule(enum.Enum):
    lowest_val_error_where_all_reached = "lowest_val_error_where_all_reached"


@dataclass
class Tune:
    """The learning-rate search (:mod:`experiments.analyse.tune`): a grid of rates per tuned arm.

    ``seeds`` is ``Any``, like the protocol's: OmegaConf would read the string "2" as the seed 2,
    and a seed written otherwise than as an integer is refused (``plan._check_seeds``). A grid's
    rates are ``Any`` too: OmegaConf 2.3 refuses every value of a list of numbers inside a mapping
    (``dict[str, list[int | float]]``), so ``plan.check_protocol`` checks them (positive numbers,
    increasing, log-spaced)."""

    seeds: Any = MISSING
    rule: TuneRule = MISSING
    grid: dict[str, list[Any]] = MISSING
    reach_within: int | float = 1.0  # a fraction of the step budget, in (0, 1]


@dataclass
class Pair:
    """Two arms whose runs of each seed are measured together (:mod:`experiments.pairs`)."""

    name: str = MISSING
    a: str = MISSING
    b: str = MISSING
    points: int = 21
    subset: int | None = 4000
    test: bool = False


class Kind(enum.Enum):
    paired = "paired"  # a − b over paired seeds
    kendall_tau = "kendall_tau"  # a rank correlation of x and y over every model of ``arms``
    interaction = "interaction"  # (a[0] − a[1]) − (b[0] − b[1])


@dataclass
class Comparison:
    """One claim. ``a`` and ``b`` are an arm each (``paired``) or two arms each (``interaction``),
    which one type cannot say: ``Any``, and which the kind needs is ``plan.check_protocol``'s."""

    name: str = MISSING
    rule: Rule = MISSING
    kind: Kind = Kind.paired
    a: Any = None
    b: Any = None
    arms: list[str] | None = None  # kendall_tau
    x: str | None = None  # kendall_tau
    y: str | None = None  # kendall_tau
    n_boot: int = 1000  # kendall_tau: bootstrap resamples of whole seeds
    caveat: str = ""  # a sentence the report prints beside the verdict


@dataclass
class Full:
    """Overrides for the full scale (``load_protocol(..., "full")``): of ``base``, of arms, and of
    the search's grids."""

    base: dict[str, Any] = field(default_factory=dict)
    arms: dict[str, dict[str, Any]] = field(default_factory=dict)
    tune: dict[str, list[Any]] = field(default_factory=dict)  # see Tune.grid


@dataclass
class FrozenCode:
    """The code hashes (:mod:`experiments.code_version`) a robustness stage was frozen with."""

    training: str | None = None
    measuring: str | None = None


@dataclass
class MatchedRate:
    """An arm's rate in a condition: ``arm``'s chosen rate times ``factor`` (no search)."""

    arm: str = MISSING
    factor: float = MISSING


@dataclass
class RobustCondition:
    """One condition of a robustness block (:mod:`experiments.conditions`, issue 26): ``base``
    overrides every arm's run; ``search_seeds`` searches the rate again on the protocol's grid with
    ``reach_within`` (default: the protocol's); ``rates`` takes an arm's rate from another's;
    ``budget_factor`` scales the finals' step budget; ``seeds`` are the final seeds. ``why``: the
    sentence the report gives for it."""

    name: str = MISSING
    seeds: list[int] = MISSING
    why: str = MISSING
    base: dict[str, Any] = field(default_factory=dict)
    search_seeds: list[int] = field(default_factory=list)
    reach_within: float | None = None
    rates: dict[str, MatchedRate] = field(default_factory=dict)
    budget_factor: float = 1.0


@dataclass
class Robustness:
    """Each named comparison read again with one choice changed (:mod:`experiments.robust`, issue
    26), outside the Holm family.

    ``seeds``: the rate grid's paired seeds (×1 is the final runs of those seeds);
    ``rate_multipliers``: each arm's chosen rate times these (×1 skipped, ×2 only where the search
    found it eligible); ``metrics``: the protocol's measures taken at every grid point and endpoint;
    ``endpoint_factor``: each final run continued to this times its criterion and measured again
    (null: no second endpoint); ``budget_endpoint``: each final run also continued to its arm's
    whole step budget with no criterion (a fixed number of steps) and measured; ``frozen_code``: the
    only code whose records the tables read; ``alpha``: the label's threshold; ``conditions``: the conditions that choose the rate otherwise
    or hold the schedule constant (:class:`RobustCondition`)."""

    comparisons: list[str] = MISSING
    seeds: Any = MISSING  # see Tune.seeds
    rate_multipliers: list[int | float] = field(default_factory=list)
    metrics: list[str] = field(default_factory=list)
    endpoint_factor: float | None = None
    budget_endpoint: bool = False
    frozen_code: FrozenCode | None = None
    alpha: float = 0.05
    conditions: list[RobustCondition] = field(
        default_factory=list, metadata={"label": "{field}[{name}]"}
    )


@dataclass
class Mechanism:
    """The measures a protocol's mechanism is read on (:mod:`experiments.analyse.mechanism`, issue
    27): ``primary``, one the scale-invariance audit shows rescaling cannot move; ``per_comparison``,
    another primary for a comparison where that one would be circular (ASAM minimises adaptive
    worst-case sharpness); ``secondary``, the measures shown beside it (λmax and Keskar's
    ε-sharpness); ``intervention``, an arm that changes sharpness on purpose (:class:`Intervention`).
    Written before the readings; the family's tests still read the rule's measure."""

    primary: str = MISSING
    per_comparison: dict[str, str] = field(default_factory=dict)
    secondary: list[str] = field(default_factory=list)
    intervention: Intervention | None = None


@dataclass
class Intervention:
    """An arm that changes sharpness on purpose (``arm``) beside a gap between two arms (``large``
    minus ``small``): the analysis reads the share of the test-error gap it closes over the share of
    the primary measure's log gap it closes."""

    arm: str = MISSING
    large: str = MISSING
    small: str = MISSING


@dataclass
class Protocol:
    """A protocol file, ``conf/protocol/<name>.yaml`` (:mod:`experiments.plan`).

    ``arms`` maps each arm to its run overrides and :class:`ArmKeys` (an open mapping, typed key by
    key: :func:`protocol`). ``history`` holds sentences: the changes made after runs began, for the
    report. ``scale`` is set by ``load_protocol``, not written in a file."""

    name: str = MISSING
    base: dict[str, Any] = MISSING
    arms: dict[str, dict[str, Any] | None] = MISSING
    seeds: Any = MISSING  # see Tune.seeds
    comparisons: list[Comparison] = field(default=MISSING, metadata={"label": "comparison {name}"})
    deck: str | None = None  # the explanation under test, quoted
    tune: Tune | None = None
    pairs: list[Pair] = field(default_factory=list, metadata={"label": "pairs: {name}"})
    secondary: list[str] = field(default_factory=list)
    derived: dict[str, dict[str, Any]] = field(default_factory=dict)
    full: Full | None = None
    history: list[str] = field(default_factory=list)
    robustness: Robustness | None = None
    mechanism: Mechanism | None = None
    scale: str | None = None


def protocol(raw: Mapping[str, Any], where: str, error: type[Exception]) -> dict[str, Any]:
    """A protocol file checked against :class:`Protocol` and each arm's own keys against
    :class:`ArmKeys` (``error`` naming the key), as written."""
    p = typed(Protocol, raw, where, error)
    for arm, over in (p["arms"] or {}).items():
        own = {k: v for k, v in (over or {}).items() if k in ARM_KEYS}
        if own:
            p["arms"][arm] = {**over, **typed(ArmKeys, own, f"{where}: arms.{arm}", error)}
    return p


# --- a study --------------------------------------------------------------------------------------


@dataclass
class Study:
    """A study file, ``conf/study/<name>.yaml`` (:mod:`experiments.study`): ``axes`` maps each axis
    to its levels, each level label to its run overrides (where ``lr_factor`` multiplies the rate)."""

    name: str = MISSING
    base: dict[str, Any] = MISSING
    axes: dict[str, dict[str, dict[str, Any]]] = MISSING
    seeds: Any = MISSING  # see Tune.seeds
    min_train_acc: int | float = 0.99
    notes: str | None = None


# --- checking a mapping against a schema -----------------------------------------------------------


def typed(
    schema: type,
    raw: Mapping[str, Any],
    where: str,
    error: type[Exception],
    as_written: bool = True,
    unknown: str | None = None,
) -> dict[str, Any]:
    """``raw`` merged into ``schema`` by OmegaConf: an unknown key, a value of another type or a
    missing required key raises ``error`` with one line naming it (prefixed by ``where``;
    ``unknown``: what to say of an unknown key, by default the schema's keys).

    Returns the merged values, enums as their names; ``as_written``: only the keys ``raw`` has, so a
    default the schema fills in never reaches what reads the file."""
    prefix = f"{where}: " if where else ""
    if not isinstance(raw, Mapping):
        raise error(f"{where or 'config'}: expected a mapping, got {raw!r}")
    try:
        merged = OmegaConf.merge(_structured(schema), raw)
        missing = sorted(OmegaConf.missing_keys(merged))
        if not missing:
            _check_lists(merged, schema)
            values = OmegaConf.to_container(merged, resolve=True, enum_to_str=True)
            return _written(values, raw) if as_written else values
        _locate(schema, raw, prefix, error)
        raise error(f"{prefix}{', '.join(missing)}: missing (required)")
    except _ItemError as exc:
        _locate(schema, raw, prefix, error)
        raise error(f"{prefix}{exc}") from None
    except OmegaConfBaseException as exc:
        _locate(schema, raw, prefix, error)
        if not getattr(exc, "full_key", None):  # OmegaConf lost the key: find it one key at a time
            for key, value in raw.items():
                try:
                    OmegaConf.merge(_structured(schema), {key: value})
                except OmegaConfBaseException:
                    raise error(f"{prefix}{key}: {config_error_line(exc, unknown)}") from None
        raise error(prefix + config_error_line(exc, unknown)) from None


@functools.cache
def _structured(schema: type):
    """The schema as an OmegaConf node, made once (``OmegaConf.merge`` copies it)."""
    return OmegaConf.structured(schema)


class _ItemError(Exception):
    """An item of a list that its schema refuses, at the key it says."""


def _check_lists(node: Any, schema: type, at: str = "") -> None:
    """OmegaConf 2.3's merge leaves a mapping or a list inside a list of strings or numbers
    unchecked (``history: [{a: 1}]``), where assigning the list checks each item: every such list
    of ``node`` (a merged ``schema``, at ``at``), at every depth, is assigned again."""
    hints = typing.get_type_hints(schema)
    for f in dataclasses.fields(schema):
        value = node[f.name]
        if value is None:
            continue
        hint = hints[f.name]
        if typing.get_origin(hint) in (typing.Union, types.UnionType):  # X | None: X
            inner = [a for a in typing.get_args(hint) if a is not type(None)]
            hint = inner[0] if len(inner) == 1 else hint
        item = typing.get_args(hint)[0] if typing.get_origin(hint) is list else None
        if item is not None and dataclasses.is_dataclass(item):
            for i, element in enumerate(value):
                _check_lists(element, item, f"{at}{f.name}[{i}].")
        elif item is not None:
            try:
                node[f.name] = OmegaConf.to_container(value)
            except OmegaConfBaseException as exc:
                said = config_error_line(exc).partition(": ")[2]
                raise _ItemError(f"{at}{f.name}[{exc.key}]: {said}") from None
        elif dataclasses.is_dataclass(hint):
            _check_lists(value, hint, f"{at}{f.name}.")


def _locate(schema: type, raw: Mapping[str, Any], prefix: str, error: type[Exception]) -> None:
    """Raise the error of the first faulty item of a list of dataclasses, named by its field's
    ``label`` (``comparison {name}``): OmegaConf's errors inside a list lose the item's place."""
    hints = typing.get_type_hints(schema)
    for f in dataclasses.fields(schema):
        args = typing.get_args(hints[f.name])
        inner = [a for a in args if dataclasses.is_dataclass(a)]  # X | None
        if dataclasses.is_dataclass(hints[f.name]) or (
            inner and typing.get_origin(hints[f.name]) is not list
        ):
            nested = raw.get(f.name)
            if isinstance(nested, Mapping):  # a block of its own (robustness): its lists too
                _locate((inner or [hints[f.name]])[0], nested, f"{prefix}{f.name}.", error)
            continue
        if not (typing.get_origin(hints[f.name]) is list and dataclasses.is_dataclass(args[0])):
            continue
        for i, item in enumerate(raw.get(f.name) if isinstance(raw.get(f.name), list) else []):
            name = item.get("name") if isinstance(item, Mapping) else None
            label = f.metadata.get("label", "{field}[{i}]") if name else "{field}[{i}]"
            typed(args[0], item, prefix + label.format(field=f.name, i=i, name=name), error)


def _written(values: Any, raw: Any) -> Any:
    """``values`` restricted to the keys ``raw`` has, at every depth."""
    if isinstance(raw, Mapping) and isinstance(values, Mapping):
        return {k: _written(values[k], v) for k, v in raw.items()}
    if isinstance(raw, list) and isinstance(values, list):
        return [_written(v, r) for v, r in zip(values, raw, strict=True)]
    return values


# Registered for Hydra: conf/config.yaml composes a run on run_schema; the protocol and study
# schemas are registered too, so that Hydra lists every schema of the project (`--info`), though
# their files are read by typed(), not composed.
_STORE = ConfigStore.instance()
_STORE.store(name="run_schema", node=RunSchema)
_STORE.store(name="protocol_schema", node=Protocol)
_STORE.store(name="study_schema", node=Study)


# --- a decision rule: what its schema cannot say ---------------------------------------------------
# (here, beside the schema, so that the plan checks a protocol's rules without importing the
# analysis that applies them)


def _check_part(spec: Mapping, where: str) -> None:
    """What a rule part's schema cannot say: exactly one of its two margins, and its value."""
    given = [k for k in ("margin", "margin_ratio") if k in spec]
    if len(given) != 1:
        raise ValueError(f"{where}: give exactly one of 'margin' and 'margin_ratio', got {given}")
    value = spec[given[0]]
    if value is None or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{where}: {given[0]} must be a positive finite number, got {value!r}")
    if not spec["quantity"]:
        raise ValueError(f"{where}: quantity must be a non-empty string, got {spec['quantity']!r}")


def validate_rule(rule: Mapping) -> None:
    """Raise ValueError with a one-line message if ``rule`` is malformed (see the module docstring):
    its keys and their types are :class:`Rule`'s, checked by OmegaConf."""
    check_rule_values(typed(Rule, rule, "decision rule", ValueError))


def check_rule_values(rule: Mapping) -> None:
    """What a rule's schema cannot say, for a rule the schema has typed (a protocol's are)."""
    if not rule["hypothesis"].strip():
        raise ValueError("decision rule: hypothesis must be a non-empty string")
    _check_part(rule, "decision rule")
    if rule["mechanism"] is not None:
        _check_part(rule["mechanism"], "decision rule: mechanism")
