"""Reporting: ``report.md`` and its figures from a results directory's committed CSV files.

Ray-free by contract (``pyproject.toml``): it imports neither Ray nor an engine (``rllib``,
``lm``, ``scoring``), so a report regenerates anywhere pandas, matplotlib and rliable run.

``rounds`` (the round row: ``rounds.csv``, ``evals.csv`` and LM progress files) and
``stats`` (rliable intervals) <- ``tables`` (shared rendering) and ``metrics`` (the paper's
efficiency metrics) <- the sections ``classic``, ``ablation``, ``lm`` <- ``evidence`` (which
places the ablation views under each environment) <- ``report`` (assembles ``report.md``).
"""
