"""fsspec's own conformance suite (``fsspec.tests.abstract``) against a Ferry server.

Every class of the suite that the installed fsspec ships runs here: copy (cp), get, put,
open (exclusive create) and pipe (exclusive create). Nothing is excluded: NFS has real,
empty directories, so ``supports_empty_directories`` keeps its default (True).
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable

import fsspec.tests.abstract as abstract
import pytest

from ferry.nfsfs.filesystem import NfsFileSystem


class NfsFixtures(abstract.AbstractFixtures):  # type: ignore[misc]
    @pytest.fixture
    def fs(self, nfs_fs: NfsFileSystem) -> NfsFileSystem:
        return nfs_fs

    @pytest.fixture
    def fs_join(self) -> Callable[..., str]:
        return posixpath.join

    @pytest.fixture
    def fs_path(self, nfs_dir: str) -> str:
        return nfs_dir


class TestNfsCopy(abstract.AbstractCopyTests, NfsFixtures):  # type: ignore[misc]
    pass


class TestNfsGet(abstract.AbstractGetTests, NfsFixtures):  # type: ignore[misc]
    pass


class TestNfsPut(abstract.AbstractPutTests, NfsFixtures):  # type: ignore[misc]
    pass


class TestNfsOpen(abstract.AbstractOpenTests, NfsFixtures):  # type: ignore[misc]
    pass


class TestNfsPipe(abstract.AbstractPipeTests, NfsFixtures):  # type: ignore[misc]
    pass
