"""Ferry: a user-space NFSv3 server and client toolkit speaking the real wire protocol.

The names below load on first use (PEP 562), so ``import ferry.xdr`` loads the codec and
the vocabulary only, not the client or the backends. Importing Ferry changes no global
state: ``install_urlopen()`` teaches urllib (and so pandas) ``nfs://`` URLs when a
program asks for it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY: dict[str, tuple[str, str]] = {
    "AsyncNfsClient": ("ferry.client", "AsyncNfsClient"),
    "Attr": ("ferry.vocab", "Attr"),
    "Backend": ("ferry.backends.base", "Backend"),
    "Client": ("ferry.client", "Client"),
    "DirEntry": ("ferry.vocab", "DirEntry"),
    "FerryError": ("ferry.errors", "FerryError"),
    "FileId": ("ferry.vocab", "FileId"),
    "FsStat": ("ferry.vocab", "FsStat"),
    "Ftype3": ("ferry.vocab", "Ftype3"),
    "NfsError": ("ferry.errors", "NfsError"),
    "NfsUrl": ("ferry.client", "NfsUrl"),
    "Nfsstat3": ("ferry.vocab", "Nfsstat3"),
    "RpcError": ("ferry.errors", "RpcError"),
    "SetAttr": ("ferry.vocab", "SetAttr"),
    "connect": ("ferry.client", "connect"),
    "connect_async": ("ferry.client", "connect_async"),
    "install_urlopen": ("ferry.nfsfs.urlopen", "install"),
}
"""Public name -> (module, attribute) it is loaded from on first use."""

if TYPE_CHECKING:
    from ferry.backends.base import Backend
    from ferry.client import AsyncNfsClient, Client, NfsUrl, connect, connect_async
    from ferry.errors import FerryError, NfsError, RpcError
    from ferry.nfsfs.urlopen import install as install_urlopen
    from ferry.vocab import Attr, DirEntry, FileId, FsStat, Ftype3, Nfsstat3, SetAttr

__all__ = [
    "AsyncNfsClient",
    "Attr",
    "Backend",
    "Client",
    "DirEntry",
    "FerryError",
    "FileId",
    "FsStat",
    "Ftype3",
    "NfsError",
    "NfsUrl",
    "Nfsstat3",
    "RpcError",
    "SetAttr",
    "__version__",
    "connect",
    "connect_async",
    "install_urlopen",
]


def __getattr__(name: str) -> Any:
    """A public name, or a submodule (``ferry.client``), imported on first use."""
    if name in _LAZY:
        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value  # later lookups skip this function
        return value
    try:
        return importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError as exc:
        if exc.name != f"{__name__}.{name}":
            raise
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
