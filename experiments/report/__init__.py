"""The report: tables in, ``REPORT.md`` (Jinja2 templates in ``templates/``) and figures with their
CSV out. It computes no statistics and reads no configs; ``python -m experiments.report`` runs it.

- :mod:`~experiments.report.document`: the document, section by section;
- :mod:`~experiments.report.figures`: every protocol figure, one style per arm;
- :mod:`~experiments.report.explanations`, :mod:`~experiments.report.landscape`,
  :mod:`~experiments.report.study`: the deck's explanations, the pictures of minima, the study;
- :mod:`~experiments.report.templating`: the templates' environment.
"""
