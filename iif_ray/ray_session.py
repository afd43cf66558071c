"""Connect to Ray: an embedded local instance by default, a cluster when asked.

Joining a cluster at an address where nothing answers makes ``ray.init`` retry without end;
:func:`check_reachable` tries a TCP connection first and gives up after
``IIF_RAY_CONNECT_TIMEOUT_S`` seconds (default 30) with one message.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager

CONNECT_TIMEOUT_ENV = "IIF_RAY_CONNECT_TIMEOUT_S"
DEFAULT_CONNECT_TIMEOUT_S = 30.0
ACCEPTED = ("accepted: a running head's host:port (`ray start --head` prints it), "
            "ray://host:port, 'auto', or no --address for an embedded local Ray")


class ClusterUnreachableError(ConnectionError):
    """Nothing answered at the Ray address within the connect timeout."""


def connect_timeout_s() -> float:
    """The connect bound: ``IIF_RAY_CONNECT_TIMEOUT_S`` or 30 s."""
    return float(os.environ.get(CONNECT_TIMEOUT_ENV) or DEFAULT_CONNECT_TIMEOUT_S)


def check_reachable(address: str | None, timeout_s: float | None = None) -> None:
    """Fail within ``timeout_s`` when nothing listens at a ``host:port`` Ray address.

    ``None`` (or ``RAY_ADDRESS`` when set), ``"auto"`` and ``"local"`` are left to Ray, which
    answers those at once; so are addresses with a scheme other than ``ray://``.

    Raises:
        ValueError: an address that is none of the accepted forms.
        ClusterUnreachableError: no TCP connection within the bound.
    """
    address = address if address is not None else os.environ.get("RAY_ADDRESS")
    if address in (None, "", "auto", "local"):
        return
    target = address.removeprefix("ray://")
    if "://" in target:
        return
    host, sep, port = target.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"Ray address {address!r} is not host:port; {ACCEPTED}")
    timeout_s = connect_timeout_s() if timeout_s is None else timeout_s
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection((host, int(port)),
                                          timeout=max(0.1, min(5.0, timeout_s))):
                return
        except OSError as e:
            if time.monotonic() + 1.0 > deadline:
                raise ClusterUnreachableError(
                    f"cannot reach Ray at {address!r} within {timeout_s:g} s ({e}); "
                    f"{ACCEPTED}") from None
        time.sleep(1.0)


@contextmanager
def ray_session(address: str | None = None, num_cpus: int | None = None) -> Iterator[None]:
    """``address=None`` starts a private local Ray (or joins ``RAY_ADDRESS`` when set, which is
    how ``ray job submit`` hands a driver its cluster); ``"auto"`` or a URL joins a cluster.
    A session this function started is shut down on exit; a joined cluster is left running.

    Raises:
        ClusterUnreachableError: nothing answers at the address within the connect bound.
    """
    import ray

    if ray.is_initialized():
        yield
        return
    if address is None and not os.environ.get("RAY_ADDRESS"):
        # "local": always a private instance. Without it ray.init joins a Ray already running
        # on this machine, whose workers then outlive this command (and share its CPUs).
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False,
                 log_to_driver=False, configure_logging=True, logging_level="ERROR")
    else:
        check_reachable(address)
        ray.init(address=address, log_to_driver=False, logging_level="ERROR")
    try:
        yield
    finally:
        ray.shutdown()
