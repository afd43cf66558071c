"""rliable called directly, as the independent oracle for the report's intervals."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from iif_ray.reporting import stats as st


def rliable_interval(scores: dict, func: Callable) -> tuple[dict, dict]:
    """``rly.get_interval_estimates`` seeded as the report seeds it: its fixed random state and
    numpy's global generator (part of rliable's resampling draws from it), given back after."""
    from rliable import library as rly

    saved = np.random.get_state()
    np.random.seed(st.SEED)
    try:
        return rly.get_interval_estimates(scores, func, reps=st.REPS,
                                          random_state=np.random.RandomState(st.SEED))
    finally:
        np.random.set_state(saved)
