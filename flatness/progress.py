"""Progress bars for the calls that can run for minutes (Lanczos, SLQ, Hutchinson, surfaces).

One rule, as pip and tqdm's own ``disable=None`` have it: ``progress="auto"`` (the default) draws a
bar only where someone watches, on a terminal (stderr is a TTY) or in a Jupyter kernel, and only once
a call has run for :data:`DELAY` seconds, so that quick calls, logs, pipes and the experiment suite's
workers print nothing. ``True`` always draws it (from the start), ``False`` never. Every function that
loops takes ``progress=``; :func:`flatness.measure` and :class:`flatness.Hessian` pass theirs down, and
``with flatness.progress.setting(False):`` silences everything inside a block: a call's explicit
True or False wins, its ``"auto"`` (or None) follows the block.
"""

from __future__ import annotations

import contextlib
import contextvars
import sys
from collections.abc import Iterator

Progress = bool | str | None

DELAY = 2.0  # seconds before an "auto" bar appears
_DEFAULT: contextvars.ContextVar[Progress] = contextvars.ContextVar("progress", default="auto")


def check(progress: Progress) -> None:
    """Refuse anything but True, False, "auto" or None (None: the block's setting)."""
    if progress not in (True, False, "auto", None):
        raise ValueError(f"progress must be True, False or 'auto' (got {progress!r})")


@contextlib.contextmanager
def setting(progress: Progress) -> Iterator[None]:
    """Inside the block, calls with ``progress="auto"`` or None follow ``progress`` (an "auto" or
    None here keeps the enclosing block's setting)."""
    check(progress)
    token = _DEFAULT.set(_DEFAULT.get() if progress in (None, "auto") else progress)
    try:
        yield
    finally:
        _DEFAULT.reset(token)


def _watched() -> bool:
    try:
        if sys.stderr is not None and sys.stderr.isatty():
            return True
    except (AttributeError, ValueError):  # a replaced or closed stderr
        pass
    return "ipykernel" in sys.modules


def bar(progress: Progress, **kwargs):
    """A ``tqdm`` bar (``tqdm.auto``: a widget in notebooks) drawn as ``progress`` says; the keyword
    arguments are tqdm's (``total``, ``desc``, ``unit``, …)."""
    from tqdm.auto import tqdm  # loaded on first use: `import flatness` stays light

    check(progress)
    if progress in (None, "auto"):
        progress = _DEFAULT.get()
    if progress == "auto":
        return tqdm(disable=not _watched(), delay=DELAY, leave=False, **kwargs)
    return tqdm(disable=not progress, leave=False, **kwargs)
