"""Ferry: a user-space NFSv3 server and client toolkit speaking the real wire protocol."""

from ferry.backends.base import Attr, Backend, DirEntry, FileId, FsStat, SetAttr
from ferry.errors import FerryError, NfsError
from ferry.nfs3.const import Ftype3, Nfsstat3

__version__ = "0.1.0"

__all__ = [
    "Attr",
    "Backend",
    "DirEntry",
    "FerryError",
    "FileId",
    "FsStat",
    "Ftype3",
    "NfsError",
    "Nfsstat3",
    "SetAttr",
    "__version__",
]
