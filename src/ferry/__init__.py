"""Ferry: a user-space NFSv3 server and client toolkit speaking the real wire protocol."""

from ferry.backends.base import Backend
from ferry.client import AsyncNfsClient, Client, NfsUrl, connect, connect_async
from ferry.errors import FerryError, NfsError, RpcError
from ferry.nfs3.const import Ftype3, Nfsstat3
from ferry.urlopen import install as _install_urllib_handler
from ferry.vocab import Attr, DirEntry, FileId, FsStat, SetAttr

__version__ = "0.1.0"

_install_urllib_handler()  # pd.read_csv("nfs://...") and urlopen work once ferry is imported

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
]
