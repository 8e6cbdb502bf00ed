"""Storage backends: the contract (``base``), the built-in implementations and a loader."""

from __future__ import annotations

import importlib

from ferry.backends.base import SERVER_TIME, Attr, Backend, DirEntry, FileId, FsStat, SetAttr
from ferry.backends.local import LocalBackend
from ferry.backends.memory import MemoryBackend
from ferry.backends.wrappers import ReadOnly
from ferry.errors import ConfigError

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


def load_backend(spec: str) -> type[Backend]:
    """The ``Backend`` subclass named by ``"package.module:Class"`` (for third-party backends)."""
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
