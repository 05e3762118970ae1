"""The one exception the suite raises for bad input, so the command line can print it as one line,
and the one way its commands end on Ctrl-C or an OS error."""

from __future__ import annotations

import contextlib
import dataclasses
import re
import sys


class ProtocolError(Exception):
    """A protocol or study that cannot be carried out; the message is one line."""


class ConfigError(ValueError):
    """A configuration value is out of range or unknown; the message names the key and what is allowed."""


def hydra_error(exc: BaseException) -> str:
    """The first line of one of Hydra's or OmegaConf's errors, with the known choices where it
    names an unknown one (``optimizer=bogus``: Hydra's exception lists them). A value the run
    schema refuses (``batch_size=1.5``) is OmegaConf's error under Hydra's: the override's key and
    what OmegaConf says of its value."""
    options = getattr(exc, "options", None)
    known = f" (known: {', '.join(options)})" if options else ""
    lines = str(exc).strip().splitlines()
    cause = exc.__cause__
    if (merging := re.match(r"Error merging override ([^=]+)=", lines[0])) and hasattr(
        cause, "msg"
    ):
        # OmegaConf's full_key inside a list is the item's index alone: the override names the key
        return f"{merging[1].lstrip('+~')}: {config_error_line(cause).partition(': ')[2]}"
    where = re.match(r"In '(.+)': \w+ raised while composing config:$", lines[0])
    if where and len(lines) > 1:  # an option file's key the schema refuses: OmegaConf's next lines
        key = re.search(r"full_key: (\S+)", str(exc))
        return f"{key[1] + ': ' if key else ''}{_worded(lines[1])} (in {where[1]})"
    return lines[0] + known


def config_error_line(exc: BaseException, unknown: str | None = None) -> str:
    """One of OmegaConf's errors as the project's one line: the key, then what is wrong with it.
    A key a schema (a dataclass) does not have says which keys it has, or ``unknown``."""
    message = str(getattr(exc, "msg", None) or exc).strip().splitlines()[0]
    key = str(getattr(exc, "full_key", "") or "")
    schema = getattr(exc, "object_type", None)
    if message.startswith("Key ") and " not in " in message and dataclasses.is_dataclass(schema):
        names = ", ".join(sorted(f.name for f in dataclasses.fields(schema)))
        message = unknown or f"unknown key (known: {names})"
    return f"{key}: {_worded(message)}" if key else _worded(message)


# OmegaConf's words for a value of the wrong type, and the project's: "expected ... (got ...)"
_WRONG_TYPE = re.compile(
    r"Value '(?P<value>.*)' of type '(?P<type>\w+)' (?:is incompatible with type hint "
    r"'(?P<hint>.+)'|could not be converted to (?P<to>\w+))$"
)
_TYPES = {
    "Integer": "an integer",
    "Float": "a number",
    "Union[int, float]": "a number",
    "Optional[Union[int, float]]": "a number or null",
    "Union[int, str]": "an integer or a string",
}


def _worded(message: str) -> str:
    found = _WRONG_TYPE.match(message)
    expected = found and _TYPES.get(found["hint"] or found["to"])
    if expected:
        return f"expected {expected} (got {found['value']}, of type {found['type']})"
    if found := re.match(r"Value '(.*)' is not a valid bool \(type (\w+)\)$", message):
        return f"expected true or false (got {found[1]}, of type {found[2]})"
    if found := re.match(r"Invalid type assigned: (\w+) is not a subclass of (.+)\. value: (.*)$",
                         message):  # fmt: skip
        what = "a mapping" if found[2].lower().startswith("dict") else f"a mapping ({found[2]})"
        return f"expected {what} (got {found[3]}, of type {found[1]})"
    if found := re.match(
        r"Value (.+) \((\w+)\) is incompatible with type hint '(dict|list)\[", message
    ):
        what = "a mapping" if found[3] == "dict" else "a list"
        return f"expected {what} (got {found[1]}, of type {found[2]})"
    if found := re.match(r"'(\w+)' is incompatible with type hint '(?:typing\.)?(\w+)\[", message):
        what = "a mapping" if found[2].lower() == "dict" else "a list"
        return f"expected {what} (got a {'list' if 'List' in found[1] else 'mapping'})"
    if found := re.match(r"Cannot convert '(\w+)' to string: '(.*)'$", message):
        return f"expected a string (got {found[2]}, of type {found[1]})"
    if re.match(r"Invalid value assigned: \w+ is not a ListConfig, list or tuple\.$", message):
        return "expected a list"
    if re.match(r"field '.+' is not Optional$", message):
        return "may not be null"
    if unknown := re.match(r"Key '(.+)' not in '(\w+)'$", message):
        return f"not a key of {unknown[2]}"
    return message


@contextlib.contextmanager
def one_line_exits(resume: str):
    """Ctrl-C ends the block with ``interrupted: <resume>`` and status 130, an OS error (a full
    disk, a vanished directory) with one line and status 1: no traceback. Every file is written
    atomically, so what is on disk is whole and the same command takes up where it stopped."""
    # After Ctrl-C the worker pool's semaphores are left to multiprocessing's resource tracker, a
    # process of its own that frees them and then warns about each "leak" on stderr: a second line.
    # It is started with this interpreter's -W options, so the filter goes there as well as here.
    quiet = "ignore:resource_tracker:UserWarning"
    if quiet not in sys.warnoptions:
        sys.warnoptions.append(quiet)
    try:
        yield
    except KeyboardInterrupt:
        print(f"interrupted: {resume}", file=sys.stderr)
        sys.exit(130)
    except OSError as exc:
        print(f"error: {exc.filename or ''}: {exc.strerror or exc}; nothing half-written is kept, "
              "run the same command again once it is fixed", file=sys.stderr)  # fmt: skip
        sys.exit(1)
