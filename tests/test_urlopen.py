"""``ferry.nfsfs.urlopen.install``: adds the nfs handler once, and keeps a program's own opener."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator

import pytest

from ferry.nfsfs.urlopen import NfsHandler, install


@pytest.fixture
def restore_opener() -> Iterator[None]:
    saved = urllib.request._opener  # type: ignore[attr-defined]
    yield
    urllib.request.install_opener(saved)


def nfs_handlers() -> int:
    opener = urllib.request._opener  # type: ignore[attr-defined]
    return sum(isinstance(h, NfsHandler) for h in opener.handlers)


def test_install_is_idempotent(restore_opener: None) -> None:
    urllib.request.install_opener(None)  # type: ignore[arg-type]
    install()
    install()
    assert nfs_handlers() == 1


def test_install_keeps_a_custom_opener(restore_opener: None) -> None:
    class Mine(urllib.request.BaseHandler):
        def mine_open(self, req: urllib.request.Request) -> None:
            return None

    mine = urllib.request.build_opener(Mine)
    urllib.request.install_opener(mine)
    install()
    assert urllib.request._opener is mine  # type: ignore[attr-defined]
    assert nfs_handlers() == 1 and any(isinstance(h, Mine) for h in mine.handlers)


def test_writes_are_refused(restore_opener: None) -> None:
    install()
    with pytest.raises(urllib.error.URLError, match="read-only"):
        urllib.request.urlopen("nfs://127.0.0.1:1/export/f", data=b"x")
