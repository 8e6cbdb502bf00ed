"""A narrow ctypes binding of libcephfs's low-level (inode) API, for ``CephFsBackend``.

Why ctypes and not Debian's python3-cephfs: that binding wraps only the path API, so a
server could not find a file from a handle another server made (``ceph_ll_lookup_vino``
finds an inode by number, asking the MDS when it is not cached); it rounds times to whole
seconds, which breaks NFS cache validation; and it is compiled for the system Python only.
``libcephfs.so.2`` (Debian: libcephfs2) loads into any interpreter, and ``make serve``
never touches it: it is loaded on first use.

Every call returns a negative errno on failure; ``_check`` turns that into ``OSError``.
``Inode`` and ``Fh`` are opaque pointers held as ints; every ``Inode`` this module returns
carries a reference that the caller drops with ``put``. Calls release the GIL.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Iterator
from ctypes import byref
from typing import Any, NewType

Inode = NewType("Inode", int)
Fh = NewType("Fh", int)

_P = ctypes.c_void_p
_PP = ctypes.POINTER(ctypes.c_void_p)
_STR = ctypes.c_char_p
_U = ctypes.c_uint
_I = ctypes.c_int
_U64 = ctypes.c_uint64
_I64 = ctypes.c_int64
CEPH_NOSNAP = (1 << 64) - 2
PATH_MAX = 4096

STATX_BASIC = 0x7FF
STATX_BTIME = 0x800
STATX_WANT = STATX_BASIC | STATX_BTIME
SETATTR_MODE, SETATTR_UID, SETATTR_GID = 1 << 0, 1 << 1, 1 << 2
SETATTR_MTIME, SETATTR_ATIME, SETATTR_SIZE = 1 << 3, 1 << 4, 1 << 5
SETATTR_CTIME, SETATTR_MTIME_NOW, SETATTR_ATIME_NOW = 1 << 6, 1 << 7, 1 << 8


class Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class Statx(ctypes.Structure):
    """``struct ceph_statx`` (ceph_ll_client.h)."""

    _fields_ = [
        ("mask", ctypes.c_uint32),
        ("blksize", ctypes.c_uint32),
        ("nlink", ctypes.c_uint32),
        ("uid", ctypes.c_uint32),
        ("gid", ctypes.c_uint32),
        ("mode", ctypes.c_uint16),
        ("ino", _U64),
        ("size", _U64),
        ("blocks", _U64),
        ("dev", _U64),
        ("rdev", _U64),
        ("atime", Timespec),
        ("ctime", Timespec),
        ("mtime", Timespec),
        ("btime", Timespec),
        ("version", _U64),
    ]


class Dirent(ctypes.Structure):
    """glibc's ``struct dirent`` on 64-bit Linux."""

    _fields_ = [
        ("d_ino", _U64),
        ("d_off", _I64),
        ("d_reclen", ctypes.c_ushort),
        ("d_type", ctypes.c_ubyte),
        ("d_name", ctypes.c_char * 256),
    ]


class Statvfs(ctypes.Structure):
    """glibc's ``struct statvfs`` on 64-bit Linux."""

    _fields_ = [
        (name, ctypes.c_ulong)
        for name in (
            "f_bsize",
            "f_frsize",
            "f_blocks",
            "f_bfree",
            "f_bavail",
            "f_files",
            "f_ffree",
            "f_favail",
            "f_fsid",
            "f_flag",
            "f_namemax",
        )
    ] + [("spare", ctypes.c_int * 6)]


class _Vino(ctypes.Structure):
    _fields_ = [("ino", _U64), ("snapid", _U64)]


# name: (restype, argtypes after the mount pointer)
_SIGNATURES: dict[str, tuple[Any, list[Any]]] = {
    "ceph_conf_read_file": (_I, [_STR]),
    "ceph_conf_set": (_I, [_STR, _STR]),
    "ceph_conf_get": (_I, [_STR, ctypes.c_char_p, ctypes.c_size_t]),
    "ceph_mount": (_I, [_STR]),
    "ceph_unmount": (_I, []),
    "ceph_release": (_I, []),
    "ceph_ll_lookup_root": (_I, [_PP]),
    "ceph_ll_lookup_vino": (_I, [_Vino, _PP]),
    "ceph_ll_lookup": (_I, [_P, _STR, _PP, _P, _U, _U, _P]),
    "ceph_ll_put": (_I, [_P]),
    "ceph_ll_getattr": (_I, [_P, _P, _U, _U, _P]),
    "ceph_ll_setattr": (_I, [_P, _P, _I, _P]),
    "ceph_ll_open": (_I, [_P, _I, _PP, _P]),
    "ceph_ll_read": (_I, [_P, _I64, _U64, _P]),
    "ceph_ll_write": (_I, [_P, _I64, _U64, _P]),
    "ceph_ll_fsync": (_I, [_P, _I]),
    "ceph_ll_close": (_I, [_P]),
    "ceph_ll_create": (_I, [_P, _STR, _U, _I, _PP, _PP, _P, _U, _U, _P]),
    "ceph_ll_mknod": (_I, [_P, _STR, _U, _U64, _PP, _P, _U, _U, _P]),
    "ceph_ll_mkdir": (_I, [_P, _STR, _U, _PP, _P, _U, _U, _P]),
    "ceph_ll_symlink": (_I, [_P, _STR, _STR, _PP, _P, _U, _U, _P]),
    "ceph_ll_readlink": (_I, [_P, _P, ctypes.c_size_t, _P]),
    "ceph_ll_link": (_I, [_P, _P, _STR, _P]),
    "ceph_ll_unlink": (_I, [_P, _STR, _P]),
    "ceph_ll_rmdir": (_I, [_P, _STR, _P]),
    "ceph_ll_rename": (_I, [_P, _STR, _P, _STR, _P]),
    "ceph_ll_opendir": (_I, [_P, _PP, _P]),
    "ceph_ll_releasedir": (_I, [_P]),
    "ceph_readdirplus_r": (_I, [_P, _P, _P, _U, _U, _PP]),
    "ceph_ll_statfs": (_I, [_P, _P]),
}

