"""What every server model counts and logs about its connections, written once for the
blocking skeleton and the asyncio protocol alike: the connection cap with its refusal,
and why a connection was cut off (a timeout, a bad record). Opening and closing are
counted by the adapters, which alone know when a connection starts and ends.
"""

from __future__ import annotations

import logging

from ferry.rpc.dispatch import Address
from ferry.server.connection import Limits, Timeout
from ferry.server.metrics import Metrics

__all__ = ["cut_off", "over_cap"]

log = logging.getLogger("ferry.server")


def over_cap(open_now: int, limits: Limits, metrics: Metrics, peer: Address) -> bool:
    """Whether a new connection must be refused (``max_connections`` open already); if
    so it is logged and counted."""
    if open_now < limits.max_connections:
        return False
    log.warning("refusing %s: %d connections open", peer, open_now)
    metrics.connection_rejected()
    return True


def cut_off(peer: Address, why: Exception, metrics: Metrics) -> None:
    """Log (and count, for a ``Timeout``) a connection closed abortively for ``why``."""
    if isinstance(why, Timeout):
        metrics.timeout(why.kind)
    log.info("closing connection from %s: %s", peer, why)
