"""Serve a zip archive, read-only, over NFSv3: a complete user-written Ferry backend.

    ferry serve archive.zip --backend zipfs:ZipBackend      # with examples/ on PYTHONPATH

File ids index a table built once from the member list, implied directories included.
"""

from __future__ import annotations

import stat
import threading
import time
import zipfile

from ferry.backends.base import Attr, DirEntry, FileId, Ftype3, Nfsstat3, ReadOnlyBackend, not_found
from ferry.errors import NfsError


class ZipBackend(ReadOnlyBackend):
    def __init__(self, path: str) -> None:
        self.zip = zipfile.ZipFile(path)
        self.lock = threading.Lock()  # ZipFile reads are not thread-safe
        self.names: list[str] = [""]  # file id - 1 -> member path; "" is the root
        self.infos: list[zipfile.ZipInfo | None] = [None]
        self.children: dict[FileId, dict[bytes, FileId]] = {1: {}}
        self.mtime = int(time.time()) * 10**9
        for info in self.zip.infolist():
            self._add(info.filename.rstrip("/"), info)

    def _add(self, path: str, info: zipfile.ZipInfo | None) -> FileId:
        parent_fid = 1
        parts = path.split("/")
        for depth, part in enumerate(parts):
            sub = "/".join(parts[: depth + 1])
            fid = self.children[parent_fid].get(part.encode())
            if fid is None:
                self.names.append(sub)
                self.infos.append(None)
                fid = len(self.names)
                self.children[parent_fid][part.encode()] = fid
            if depth == len(parts) - 1 and info is not None:
                self.infos[fid - 1] = info
            if depth < len(parts) - 1 or info is None or info.is_dir():
                self.children.setdefault(fid, {})
            parent_fid = fid
        return parent_fid

    def root(self) -> FileId:
        return 1

    def getattr(self, fid: FileId) -> Attr:
        if not 1 <= fid <= len(self.names):
            raise NfsError(Nfsstat3.STALE)
        info = self.infos[fid - 1]
        if fid in self.children:
            return Attr(
                Ftype3.DIR,
                0o555,
                2,
                0,
                0,
                4096,
                4096,
                (0, 0),
                fid,
                self.mtime,
                self.mtime,
                self.mtime,
            )
        assert info is not None
        mode = 0o444 | (info.external_attr >> 16) & 0o111  # readable by all, as archived
        kind = Ftype3.LNK if stat.S_ISLNK(info.external_attr >> 16) else Ftype3.REG
        when = int(time.mktime((*info.date_time, 0, 0, -1))) * 10**9
        return Attr(
            kind, mode, 1, 0, 0, info.file_size, info.compress_size, (0, 0), fid, when, when, when
        )

    def lookup(self, dir_fid: FileId, name: bytes) -> FileId:
        entries = self.children.get(dir_fid)
        if entries is None:
            raise NfsError(Nfsstat3.NOTDIR)
        if name == b"..":
            parent = self.names[dir_fid - 1].rpartition("/")[0]
            return 1 if not parent else self._add(parent, None)
        fid = entries.get(name)
        if fid is None:
            raise not_found(name)
        return fid

    def readdir(self, dir_fid: FileId) -> list[DirEntry]:
        if dir_fid not in self.children:
            raise NfsError(Nfsstat3.NOTDIR)
        return [DirEntry(name, fid) for name, fid in self.children[dir_fid].items()]

    def _member(self, fid: FileId) -> bytes:
        info = self.infos[fid - 1] if 1 <= fid <= len(self.infos) else None
        if info is None or fid in self.children:
            raise NfsError(Nfsstat3.ISDIR if fid in self.children else Nfsstat3.STALE)
        with self.lock:
            return self.zip.read(info)

    def readlink(self, fid: FileId) -> bytes:
        if self.getattr(fid).type != Ftype3.LNK:
            raise NfsError(Nfsstat3.INVAL)
        return self._member(fid)

    def read(self, fid: FileId, offset: int, count: int) -> tuple[bytes, bool]:
        data = self._member(fid)  # small archives: decompress on each read
        return data[offset : offset + count], offset + count >= len(data)

    def close(self) -> None:
        self.zip.close()
