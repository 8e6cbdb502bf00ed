"""The hot paths of the NFS layer (issue 20) decide exactly what the general ones do.

File handles verified once are remembered by their codec (``HandleCodec.verified``): the
cache is bounded, never holds a handle that failed, and belongs to one set of keys. That a
removed file's handle is STALE even after it was used (and so remembered) is pinned by the
protocol suite: ``test_handle_of_removed_file_stays_stale_after_inode_reuse`` and
``test_every_procedure_refuses_bad_and_stale_handles`` in ``tests/protocol/test_nfs3.py``.
"""

from __future__ import annotations

import pytest

from ferry.errors import NfsError
from ferry.nfs3 import filehandle
from ferry.nfs3.const import Nfsstat3
from ferry.nfs3.filehandle import HandleCodec

KEY, OTHER = bytes(range(32)), bytes(range(32, 64))


def _edit(handle: bytes, at: int) -> bytes:
    return handle[:at] + bytes([handle[at] ^ 1]) + handle[at + 1 :]


def test_a_verified_handle_is_remembered() -> None:
    codec = HandleCodec(KEY)
    fh = codec.encode(3, 42, 7)
    assert codec.decode(fh) == (3, 42, 7)
    assert codec.verified == {fh: (3, 42, 7)}
    assert codec.decode(bytes(fh)) == (3, 42, 7)


def test_edited_handles_fail_every_time_and_are_never_remembered() -> None:
    codec = HandleCodec(KEY)
    fh = codec.encode(3, 42, 7)
    codec.decode(fh)
    for at in (0, 1, 5, 15, len(fh) - 1):
        for _ in range(2):
            with pytest.raises(NfsError) as err:
                codec.decode(_edit(fh, at))
            assert err.value.status == Nfsstat3.BADHANDLE
    for short in (b"", fh[:-1], fh + b"\0"):
        with pytest.raises(NfsError):
            codec.decode(short)
    assert list(codec.verified) == [fh]


def test_the_cache_is_bounded() -> None:
    codec = HandleCodec(KEY)
    for fileid in range(filehandle.VERIFIED_MAX * 2 + 10):
        assert codec.decode(codec.encode(1, fileid, 0)) == (1, fileid, 0)
        assert len(codec.verified) <= filehandle.VERIFIED_MAX


def test_a_handle_verified_under_one_key_is_not_under_another() -> None:
    """New keys make a new codec, which remembers nothing: a handle the old codec verified
    is BADHANDLE once its key is no longer accepted, and still opens while it is."""
    old = HandleCodec(KEY)
    fh = old.encode(1, 42, 7)
    assert old.decode(fh) == (1, 42, 7)
    rotated = HandleCodec(OTHER, [KEY])
    assert rotated.verified == {}
    assert rotated.decode(fh) == (1, 42, 7)
    dropped = HandleCodec(OTHER)
    with pytest.raises(NfsError) as err:
        dropped.decode(fh)
    assert err.value.status == Nfsstat3.BADHANDLE
    assert dropped.verified == {}
