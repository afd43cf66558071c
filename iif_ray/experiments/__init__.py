"""Experiments: benchmark trials, sweeps, baselines, evaluation of snapshots, the demo and
speed runs; everything here runs something, most of it on Ray.

``results`` (trial keys; RLlib results to round rows) <- ``trials`` (a preset + evaluation
or snapshots + the record) <- ``sweeps`` (Tune grids with resume) and ``sb3`` (the
Stable-Baselines3 peer); ``lm_trials`` (LM runs as Tune trials); ``evaluate`` drives
:mod:`iif_ray.evaluation` over a sweep's snapshots; ``demo`` chains a sweep, the evaluation and
a reading; ``speed``, ``lm_speed`` (with ``threads``) print side-by-side timings
(``iif-ray bench``). What the runs write is read by :mod:`iif_ray.reporting`.
"""
