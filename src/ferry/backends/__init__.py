"""Storage backends: the contract (``base``), the built-in implementations and a loader.

The implementations load on first use (PEP 562): ``import ferry.backends.base`` or
``load_backend("s3")`` loads no other backend.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ferry.errors import ConfigError

if TYPE_CHECKING:
    from ferry.backends.base import (
        SERVER_TIME,
        Attr,
        Backend,
        DirEntry,
        FileId,
        FsStat,
        SetAttr,
    )
    from ferry.backends.local import LocalBackend
    from ferry.backends.memory import MemoryBackend
    from ferry.backends.wrappers import ReadOnly

__all__ = [
    "SERVER_TIME",
    "Attr",
    "Backend",
    "DirEntry",
    "FileId",
    "FsStat",
    "LocalBackend",
    "MemoryBackend",
    "ReadOnly",
    "SetAttr",
    "load_backend",
]

_LAZY: dict[str, str] = {
    "SERVER_TIME": "ferry.backends.base",
    "Attr": "ferry.backends.base",
    "Backend": "ferry.backends.base",
    "DirEntry": "ferry.backends.base",
    "FileId": "ferry.backends.base",
    "FsStat": "ferry.backends.base",
    "SetAttr": "ferry.backends.base",
    "LocalBackend": "ferry.backends.local",
    "MemoryBackend": "ferry.backends.memory",
    "ReadOnly": "ferry.backends.wrappers",
}
"""Public name -> the module it is loaded from on first use."""

BUILTIN: dict[str, str] = {
    "cephfs": "ferry.backends.cephfs:CephFsBackend",  # libcephfs2, loaded on first use
    "s3": "ferry.backends.s3:S3Backend",  # the `s3` extra (s3fs)
}
"""Backends named in a config by a short name, imported only when an export uses them."""


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


def load_backend(spec: str) -> type[Backend]:
    """The ``Backend`` subclass named by ``"package.module:Class"`` or a ``BUILTIN`` name."""
    from ferry.backends.base import Backend  # a global here would be one more eager import

    spec = BUILTIN.get(spec, spec)
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"backend {spec!r}: expected 'module:Class'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"backend {spec!r}: cannot import {module_name!r}: {exc}") from exc
    obj: object = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigError(f"backend {spec!r}: {module_name!r} has no {attr!r}") from None
    if not (isinstance(obj, type) and issubclass(obj, Backend)):
        raise ConfigError(f"backend {spec!r}: {attr!r} is not a Backend subclass")
    return obj
