"""The report's prose: Markdown templates in ``experiments/report/templates/`` (Jinja2) filled from the
tables. Python computes what a sentence states and passes it in; the sentence itself lives in a
template, so changing the report's wording never means editing Python.

Templates are strict: a name the template uses but the caller did not pass is an error, not an
empty string in the report.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import jinja2

TEMPLATES = Path(__file__).with_name("templates")


@functools.cache
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,  # Markdown, not HTML
    )
    env.filters["g"] = lambda x, spec="g": format(x, spec)  # {{ x | g(".3g") }}
    return env


def render(name: str, /, **context: Any) -> str:
    """Template ``name`` (a file in ``experiments/report/templates/``) filled with ``context``."""
    return environment().get_template(name).render(**context)


def lines(name: str, /, **context: Any) -> list[str]:
    """``render`` split into the report's list of lines (the report joins lines with newlines)."""
    return render(name, **context).split("\n")
