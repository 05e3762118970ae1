"""The analysis: tables in, tables out.

- :mod:`~experiments.analyse.tune`: the learning-rate search's table and the rule that picks a rate;
- :mod:`~experiments.analyse.stats`, :mod:`~experiments.analyse.verdicts`: paired tests, Holm, TOST,
  and the one function that turns them into verdicts;
- :mod:`~experiments.analyse.judge`: every protocol's verdict tables from its runs;
- :mod:`~experiments.analyse.schemas`: what each table must hold, checked where it is read;
- :mod:`~experiments.analyse.sharpness_by_batch`, :mod:`~experiments.analyse.audit`,
  :mod:`~experiments.analyse.wilson`: the explanations' tables, the invariance audit, Wilson et al.'s
  counter-example;
- :mod:`~experiments.analyse.jiang`, :mod:`~experiments.analyse.correlate`: the correlation study's
  statistics and ranking.
"""
