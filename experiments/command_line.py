"""The used-by command's line read before anything runs: Hydra's flags told from overrides, the
config composed once through Hydra's compose API, and Hydra's own errors (an unknown choice, a key
the chosen option does not have, a misspelt key, a malformed override, a list without ``-m``) as one
line that says what to do. ``python -m experiments.run`` runs a single configuration from the config
composed here; a sweep or a Hydra flag goes to Hydra's own entry point.
"""

from __future__ import annotations

import difflib
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig

import flatness
from experiments import checks
from experiments.errors import hydra_error


def precheck(argv: list[str]) -> str | None:
    """Compose the command line's config once through Hydra's compose API (a sweep at its first
    value) and return Hydra's own error, an unknown choice (``optimizer=bogus``) or key, as one
    line; None when it composes (or is a sweep this cannot expand, left to Hydra)."""
    return compose_command_line(argv)[1]


# Hydra's flags that take the next argument as their value (``--cfg job``), and the values of the
# one whose value is optional (``--info [what]``)
_VALUE_FLAGS = {"--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name", "-cn",
                "--config-dir", "-cd", "--experimental-rerun"}  # fmt: skip
_INFO = {"all", "config", "defaults", "defaults-tree", "plugins", "searchpath"}


def split_command_line(argv: list[str]) -> tuple[dict[str, str | None], list[str]]:
    """Hydra's flags (with their values) and the overrides of a command line."""
    flags: dict[str, str | None] = {}
    overrides, rest = [], list(argv)
    while rest:
        arg = rest.pop(0)
        if not arg.startswith("-"):
            overrides.append(arg)
            continue
        name, _, value = arg.partition("=")
        if (
            not value
            and rest
            and (name in _VALUE_FLAGS or name in ("--info", "-i") and rest[0] in _INFO)
        ):
            value = rest.pop(0)
        flags[name] = value or None
    return flags, overrides


# Config folders that hold other commands' files, not a run's groups, and where the README says so
COMMAND_GROUPS = {"protocol": "Protocols, verdicts and the report", "study": "Jiang et al.'s study"}


def _not_a_setting(key: str) -> str:
    """Hydra's "Could not override 'k'" with what to do: a key of another option of its group
    (``optimizer.rho`` with plain SGD) or a misspelt key (``optimzer=adam``)."""
    known, options = checks.conf_settings()
    group, _, leaf = key.lstrip("+~").rpartition(".")
    if group in options:
        having = sorted(option for option, settings in options[group].items() if leaf in settings)
        verb = "has" if len(having) == 1 else "have"
        which = (
            f"{', '.join(f'{group}={h}' for h in having)} {verb} it"
            if having
            else "no option has it"
        )
        return f"{key}: the chosen {group} has no setting {leaf!r} ({which})"
    parts = key.lstrip("+~").split(".")
    if parts[0] in COMMAND_GROUPS:  # conf/protocol/, conf/study/: files of other commands
        return (
            f"{parts[0]}: not a setting of a run; conf/{parts[0]}/ is read by "
            f"python -m experiments.{parts[0]} (README, {COMMAND_GROUPS[parts[0]]})"
        )
    if parts[0] == "metrics" and len(parts) > 2:  # metrics.NAME.setting with an unknown NAME
        close = difflib.get_close_matches(parts[1], sorted(flatness.REGISTRY), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        return (
            f"{key.lstrip('+~')}: no metric {parts[1]!r} in this run's metrics ({hint}a metric is "
            f"added with +metrics.NAME={{}}; README, Metrics)"
        )
    close = difflib.get_close_matches(parts[0], sorted(known - set(COMMAND_GROUPS)), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else " (see README, Config reference)"
    return f"{key.lstrip('+~')}: not a setting of this project{hint}"


def compose_command_line(argv: list[str]) -> tuple[DictConfig | None, str | None]:
    """The command line's config composed once, or the one-line error that stops it.

    The config is returned for a single run (no ``-m``, no Hydra flag), which then runs from it
    without Hydra composing it again; a sweep composes at its first value, to check it, and
    returns no config (Hydra's launcher composes each job)."""
    flags, given = split_command_line(argv)
    config_dir, config_name = str(checks.CONF), "config"
    if "--config-path" in flags or "-cp" in flags:  # a run's own config.yaml (measure says how)
        config_dir = str(Path(flags.get("--config-path") or flags.get("-cp") or ".").resolve())
        config_name = flags.get("--config-name") or flags.get("-cn") or "config"
        flags = {
            k: v
            for k, v in flags.items()
            if k not in ("--config-path", "-cp", "--config-name", "-cn")
        }
    parser = OverridesParser.create()
    for arg in given:
        try:
            parser.parse_overrides([arg])
        except Exception as exc:
            return None, f"cannot read the override {arg!r}: {str(exc).strip().splitlines()[0]}"
    parsed = parser.parse_overrides(given)
    multirun = "-m" in flags or "--multirun" in flags
    overrides, hydra_keys = [], False
    for o in parsed:
        if o.get_key_element().lstrip("+~").startswith("hydra"):
            hydra_keys = True  # Hydra's own settings: its entry point takes them
            continue
        if o.is_sweep_override() and not multirun:
            return None, (
                f"{o.get_key_element()}: a list of values is a sweep; add -m to run each "
                "(or quote a list value: key='[a,b]')"
            )
        try:
            value = next(o.sweep_string_iterator()) if o.is_sweep_override() else None
        except Exception:
            return None, None  # a glob or other sweep that needs Hydra's loader
        overrides.append(o.input_line if value is None else f"{o.get_key_element()}={value}")
    try:
        with initialize_config_dir(config_dir=config_dir, version_base="1.3"):
            cfg = compose(config_name=config_name, overrides=overrides)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0]
        if first.startswith("Could not override '"):
            return None, _not_a_setting(first.split("'")[1])
        return None, hydra_error(exc)
    return (cfg if not flags and not hydra_keys else None), None