_lib: ctypes.CDLL | None = None


def library() -> ctypes.CDLL:
    """libcephfs.so.2 with argument types declared; OSError if it is not installed."""
    global _lib
    if _lib is None:
        lib = ctypes.CDLL("libcephfs.so.2", use_errno=True)
        lib.ceph_create.argtypes, lib.ceph_create.restype = [_PP, _STR], _I
        lib.ceph_shutdown.argtypes, lib.ceph_shutdown.restype = [_P], None
        lib.ceph_userperm_new.argtypes = [_U, _U, _I, _P]
        lib.ceph_userperm_new.restype = _P
        lib.ceph_userperm_destroy.argtypes, lib.ceph_userperm_destroy.restype = [_P], None
        lib.ceph_get_instance_id.argtypes, lib.ceph_get_instance_id.restype = [_P], _U64
        for name, (restype, argtypes) in _SIGNATURES.items():
            fn = getattr(lib, name)
            fn.restype, fn.argtypes = restype, [_P, *argtypes]
        _lib = lib
    return _lib


def _check(rc: int, what: str) -> int:
    if rc < 0:
        raise OSError(-rc, f"{what}: {os.strerror(-rc)}")
    return rc


def _out() -> ctypes.c_void_p:
    return ctypes.c_void_p()


class Mount:
    """One libcephfs client of the cluster that ``conf_file`` and ``settings`` describe,
    mounted at ``root`` of the file system (unless ``root`` is None: then ``mount`` does
    it, and ``conf_get`` can tell first what the client will use). Acts as root (uid 0):
    Ferry's NFS service checks permissions itself, as knfsd does for a local file system.
    """

    def __init__(
        self,
        client_id: str | None,
        conf_file: str | None,
        settings: dict[str, str],
        root: str | None = None,
    ) -> None:
        self._lib = lib = library()
        cm = _out()
        _check(lib.ceph_create(byref(cm), client_id.encode() if client_id else None), "create")
        self._cm = cm.value
        self._perms = lib.ceph_userperm_new(0, 0, 0, None)
        try:
            conf = conf_file.encode() if conf_file else None
            _check(lib.ceph_conf_read_file(self._cm, conf), f"reading {conf_file or 'ceph.conf'}")
            for key, value in settings.items():
                self.conf_set(key, value)
            if root is not None:
                self.mount(root)
        except BaseException:
            self.shutdown()
            raise

    def mount(self, root: str) -> None:
        """Connect and mount ``root`` (a directory of the file system)."""
        _check(self._lib.ceph_mount(self._cm, root.encode()), f"mounting {root}")

    def conf_set(self, option: str, value: str) -> None:
        """Set a Ceph option for this client (before ``mount``), over the conf file's."""
        _check(
            self._lib.ceph_conf_set(self._cm, option.encode(), value.encode()), f"option {option}"
        )

    def conf_get(self, option: str) -> str:
        """The value of a Ceph option as this client sees it (metavariables expanded)."""
        buf = ctypes.create_string_buffer(PATH_MAX)
        _check(self._lib.ceph_conf_get(self._cm, option.encode(), buf, PATH_MAX), option)
        return buf.value.decode(errors="replace")

    def shutdown(self) -> None:
        """Unmount (flushing buffered writes, releasing capabilities) and free the client."""
        self._lib.ceph_userperm_destroy(self._perms)
        self._lib.ceph_shutdown(self._cm)

    def instance_id(self) -> int:
        """This client's id in the cluster (``client.N``; ``ceph tell mds.X client ls``)."""
        return int(self._lib.ceph_get_instance_id(self._cm))

    def _call(self, what: str, *args: Any) -> int:
        """``ceph_ll_<what>(cmount, *args)``; OSError on failure."""
        return _check(getattr(self._lib, "ceph_ll_" + what)(self._cm, *args), what)

    def _new(self, what: str, parent: Inode, name: bytes, stx: Statx, *args: Any) -> Inode:
        """A call that makes or finds an inode: returns it (referenced), ``stx`` filled."""
        out = _out()
        self._call(what, parent, name, *args, byref(out), byref(stx), STATX_WANT, 0, self._perms)
        return Inode(out.value or 0)

    # -- inodes -------------------------------------------------------------------------

    def lookup_root(self) -> Inode:
        out = _out()
        self._call("lookup_root", byref(out))
        return Inode(out.value or 0)

    def lookup_ino(self, ino: int) -> Inode:
        """The inode numbered ``ino`` (from the client cache, else the MDS); ESTALE if none."""
        out = _out()
        self._call("lookup_vino", _Vino(ino, CEPH_NOSNAP), byref(out))
        return Inode(out.value or 0)

    def lookup(self, parent: Inode, name: bytes, stx: Statx) -> Inode:
        return self._new("lookup", parent, name, stx)

    def put(self, inode: Inode) -> None:
        self._lib.ceph_ll_put(self._cm, inode)

    def getattr(self, inode: Inode, stx: Statx) -> None:
        """Attributes, from the client's cache while it holds capabilities for them."""
        self._call("getattr", inode, byref(stx), STATX_WANT, 0, self._perms)

    def setattr(self, inode: Inode, stx: Statx, mask: int) -> None:
        self._call("setattr", inode, byref(stx), mask, self._perms)

    def readlink(self, inode: Inode) -> bytes:
        buf = ctypes.create_string_buffer(PATH_MAX)
        n = self._call("readlink", inode, buf, PATH_MAX, self._perms)
        return buf.raw[:n]

    def statfs(self, inode: Inode) -> Statvfs:
        st = Statvfs()
        self._call("statfs", inode, byref(st))
        return st

    # -- data ---------------------------------------------------------------------------

    def open(self, inode: Inode, flags: int) -> Fh:
        out = _out()
        self._call("open", inode, flags, byref(out), self._perms)
        return Fh(out.value or 0)

    def close(self, fh: Fh) -> None:
        self._lib.ceph_ll_close(self._cm, fh)

    def read(self, fh: Fh, offset: int, count: int) -> memoryview:
        buf = bytearray(count)
        cbuf = (ctypes.c_char * count).from_buffer(buf) if count else None
        n = self._call("read", fh, offset, count, cbuf)
        return memoryview(buf)[:n]

    def write(self, fh: Fh, offset: int, data: memoryview) -> int:
        """Write ``data`` at ``offset``; returns the count written (libcephfs writes it all)."""
        n = len(data)
        if n == 0:
            return 0
        if data.readonly or not data.c_contiguous:
            cbuf: Any = ctypes.c_char_p(bytes(data))
        else:
            cbuf = (ctypes.c_char * n).from_buffer(data)
        return self._call("write", fh, offset, n, cbuf)

    def fsync(self, fh: Fh, data_only: bool) -> None:
        self._call("fsync", fh, int(data_only))

    # -- namespace ----------------------------------------------------------------------

    def create(
        self, parent: Inode, name: bytes, mode: int, flags: int, stx: Statx
    ) -> tuple[Inode, Fh]:
        ino, fh = _out(), _out()
        self._call("create", parent, name, mode, flags, byref(ino), byref(fh), byref(stx),
                   STATX_WANT, 0, self._perms)  # fmt: skip
        return Inode(ino.value or 0), Fh(fh.value or 0)

    def mkdir(self, parent: Inode, name: bytes, mode: int, stx: Statx) -> Inode:
        return self._new("mkdir", parent, name, stx, mode)

    def mknod(self, parent: Inode, name: bytes, mode: int, rdev: int, stx: Statx) -> Inode:
        return self._new("mknod", parent, name, stx, mode, rdev)

    def symlink(self, parent: Inode, name: bytes, target: bytes, stx: Statx) -> Inode:
        return self._new("symlink", parent, name, stx, target)

    def link(self, inode: Inode, parent: Inode, name: bytes) -> None:
        self._call("link", inode, parent, name, self._perms)

    def unlink(self, parent: Inode, name: bytes) -> None:
        self._call("unlink", parent, name, self._perms)

    def rmdir(self, parent: Inode, name: bytes) -> None:
        self._call("rmdir", parent, name, self._perms)

    def rename(self, src: Inode, src_name: bytes, dst: Inode, dst_name: bytes) -> None:
        self._call("rename", src, src_name, dst, dst_name, self._perms)

    def listdir(self, inode: Inode) -> Iterator[tuple[bytes, Statx]]:
        """Every entry but ``.`` and ``..`` with its attributes (one readdirplus stream)."""
        dirp = _out()
        self._call("opendir", inode, byref(dirp), self._perms)
        try:
            de = Dirent()
            while True:
                stx = Statx()
                rc = self._lib.ceph_readdirplus_r(
                    self._cm, dirp, byref(de), byref(stx), STATX_WANT, 0, None
                )
                if _check(rc, "readdir") == 0:
                    return
                if de.d_name not in (b".", b".."):
                    yield de.d_name, stx
        finally:
            self._lib.ceph_ll_releasedir(self._cm, dirp)
