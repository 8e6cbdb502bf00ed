"""Open a directory below the export root without ever following a symlink.

A path like ``a/b`` taken from the file id map may have been changed behind the server's
back: if ``a`` became a symlink to ``/etc``, a plain ``stat("a/b", dir_fd=root)`` follows it
and looks outside the export. ``open_dir_beneath`` resolves such paths with Linux's
``openat2`` and ``RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_XDEV`` (one system
call), or elsewhere by opening one component at a time with ``O_NOFOLLOW``.
"""

from __future__ import annotations

import ctypes
import errno
import os
import sys

_SYS_OPENAT2 = 437  # the same number on every Linux architecture (unified syscall table)
_RESOLVE = 0x01 | 0x02 | 0x04 | 0x08  # NO_XDEV | NO_MAGICLINKS | NO_SYMLINKS | BENEATH
_O_PATH = getattr(os, "O_PATH", 0)
_FLAGS = (_O_PATH or os.O_RDONLY) | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64),
                ("resolve", ctypes.c_uint64)]  # fmt: skip


def _load_syscall() -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).syscall
    except (OSError, AttributeError):
        return None
    fn.restype = ctypes.c_long
    return fn


_syscall = _load_syscall()
_openat2_works = _syscall is not None


def open_dir_beneath(root_fd: int, rel: bytes) -> int:
    """A descriptor of directory ``rel`` below ``root_fd``; raises OSError (ELOOP, EXDEV,
    ENOTDIR, ENOENT...) if the way there is not plain directories on the same device."""
    global _openat2_works
    if _openat2_works:
        how = _OpenHow(_FLAGS, 0, _RESOLVE)
        fd = _syscall(_SYS_OPENAT2, root_fd, rel, ctypes.byref(how), ctypes.sizeof(how))  # type: ignore[misc]
        if fd >= 0:
            return int(fd)
        err = ctypes.get_errno()
        if err not in (errno.ENOSYS, errno.EPERM):  # EPERM: seccomp filters in containers
            raise OSError(err, os.strerror(err), os.fsdecode(rel))
        _openat2_works = False
    return _walk(root_fd, rel)


def _walk(root_fd: int, rel: bytes) -> int:
    fd = os.dup(root_fd)
    try:
        for part in rel.split(b"/"):
            if part in (b"", b".", b".."):
                raise OSError(errno.EINVAL, "unexpected path component", os.fsdecode(rel))
            nxt = os.open(part, _FLAGS, dir_fd=fd)
            os.close(fd)
            fd = nxt
        return fd
    except BaseException:
        os.close(fd)
        raise
