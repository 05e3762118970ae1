"""``python -m experiments.report``: REPORT.md and every figure from the saved tables
(:func:`experiments.report.document.build`)."""

from experiments.errors import one_line_exits
from experiments.report.document import main

with one_line_exits("the report is written whole or not at all; run the same command again"):
    main()
