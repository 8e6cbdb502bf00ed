"""File attributes with a generation, for ``LocalBackend``.

File ids are inode numbers, and most file systems hand a freed inode number to the next new
file at once, so a file handle also carries a generation: whatever tells successive files
on one inode number apart. The cheapest such value is the birth time. Linux reports it only
through statx(2), which Python 3.11's ``os`` does not wrap, so statx is called through
ctypes (without ``argtypes``: converting arguments costs more than the call). It replaces
the lstat that reading attributes needed anyway; the call itself costs what lstat does, and
decoding the struct in Python adds about 0.3-0.6 µs per file.

Without statx (other systems, or ENOSYS) ``os.stat`` is used, with ``st_birthtime`` where
the platform has one (macOS, BSD). A file whose file system records no birth time (or every
file, with ``use_btime=False``) takes its generation from a fallback callable, which
``LocalBackend`` backs with a counter it bumps whenever it removes an inode's last link.
"""

from __future__ import annotations

import abc
import ctypes
import os
import stat
import struct
import threading
from collections.abc import Callable, Sequence
from typing import Any

from ferry.backends.base import Attr, AttrRow, DirEntry
from ferry.vocab import FTYPE_OF, Ftype3, attr_rows

Generations = Callable[[int], int]
"""The fallback: a file id's generation when the file system gives no birth time."""

AT_FDCWD = -100
AT_SYMLINK_NOFOLLOW = 0x100
AT_EMPTY_PATH = 0x1000
STATX_BASIC_STATS = 0x7FF
STATX_BTIME = 0x800
# struct statx from <linux/stat.h>, up to stx_dev_minor (0x90 bytes): stx_mask at 0x00,
# stx_nlink/uid/gid/mode at 0x10, stx_ino/size/blocks at 0x20, then the statx_timestamp
# fields {i64 tv_sec; u32 tv_nsec; i32 pad} atime 0x40, btime 0x50, ctime 0x60, mtime 0x70,
# then rdev major/minor and dev major/minor at 0x80.
_LAYOUT = struct.Struct("<I12xIIIH2xQQQ8xqI4xqI4xqI4xqI4xIIII")
_BUF_SIZE = 0x100  # the whole struct statx: the kernel may write all of it
_WANT = STATX_BASIC_STATS | STATX_BTIME

_TYPES = FTYPE_OF  # hoisted: a module global, looked up once per call
_NS = 1_000_000_000
_REG = Ftype3.REG  # hoisted: enum member access costs a dict lookup per call
_makedev = os.makedev
_NO_RDEV = (0, 0)  # shared: a tuple per file is garbage the collector keeps scanning


def mix(sec: int, nsec: int) -> int:
    """A 32-bit generation from a birth time (distinct times collide 1 in 2**32)."""
    return (sec * 1_000_000_007 + nsec) & 0xFFFFFFFF


class AttrReader(abc.ABC):
    """Reads NFS attributes, generation included, without following symlinks.

    ``Attr.fsid`` is set to the file's ``st_dev`` so callers can check the device; the NFS
    service replaces it with the export id.
    """

    def __init__(self, fallback: Generations, use_btime: bool) -> None:
        self._fallback = fallback
        self._use_btime = use_btime

    @abc.abstractmethod
    def at(self, dir_fd: int, path: bytes) -> Attr:
        """Attributes of ``path`` relative to ``dir_fd`` (``lstat``); OSError if absent."""

    def at_many(self, dir_fd: int, names: Sequence[bytes]) -> list[Attr | None]:
        """``at`` for each name in one directory (a READDIRPLUS page); None for a name
        that fails (removed since it was listed)."""
        out: list[Attr | None] = []
        for name in names:
            try:
                out.append(self.at(dir_fd, name))
            except OSError:
                out.append(None)
        return out

    def entries_at(self, dir_fd: int, entries: Sequence[DirEntry], dev: int) -> list[Attr | None]:
        """``at`` for each entry of one directory (a READDIRPLUS page): None for an entry
        that fails (removed since listed), is another file now (another inode than the
        entry's) or is on another device than ``dev`` (a mount point)."""
        attrs = self.at_many(dir_fd, [e.name for e in entries])
        return [
            a if a is not None and a.fileid == e.fileid and a.fsid == dev else None
            for e, a in zip(entries, attrs, strict=True)
        ]

    def rows_at(
        self, dir_fd: int, entries: Sequence[DirEntry], dev: int, fsid: int
    ) -> tuple[list[AttrRow | None], list[int | None]]:
        """``entries_at`` as ``AttrRow``s (with ``fsid``) and generations."""
        return attr_rows(self.entries_at(dir_fd, entries, dev), fsid)

    @abc.abstractmethod
    def of_fd(self, fd: int) -> Attr:
        """Attributes of the open file ``fd`` (``fstat``)."""

    @abc.abstractmethod
    def has_btime(self, fd: int) -> bool:
        """Whether generations of files like ``fd`` come from birth times (not the fallback)."""


