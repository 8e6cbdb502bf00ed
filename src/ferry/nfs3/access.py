"""Permission checks from AUTH_SYS identity and file mode (POSIX rules, as knfsd applies them).

The backend may run as root, so the service alone decides who may do what.
"""

from __future__ import annotations

from ferry.nfs3.const import Access, Ftype3
from ferry.rpc.auth import Credentials
from ferry.vocab import Attr

R, W, X = 4, 2, 1
S_ISUID, S_ISGID, S_IXGRP = 0o4000, 0o2000, 0o0010


_DIR = int(Ftype3.DIR)
_READ, _LOOKUP, _EXECUTE = int(Access.READ), int(Access.LOOKUP), int(Access.EXECUTE)
_CHANGE, _DELETE = int(Access.MODIFY | Access.EXTEND), int(Access.DELETE)
"""Plain ints: ``enum.IntFlag`` arithmetic costs a Python call per operator (ACCESS runs it
on every call); the API edge still speaks ``Access``."""


def mode_bits(attr: Attr, cred: Credentials) -> int:
    """The rwx triple that applies to ``cred`` (owner, group or other)."""
    if cred.uid == attr.uid:
        return (attr.mode >> 6) & 7
    if cred.gid == attr.gid or attr.gid in cred.gids:  # cred.in_group(attr.gid), inlined
        return (attr.mode >> 3) & 7
    return attr.mode & 7


def may(attr: Attr, cred: Credentials, want: int) -> bool:
    """Whether ``cred`` has all of ``want`` (R|W|X) on ``attr``; root passes except that
    execute on a non-directory needs some x bit."""
    if cred.uid == 0:
        return not (want & X and attr.type != _DIR and not attr.mode & 0o111)
    return mode_bits(attr, cred) & want == want


def access_mask(attr: Attr, cred: Credentials, asked: int, read_only: bool) -> int:
    """ACCESS3 bits granted out of ``asked`` (RFC 1813 section 3.3.4): READ for r; LOOKUP
    (a directory) or EXECUTE for x; MODIFY, EXTEND and on a directory DELETE for w, unless
    the export is read-only. The rwx that applies is found once, as ``may`` finds it."""
    is_dir = attr.type == _DIR
    if cred.uid == 0:
        rwx = R | W | X if is_dir or attr.mode & 0o111 else R | W
    else:
        rwx = mode_bits(attr, cred)
    granted = _READ if rwx & R else 0
    if rwx & X:
        granted |= _LOOKUP if is_dir else _EXECUTE
    if rwx & W and not read_only:
        granted |= _CHANGE | _DELETE if is_dir else _CHANGE
    return granted & asked


def setid_to_clear(attr: Attr, cred: Credentials) -> int:
    """The set-ID bits that writing to (or truncating) ``attr`` as ``cred`` takes away, as
    Linux's write(2) does (``setattr_should_drop_suidgid``): none for root or a file that
    is not regular; set-user-ID always; set-group-ID if the group may execute the file (a
    real set-group-ID program) or the writer is not in the file's group (without group
    execute it is a mandatory-locking mark, which members of the group keep)."""
    if attr.type != Ftype3.REG or cred.uid == 0:
        return 0
    bits = attr.mode & S_ISUID
    if attr.mode & S_ISGID and (attr.mode & S_IXGRP or not cred.in_group(attr.gid)):
        bits |= S_ISGID
    return bits
