"""The one exception the suite raises for bad input, so the command line can print it as one line,
and the one way its commands end on Ctrl-C or an OS error."""

from __future__ import annotations

import contextlib
import sys


class ProtocolError(Exception):
    """A protocol or study that cannot be carried out; the message is one line."""


class ConfigError(ValueError):
    """A configuration value is out of range or unknown; the message names the key and what is allowed."""


def hydra_error(exc: BaseException) -> str:
    """The first line of one of Hydra's or OmegaConf's errors, with the known choices where it
    names an unknown one (``optimizer=bogus``: Hydra's exception lists them)."""
    options = getattr(exc, "options", None)
    known = f" (known: {', '.join(options)})" if options else ""
    return str(exc).strip().splitlines()[0] + known


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
