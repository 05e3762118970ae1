"""The configuration schema (experiments/schema.py): a run, a protocol and a study each refuse a key
they do not have, a value of another type and a missing key with one line naming the key; and the
schema changes nothing a run id hashes, nor what a protocol or study file says."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import pandas as pd
import pytest
import yaml
from omegaconf import OmegaConf

from experiments import plan as PL
from experiments import store
from experiments import study as S
from experiments.checks import check_config
from experiments.command_line import precheck
from experiments.config import RunConfig
from experiments.errors import ConfigError, ProtocolError
from experiments.schema import RunSchema
from tests.conftest import CONF, ROOT, TINY

PROTOCOL = yaml.safe_load(Path(__file__).with_name("protocol_tiny.yaml").read_text())
STUDY = {
    "name": "tinystudy",
    "base": {"dataset": "synthetic", "model": "mlp", "epochs": None, "max_steps": 60},
    "axes": {"opt": {"sgd": {"optimizer": "sgd", "lr": 0.2}, "m": {"optimizer": "momentum"}}},
    "seeds": [0, 1],
}


def one_line(message: str, key: str) -> str:
    assert "\n" not in message and key in message, message
    return message


# --- a run ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "override, said",
    [
        ("checkpoint_every=often", "checkpoint_every: expected an integer (got often"),
        ("progress=maybe", "progress: expected true or false (got maybe"),
        ("lr=fast", "lr: expected a number (got fast"),
        ("seed=null", "seed: may not be null"),
        ("save_epochs=[1,2.5]", "save_epochs: expected an integer (got 2.5"),
    ],
)
def test_composing_a_run_refuses_a_value_of_another_type(override, said):
    """Hydra composes the run on the schema: the command line's one line names the key."""
    assert precheck([*TINY, override]).startswith(said)


def saved(make_cfg) -> dict:
    """A run's config as its run directory saves it (plain YAML, not composed from conf/)."""
    return OmegaConf.to_container(make_cfg(*TINY), resolve=True)


@pytest.mark.parametrize(
    "change, said",
    [
        (lambda c: c.update(colour=1), "colour: not a setting of this project"),
        (lambda c: c.pop("batch_size"), "batch_size: missing (required)"),
        (lambda c: c.update(drop_last="maybe"), "drop_last: expected true or false"),
        (lambda c: c.update(epochs=2.5), "epochs: expected an integer"),
        (lambda c: c.update(dataset=[1]), "dataset: expected a mapping"),
    ],
)
def test_a_saved_run_config_is_checked_against_the_schema_too(make_cfg, change, said):
    """A config that was not composed (a run directory's, read again by measure) meets the same
    schema: an unknown, missing or mistyped key is one line naming it."""
    values = saved(make_cfg)
    change(values)
    for check in (RunConfig.from_hydra, check_config):
        with pytest.raises(ConfigError) as err:
            check(values)
        assert one_line(str(err.value), said.split(":")[0]).startswith(said)


def test_an_older_saved_config_reads_with_the_defaults_of_keys_added_since(make_cfg):
    values = saved(make_cfg)
    for key in ("init_from", "checkpoint_seconds", "eval_every", "threads"):
        del values[key]
    rc = RunConfig.from_hydra(values)
    assert (rc.init_from, rc.checkpoint_seconds, rc.eval_every, rc.threads) == (None, 0, 1, None)
    assert "threads" not in rc.values  # what the run id hashes is the config as saved


def test_the_schema_has_the_configs_keys_in_its_order_and_retypes_no_number(make_cfg):
    """A field the config lacks would add a key to every run (another id), and a ``float`` field
    would turn ``lr=1`` into 1.0 (another id): neither happens."""
    top = OmegaConf.load(CONF / "config.yaml")
    groups = {g for d in top.defaults if not isinstance(d, str) for g, c in d.items() if c}
    fields = [f.name for f in dataclasses.fields(RunSchema)]
    assert set(fields) == set(top) - {"defaults", "hydra"} | groups - {"override hydra/job_logging"}
    values = OmegaConf.to_container(make_cfg(*TINY, "lr=1", "weight_decay=0"), resolve=True)
    assert list(values) == fields
    assert type(values["lr"]) is int and type(values["weight_decay"]) is int
    assert store.run_id(values) != store.run_id({**values, "lr": 1.0})


def test_the_committed_runs_keep_their_ids():
    """Every committed protocol run that is not a continuation (whose id hashes its source run's
    weights) has the id that conf/ and its protocol compose today."""
    runs = pd.read_csv(ROOT / "results" / "tables" / "protocol_runs.csv")
    checked = 0
    for (name, arm), rows in runs.groupby(["protocol", "arm"], sort=False):
        p = PL.load_protocol(name)
        keys = PL.arm_keys(p, arm)
        if "init_from" in keys:
            continue
        for row in rows.itertuples():
            extra = {}
            if "steps_from" in keys:  # max_steps: the steps the source arm's run trained
                source = runs[(runs["protocol"] == name) & (runs["arm"] == keys["steps_from"])]
                steps = source.loc[source["seed"] == row.seed, "steps_trained"]
                extra["max_steps"] = int(steps.iloc[0])
            if PL.source_of(p, arm):
                spec = PL.arm_spec(p, arm, {arm: float(row.lr)}, int(row.seed))
            else:
                spec = PL._spec(p, arm, float(row.lr), int(row.seed), name=p["name"], **extra)
            assert PL.run_dir(spec, {}).name == Path(row.run_dir).name, (name, arm, row.seed)
            checked += 1
    assert checked >= 250


