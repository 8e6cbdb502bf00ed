"""``UPath("nfs://host:port/export/dir")``: universal_pathlib's ``pathlib`` interface over
Ferry's fsspec ``nfs`` file system.

universal_pathlib finds ``NfsPath`` through the ``universal_pathlib.implementations``
entry point (it imports this module only then: Ferry itself never needs universal_pathlib).
Without it, universal_pathlib falls back to a generic class with a warning that it is
untested, and prints ``nfs:///export/dir``: a URL without the server. Here ``str(path)``
is the whole URL (``nfs://host:port/export/dir``, as errors name it), so that it can be
handed to pandas or ``fsspec.open`` as it is. Paths are server paths, as in fsspec.
"""

from __future__ import annotations

from upath import UPath

import fsspec
from ferry.nfsfs.filesystem import NfsFileSystem

try:  # universal_pathlib takes its path rules from the registered fsspec class
    fsspec.get_filesystem_class("nfs")
except (ImportError, ValueError):  # run from a source tree: no entry point registered it
    fsspec.register_implementation("nfs", NfsFileSystem)


class NfsPath(UPath):
    """A path on an NFS server; ``UPath("nfs://...")`` or, with the server in
    storage_options, ``UPath("nfs:///export/dir", host=..., port=...)``."""

    __slots__ = ()

    def __str__(self) -> str:
        if getattr(self, "_relative_base", None) is not None or not self.storage_options.get(
            "host"
        ):
            return super().__str__()
        # not self.fs: UPath makes that from str(self); an NfsFileSystem is only a URL
        # until used, and fsspec hands out the one cached instance for these options
        return str(NfsFileSystem(**self.storage_options).url_of(self.path))
