"""Connect to Ray: an embedded local instance by default, a cluster when asked."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def ray_session(address: str | None = None, num_cpus: int | None = None) -> Iterator[None]:
    """``address=None`` starts a private local Ray (or joins ``RAY_ADDRESS`` when set, which is
    how ``ray job submit`` hands a driver its cluster); ``"auto"`` or a URL joins a cluster.
    A session this function started is shut down on exit; a joined cluster is left running.
    """
    import ray

    if ray.is_initialized():
        yield
        return
    if address is None and not os.environ.get("RAY_ADDRESS"):
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False,
                 configure_logging=True, logging_level="ERROR")
    else:
        ray.init(address=address, log_to_driver=False, logging_level="ERROR")
    try:
        yield
    finally:
        ray.shutdown()