# --- a protocol -----------------------------------------------------------------------------------


def load(tmp_path, protocol) -> None:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(protocol))
    PL.load_protocol(path)


@pytest.mark.parametrize(
    "change, said",
    [
        (lambda p: p.update(colour=1), "colour: unknown key (known: arms, base,"),
        (lambda p: p["tune"].update(seed=[1, 2]), "tune.seed: unknown key"),
        (lambda p: p["tune"].update(reach_within="half"), "tune.reach_within: expected a number"),
        (lambda p: p.update(history="a sentence"), "history: expected a list"),
        (lambda p: p.update(history=[{"a": 1}]), "history[0]: expected a string"),
        (lambda p: p.pop("comparisons"), "comparisons: missing (required)"),
        (lambda p: p["tune"].pop("grid"), "tune.grid: missing (required)"),
        (lambda p: p["comparisons"][0]["rule"].update(direction="up"),
         "comparison batch: rule.direction: Invalid value 'up', expected one of [greater, less]"),
        (lambda p: p["comparisons"][1]["rule"].pop("mechanism"),
         "comparison momentum: rule.mechanism: missing (required)"),
        (lambda p: p["comparisons"][2].update(kind="pairwise"), "comparison slices: kind:"),
        (lambda p: p["arms"]["heavy"].update(lr_from={"arm": "small", "scale": "sqrt"}),
         "arms.heavy: lr_from.scale: unknown key (known: arm, factor, scaling)"),
        (lambda p: p["arms"]["small"].update(fixed_budget="maybe"),
         "arms.small: fixed_budget: expected true or false"),
        (lambda p: p.update(robustness={"rate_multiplier": [0.5, 2]}),
         "robustness.rate_multiplier: unknown key"),
    ],
)  # fmt: skip
def test_a_malformed_protocol_file_is_one_line_naming_the_key(tmp_path, change, said):
    protocol = copy.deepcopy(PROTOCOL)
    change(protocol)
    with pytest.raises(ProtocolError) as err:
        load(tmp_path, protocol)
    assert said in one_line(str(err.value), said.split(":")[0])


def test_the_robustness_and_mechanism_blocks_are_typed(tmp_path):
    condition = {"name": "x", "why": "w", "seeds": [0, 1], "base": {"lr_schedule": "constant"}}
    block = {"comparisons": ["c"], "seeds": [0, 1], "rate_multipliers": [0.5, 2],
             "frozen_code": {"training": "abc"}, "conditions": [condition]}  # fmt: skip
    protocol = copy.deepcopy(PROTOCOL)
    measured = next(iter(protocol["base"].get("metrics") or {"lambda_max": {}}))
    protocol["base"]["metrics"] = protocol["base"].get("metrics") or {measured: {}}
    protocol |= {"robustness": block, "mechanism": {"primary": measured}}
    load(tmp_path, protocol)
    for change, said in (
        ({"comparisons": None}, "robustness.comparisons"),
        ({"frozen_code": {"train": "abc"}}, "robustness.frozen_code.train: unknown key"),
        ({"endpoint_factor": "tenth"}, "robustness.endpoint_factor: expected a number"),
        (
            {"conditions": [{**condition, "seeds": "0-1"}]},
            "robustness.conditions\\[x\\]: seeds: expected a list",
        ),
        ({"conditions": [{**condition, "budget": 2}]}, "budget: unknown key"),
    ):
        with pytest.raises(ProtocolError, match=said):
            load(tmp_path, {**protocol, "robustness": {**block, **change}})


@pytest.mark.parametrize("path", sorted((CONF / "protocol").glob("*.yaml")), ids=lambda f: f.stem)
def test_a_protocol_reads_as_its_file_says(path):
    """The schema's defaults never reach what reads a protocol (its tables, the report's
    protocols.json, the search's stamp): the loaded protocol is the file, ``full`` set aside."""
    written = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    written.pop("full", None)
    assert PL.load_protocol(path.stem) == {**written, "scale": "quick"}


# --- a study --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "change, said",
    [
        (lambda s: s.update(colour=1), "colour: unknown key (known: axes, base, min_train_acc,"),
        (lambda s: s.pop("axes"), "axes: missing (required)"),
        (lambda s: s.update(min_train_acc="high"), "min_train_acc: expected a number"),
        (lambda s: s.update(notes=["a", "b"]), "notes: expected a string"),
        (lambda s: s["axes"].update(batch=[64, 128]), "axes.batch: expected a mapping"),
    ],
)
def test_a_malformed_study_file_is_one_line_naming_the_key(tmp_path, change, said):
    study = copy.deepcopy(STUDY)
    change(study)
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    with pytest.raises(ProtocolError) as err:
        S.load_study(path)
    assert said in one_line(str(err.value), said.split(":")[0])


def test_a_study_reads_as_its_file_says():
    path = CONF / "study" / "jiang.yaml"
    assert S.load_study("jiang") == OmegaConf.to_container(OmegaConf.load(path), resolve=True)
