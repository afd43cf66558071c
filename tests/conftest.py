"""Shared fixtures: one local Ray per test module that needs it, sized for a 2-core machine."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")


@pytest.fixture(autouse=True)
def _torch_threads_restored():
    """The actor bodies set one torch thread when built (right inside an actor); a test that
    builds one (or SB3's trainable) in the test process must not leave the rest of the
    session on one thread, where float sums reorder and bit-exact fingerprints elsewhere
    (tests/test_driver.py) move in the last bit."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def ray_local():
    import ray

    if ray.is_initialized():
        ray.shutdown()
    # address="local": a private Ray even while a sweep's Ray runs on this machine (a bare
    # ray.init would join that one, and a num_cpus with it is an error).
    ray.init(address="local", num_cpus=2, include_dashboard=False,
             object_store_memory=200 * 1024**2, log_to_driver=False)
    yield ray
    ray.shutdown()
