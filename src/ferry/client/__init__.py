"""The Ferry NFSv3 client: ``url`` (nfs:// URLs), ``rpc`` (sans-IO RPC), ``aio`` (pipelined
RPC transport), ``nfs`` (the asyncio engine), ``sync`` (the blocking shell)."""

from .aio import AsyncRpcClient, RpcOptions, RpcStats
from .nfs import AsyncNfsClient, AuthSys, NfsDirEntry, getport
from .rpc import RpcClient
from .sync import Client, connect
from .url import NfsUrl, parse_url

__all__ = [
    "AsyncNfsClient",
    "AsyncRpcClient",
    "AuthSys",
    "Client",
    "NfsDirEntry",
    "NfsUrl",
    "RpcClient",
    "RpcOptions",
    "RpcStats",
    "connect",
    "getport",
    "parse_url",
]
