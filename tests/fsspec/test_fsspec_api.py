"""fsspec as its users expect it (issue 17): ``host``/``port`` in ``storage_options`` with
``nfs:///path``, pandas writing ``nfs://`` URLs, ``UPath("nfs://...")``, and errors naming
the URL. Against Ferry (the session server) and NFS-Ganesha (``interop``)."""

from __future__ import annotations

import errno
import itertools
import os
import traceback
import urllib.error
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import fsspec
from ferry.nfsfs.filesystem import NfsFileSystem
from helpers import peers

_dirs = itertools.count()


@dataclass
class Served:
    """An export: its URL prefix (no query), the query that reaches it, the storage
    options that say the same, and a fresh directory inside it (server path and local)."""

    base: str  # nfs://host:port
    query: str  # "" or "?nfsport=..&mountport=.."
    options: dict[str, Any]
    path: str  # server path of a fresh directory
    local: Path

    def url(self, rel: str) -> str:
        return f"{self.base}{self.path}/{rel}{self.query}"


@pytest.fixture(params=["ferry", pytest.param("ganesha", marks=pytest.mark.interop)])
def served(request: pytest.FixtureRequest) -> Iterator[Served]:
    if request.param == "ganesha":
        g: peers.GaneshaServer = request.getfixturevalue("ganesha_server")
        ports = {"nfsport": g.nfs_port, "mountport": g.mnt_port}
        query = f"?nfsport={g.nfs_port}&mountport={g.mnt_port}"
        base, export, options = "nfs://127.0.0.1", g.export, {"host": "127.0.0.1", **ports}
    else:
        f: peers.FerryServer = request.getfixturevalue("nfs_server")
        request.getfixturevalue("nfs_fs")  # registers "nfs" when run from a source tree
        base, export, query = f"nfs://127.0.0.1:{f.port}", f.export, ""
        options = {"host": "127.0.0.1", "port": f.port}
    local = Path(export) / f"api{next(_dirs)}"
    local.mkdir()
    yield Served(base, query, options, str(local), local)
    NfsFileSystem.clear_instance_cache()  # a Ganesha server's instance dies with it


# -- host and port in storage_options --------------------------------------------------------


def test_host_and_port_in_storage_options(served: Served) -> None:
    (served.local / "f").write_bytes(b"from options")
    fs = fsspec.filesystem("nfs", **served.options)
    assert fs.cat(f"nfs://{served.path}/f") == b"from options"
    assert fs.cat(f"{served.path}/f") == b"from options"
    with fsspec.open(f"nfs://{served.path}/f", **served.options) as f:
        assert f.read() == b"from options"
    with fsspec.open(f"nfs://{served.path}/g.txt", "w", **served.options) as f:
        f.write("written\n")
    assert (served.local / "g.txt").read_text() == "written\n"
    fs2, path = fsspec.core.url_to_fs(f"nfs://{served.path}/f", **served.options)
    assert (fs2, path) == (fs, f"{served.path}/f")


def test_no_host_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="host="):
        fsspec.open("nfs:///srv/f").open()
    with pytest.raises(ValueError, match="host="):
        fsspec.filesystem("nfs")


# -- pandas ----------------------------------------------------------------------------------


def test_pandas_to_csv_never_loses_the_data_silently(served: Served) -> None:
    """pandas hands URLs of every scheme urllib knows ("nfs" is one) to urllib, writes
    too (pandas issue 50709): it read the file into memory, wrote the frame there and
    returned; a new file failed with "No such file or directory". Writing now fails
    saying how to write; the file is untouched."""
    frame = pd.DataFrame({"a": [1, 2], "b": [3, 4]})
    (served.local / "old.csv").write_bytes(b"old\n")
    for name in ("old.csv", "new.csv"):
        with pytest.raises(urllib.error.URLError, match=r"fsspec\.open\(url, 'w'\)"):
            frame.to_csv(served.url(name), index=False)
    assert (served.local / "old.csv").read_bytes() == b"old\n"
    assert not (served.local / "new.csv").exists()
    # the way the message shows
    with fsspec.open(served.url("new.csv"), "w") as f:
        frame.to_csv(f, index=False)
    assert (served.local / "new.csv").read_bytes() == b"a,b\n1,3\n2,4\n"
    assert pd.read_csv(served.url("new.csv")).equals(frame)
    hostless = f"nfs://{served.path}/new.csv"
    assert pd.read_csv(hostless, storage_options=served.options).equals(frame)


# -- universal_pathlib -----------------------------------------------------------------------


def test_upath(served: Served) -> None:
    from upath import UPath

    (served.local / "in.txt").write_text("hello\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "not explicitly implemented" fallback warning
        root = UPath(f"{served.base}{served.path}{served.query}")
        assert type(root).__name__ == "NfsPath"
    assert root.is_dir() and (root / "in.txt").is_file()
    assert (root / "in.txt").read_text() == "hello\n"
    assert (root / "in.txt").stat().st_size == 6
    (root / "sub" / "deep").mkdir(parents=True)
    (root / "sub" / "deep" / "out.bin").write_bytes(b"\0\1\2")
    assert (served.local / "sub/deep/out.bin").read_bytes() == b"\0\1\2"
    assert sorted(p.name for p in root.iterdir()) == ["in.txt", "sub"]
    assert [p.name for p in root.glob("**/*.bin")] == ["out.bin"]
    assert str(root / "in.txt").startswith("nfs://127.0.0.1")
    (root / "in.txt").unlink()
    assert not (root / "in.txt").exists() and not (served.local / "in.txt").exists()
    with pytest.raises(FileNotFoundError):
        (root / "missing").read_text()
    hostless = UPath(f"nfs://{served.path}", **served.options)
    assert [p.name for p in hostless.iterdir()] == ["sub"]


# -- errors name the URL ---------------------------------------------------------------------


def _names_url(exc: BaseException, url: str) -> None:
    assert isinstance(exc, FileNotFoundError), repr(exc)
    assert exc.errno == errno.ENOENT and exc.filename == url, (exc.filename, url)
    assert exc.strerror == os.strerror(errno.ENOENT)
    assert exc.__cause__ is None and (exc.__context__ is None or exc.__suppress_context__)
    text = "".join(traceback.format_exception(exc))
    assert "direct cause" not in text and "During handling" not in text, text


def test_errors_name_the_url(served: Served) -> None:
    fs = fsspec.filesystem("nfs", **served.options)
    url = served.url("missing")
    for call in (
        lambda: fs.info(url),
        lambda: fs.cat(url),
        lambda: fs.open(url).read(),
        lambda: fs.ls(url),
        lambda: fs.rm(url),
        lambda: fs.info(f"{served.path}/missing"),  # a server path: named as its URL
        lambda: fsspec.open(url).open(),
    ):
        with pytest.raises(FileNotFoundError) as info:
            call()
        _names_url(info.value, url)
    with pytest.raises(urllib.error.URLError) as err:
        pd.read_csv(url)
    assert f"No such file or directory: {url!r}" in str(err.value)
