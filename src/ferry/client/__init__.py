"""The Ferry NFSv3 client: ``url`` (nfs:// URLs), ``rpc`` (sans-IO RPC), ``aio`` (pipelined
RPC transport), ``nfs`` (procedures), ``cache`` (attributes and lookups), ``files`` (transfers, open
files), ``paths`` (the os-like asyncio engine, holding ``nfs`` as ``client.nfs``), ``fileio``
(io objects), ``sync`` (the blocking shell, its methods generated into ``sync_calls``)."""

from .aio import AsyncRpcClient, RpcOptions, RpcStats
from .files import AsyncFile, FileOptions, FileStats
from .nfs import AuthSys, ConnectOptions, NfsDirEntry, NfsProcedures, getport
from .opening import Opening
from .paths import AsyncNfsClient, connect_async
from .rpc import RpcClient
from .sync import Client, SyncProcedures, connect
from .url import NfsUrl, parse_url

__all__ = [
    "AsyncFile",
    "AsyncNfsClient",
    "AsyncRpcClient",
    "AuthSys",
    "Client",
    "ConnectOptions",
    "FileOptions",
    "FileStats",
    "NfsDirEntry",
    "NfsProcedures",
    "NfsUrl",
    "Opening",
    "RpcClient",
    "RpcOptions",
    "RpcStats",
    "SyncProcedures",
    "connect",
    "connect_async",
    "getport",
    "parse_url",
]
