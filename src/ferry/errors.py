"""The one error tree of Ferry.

Every error knows the wire code it becomes: XDR and RPC errors map to RPC
accept/reject statuses in ``rpc.dispatch``; ``NfsError`` carries an ``Nfsstat3``.
The OSError <-> Nfsstat3 table lives with the status in ``ferry.vocab`` (re-exported
here); this module imports nothing else of Ferry.
"""

from __future__ import annotations

import errno
import os

from ferry.vocab import ERRNO_TO_NFS, Nfsstat3
from ferry.vocab import errno_from_status as errno_from_status
from ferry.vocab import status_from_oserror as status_from_oserror


class FerryError(Exception):
    """Root of all errors Ferry raises on purpose."""


class XdrError(FerryError):
    """Bytes that do not decode as the expected XDR type (truncated, oversized, bad enum)."""


class RecordError(FerryError):
    """A record-marking violation on a stream (e.g. a record over the size limit)."""


class DropCall(FerryError):
    """A call the server cannot answer now, in a procedure with no "try again later"
    status (MOUNT's MNT): no reply is sent, so the client sends the call again, as knfsd
    and NFS-Ganesha drop such requests. Raised by handlers; the dispatcher drops."""


class WouldBlock(FerryError):
    """A call tried on the event loop (``Transport.nowait``) would wait on the disk (a READ
    whose pages are not all in the page cache): the server runs it again on a call thread.
    Raised by backends' ``read_nowait`` and handlers; the dispatcher lets it through."""


class ConfigError(FerryError):
    """A bad configuration value; the message names the key."""


class NfsError(FerryError):
    """An operation failed with an NFSv3 status; raised by backends, the service, the client."""

    def __init__(self, status: Nfsstat3, message: str = "") -> None:
        super().__init__(message or status.name.lower())
        self.status = status
        self.detail = message
        """What the raiser had to say beyond the status ("" if nothing)."""

    def to_oserror(self, path: str | None = None, path2: str | None = None) -> OSError:
        """The OSError ``os`` would raise (FileNotFoundError, ...): its errno, the path(s),
        and ``os.strerror``'s text, followed in brackets by the NFS status where the errno
        does not tell it (NFS3ERR_BADHANDLE is ESTALE too) and by ``detail`` if any.
        Raise it ``from None``: this NfsError adds nothing to a traceback."""
        code = errno_from_status(self.status)
        notes = [f"NFS3ERR_{self.status.name}"] if ERRNO_TO_NFS.get(code) != self.status else []
        notes += [self.detail] if self.detail else []
        text = os.strerror(code) + (f" ({'; '.join(notes)})" if notes else "")
        return OSError(code, text, path, None, path2)


class NoSuchExport(FileNotFoundError):
    """A client asked for a path that no export of the server holds (ENOENT); the message
    lists what the server does export, so a misspelled name is easy to put right."""

    SHOWN = 10  # exports named in the message; more are counted

    def __init__(self, path: str, exports: list[str]) -> None:
        shown = ", ".join(exports[: self.SHOWN]) or "nothing"
        if len(exports) > self.SHOWN:
            shown += f" and {len(exports) - self.SHOWN} more"
        super().__init__(errno.ENOENT, f"No such export (the server exports: {shown})", path)
        self.exports = exports


# -- RPC errors seen by a client (RFC 5531 section 9: accept_stat and reject_stat) ----------


class RpcError(FerryError):
    """An RPC call failed below the program: the reply was not MSG_ACCEPTED / SUCCESS.

    ``accept_stat`` or ``reject_stat`` is the wire code (``None`` for the other one).
    """

    accept_stat: int | None = None
    reject_stat: int | None = None


class ProgUnavail(RpcError):
    accept_stat = 1  # PROG_UNAVAIL


class ProgMismatch(RpcError):
    accept_stat = 2  # PROG_MISMATCH

    def __init__(self, message: str, low: int, high: int) -> None:
        super().__init__(message)
        self.low, self.high = low, high


class ProcUnavail(RpcError):
    accept_stat = 3  # PROC_UNAVAIL


class GarbageArgs(RpcError):
    accept_stat = 4  # GARBAGE_ARGS


class SystemErr(RpcError):
    accept_stat = 5  # SYSTEM_ERR


class RpcMismatch(RpcError):
    reject_stat = 0  # RPC_MISMATCH

    def __init__(self, message: str, low: int, high: int) -> None:
        super().__init__(message)
        self.low, self.high = low, high


class AuthError(RpcError):
    reject_stat = 1  # AUTH_ERROR

    def __init__(self, message: str, auth_stat: int) -> None:
        super().__init__(message)
        self.auth_stat = auth_stat


class GarbageReply(RpcError):
    """A reply to one of our calls that does not decode (bad header or results)."""


class RpcTimeout(RpcError, TimeoutError):
    """A call got no reply after every retransmission; the message names the procedure."""


class RpcConnectionError(RpcError, ConnectionError):
    """The connection broke and could not be re-established."""


def root_squash_hint(exc: BaseException) -> str:
    """A note for a server's permission error met by a client acting as root: NFS servers
    squash root by default (root_squash), so root is an unprivileged user over there and may
    be refused what it could do locally. Empty for any other error."""
    cause = exc.__cause__ or exc.__context__  # raised ``from`` it, or ``from None``
    if (
        isinstance(cause, NfsError)
        and cause.status in (Nfsstat3.ACCES, Nfsstat3.PERM)
        and os.getuid() == 0
    ):
        return " (the server may squash root to an unprivileged user: root_squash)"
    return ""
