"""Ferry's NFS server: ``serve(config)`` runs one (what ``ferry serve`` does).

The package is laid out by concern: ``connection`` (one connection's state and defences,
sans-IO), ``blocking`` and ``aio`` (the IO adapters around it), ``skeleton`` (accepting,
the connection cap, the spawn hook every model fills in), ``accounting``
(refusals and cut-offs, logged and counted), one module per model (``serial``,
``thread``, ``process``, ``prefork``, ``aio``), ``workers`` (forking and supervising),
``stopping`` (signals), ``launch`` (from a config to a running model), ``app`` (the
programs), ``udp``, ``shared`` and ``shared_drc`` (state shared by worker processes).
Importing it loads none of them; ``serve`` is loaded on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["serve"]

if TYPE_CHECKING:
    from ferry.server.launch import serve


def __getattr__(name: str) -> Any:
    if name == "serve":
        from ferry.server.launch import serve

        return serve
    raise AttributeError(f"module 'ferry.server' has no attribute {name!r}")