class StatxReader(AttrReader):
    """statx(2) through ctypes, into one buffer per thread.

    Flat on purpose: this runs for every GETATTR and every READDIRPLUS entry, and each
    Python call layer costs about a tenth of the system call.
    """

    def __init__(self, fn: Any, fallback: Generations, use_btime: bool = True) -> None:
        super().__init__(fallback, use_btime)
        self._fn = fn
        self._btime = STATX_BTIME if use_btime else 0
        self._local = threading.local()

    def _buffer(self) -> ctypes.Array[ctypes.c_char]:
        """This thread's first buffer (later calls find it in ``self._local``)."""
        buf = ctypes.create_string_buffer(_BUF_SIZE)
        self._local.buf = buf
        return buf

    def at(self, dir_fd: int, path: bytes) -> Attr:
        # No check for NUL (C would cut the path there): paths are names from the kernel or
        # names LOOKUP accepted, and callers check the inode of what they get anyway.
        try:
            buf = self._local.buf
        except AttributeError:
            buf = self._buffer()
        if self._fn(dir_fd, path, AT_SYMLINK_NOFOLLOW, _WANT, buf):
            raise _error(path)
        return self._attr(buf)

    def at_many(self, dir_fd: int, names: Sequence[bytes]) -> list[Attr | None]:
        """One buffer lookup for the whole page, then a statx and a decode per name."""
        try:
            buf = self._local.buf
        except AttributeError:
            buf = self._buffer()
        fn, decode = self._fn, self._attr
        return [
            None if fn(dir_fd, name, AT_SYMLINK_NOFOLLOW, _WANT, buf) else decode(buf)
            for name in names
        ]

    def rows_at(
        self, dir_fd: int, entries: Sequence[DirEntry], dev: int, fsid: int
    ) -> tuple[list[AttrRow | None], list[int | None]]:
        """One buffer lookup for the whole page, then per entry a statx, its inode and
        device checked, and its row made from the statx fields as they come (times are
        seconds and nanoseconds there as in fattr3): no ``Attr`` made and taken apart
        again (a page can hold thousands of entries)."""
        try:
            buf = self._local.buf
        except AttributeError:
            buf = self._buffer()
        fn, unpack, want_btime = self._fn, _LAYOUT.unpack_from, self._btime
        fallback = self._fallback
        dev_major, dev_minor = os.major(dev), os.minor(dev)
        types, reg, u32 = _TYPES, _REG, 0xFFFFFFFF
        rows: list[AttrRow | None] = []
        gens: list[int | None] = []
        add, add_gen = rows.append, gens.append
        for e in entries:
            if fn(dir_fd, e.name, AT_SYMLINK_NOFOLLOW, _WANT, buf):
                add(None)  # removed since listed
                add_gen(None)
                continue
            (mask, nlink, uid, gid, mode, ino, size, blocks, a_s, a_ns, b_s, b_ns, c_s, c_ns,
             m_s, m_ns, r_major, r_minor, d_major, d_minor) = unpack(buf)  # fmt: skip
            if ino != e.fileid or d_major != dev_major or d_minor != dev_minor:
                add(None)  # replaced since listed, or a mount point
                add_gen(None)
                continue
            add((
                types.get(mode & 0o170000, reg), mode & 0o7777, nlink, uid, gid, size,
                blocks * 512, r_major, r_minor, fsid, ino,
                a_s & u32, a_ns, m_s & u32, m_ns, c_s & u32, c_ns,
            ))  # fmt: skip
            add_gen(
                (b_s * 1_000_000_007 + b_ns) & u32 if mask & want_btime else fallback(ino)
            )  # mix()
        return rows, gens

    def of_fd(self, fd: int) -> Attr:
        try:
            buf = self._local.buf
        except AttributeError:
            buf = self._buffer()
        if self._fn(fd, b"", AT_EMPTY_PATH, _WANT, buf):
            raise _error(fd)
        return self._attr(buf)

    def has_btime(self, fd: int) -> bool:
        buf = ctypes.create_string_buffer(_BUF_SIZE)
        if self._fn(fd, b"", AT_EMPTY_PATH, _WANT, buf):
            raise _error(fd)
        return bool(_LAYOUT.unpack_from(buf)[0] & self._btime)

    def _attr(self, buf: ctypes.Array[ctypes.c_char]) -> Attr:
        (mask, nlink, uid, gid, mode, ino, size, blocks, a_s, a_ns, b_s, b_ns, c_s, c_ns,
         m_s, m_ns, r_major, r_minor, d_major, d_minor) = _LAYOUT.unpack_from(buf)  # fmt: skip
        btime = mask & self._btime
        gen = (b_s * 1_000_000_007 + b_ns) & 0xFFFFFFFF if btime else self._fallback(ino)  # mix()
        return Attr(
            _TYPES.get(mode & 0o170000, _REG), mode & 0o7777, nlink, uid, gid, size,
            blocks * 512, (r_major, r_minor) if r_major or r_minor else _NO_RDEV, ino,
            a_s * 1_000_000_000 + a_ns, m_s * 1_000_000_000 + m_ns, c_s * 1_000_000_000 + c_ns,
            _makedev(d_major, d_minor), gen,
        )  # fmt: skip


