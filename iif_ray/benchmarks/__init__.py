"""Evidence: benchmark trials, sweeps, baselines, the report, and speed figures.

``records`` (the round record and ``rounds.csv``) <- ``trials`` (a preset + evaluation +
the record) <- ``sweeps`` (Tune grids with resume) and ``sb3`` (the Stable-Baselines3 peer);
``report`` reads ``rounds.csv``; ``speed`` prints side-by-side timings (``iif-ray bench``).
"""