def _error(where: bytes | int) -> OSError:
    """The OSError (FileNotFoundError and so on) for the errno statx left."""
    err = ctypes.get_errno()
    return OSError(err, os.strerror(err), where)


class StatReader(AttrReader):
    """``os.stat``, for systems without statx; ``st_birthtime`` where there is one."""

    def at(self, dir_fd: int, path: bytes) -> Attr:
        return self.attr_of(os.stat(path, dir_fd=dir_fd, follow_symlinks=False))

    def of_fd(self, fd: int) -> Attr:
        return self.attr_of(os.fstat(fd))

    def has_btime(self, fd: int) -> bool:
        return self._birth_ns(os.fstat(fd)) is not None

    def _birth_ns(self, st: os.stat_result) -> int | None:
        if not self._use_btime:
            return None
        ns: int | None = getattr(st, "st_birthtime_ns", None)  # Python 3.12+
        if ns is None:
            birth: float | None = getattr(st, "st_birthtime", None)
            ns = None if birth is None else round(birth * _NS)
        return ns if ns else None  # 0 (or absent): not recorded

    def attr_of(self, st: os.stat_result) -> Attr:
        rdev = st.st_rdev
        birth = self._birth_ns(st)
        gen = self._fallback(st.st_ino) if birth is None else mix(*divmod(birth, _NS))
        return Attr(
            _TYPES.get(stat.S_IFMT(st.st_mode), Ftype3.REG), st.st_mode & 0o7777, st.st_nlink,
            st.st_uid, st.st_gid, st.st_size, st.st_blocks * 512,
            (os.major(rdev), os.minor(rdev)) if rdev else (0, 0), st.st_ino,
            st.st_atime_ns, st.st_mtime_ns, st.st_ctime_ns, st.st_dev, gen,
        )  # fmt: skip


def libc_statx() -> Any:
    """The C library's ``statx``, or None if it lacks one or fails on ``/`` (the kernel
    lacks it: ENOSYS, or a seccomp filter refuses it: EPERM)."""
    try:
        fn = ctypes.CDLL(None, use_errno=True).statx
    except (AttributeError, OSError):
        return None
    buf = ctypes.create_string_buffer(_BUF_SIZE)
    return fn if fn(AT_FDCWD, b"/", AT_SYMLINK_NOFOLLOW, _WANT, buf) == 0 else None


_STATX: Any = libc_statx()


def attr_reader(fallback: Generations, use_btime: bool = True) -> AttrReader:
    """The best reader this system has."""
    if _STATX is not None:
        return StatxReader(_STATX, fallback, use_btime)
    return StatReader(fallback, use_btime)
