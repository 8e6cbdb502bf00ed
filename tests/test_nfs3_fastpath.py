"""The hot paths of the NFS layer (issue 20) decide exactly what the general ones do.

ACCESS computes with plain ints and must grant what the ``Access`` flag arithmetic
granted. File handles verified once are remembered by their codec (``HandleCodec.verified``): the
cache is bounded, never holds a handle that failed, and belongs to one set of keys. That a
removed file's handle is STALE even after it was used (and so remembered) is pinned by the
protocol suite: ``test_handle_of_removed_file_stays_stale_after_inode_reuse`` and
``test_every_procedure_refuses_bad_and_stale_handles`` in ``tests/protocol/test_nfs3.py``.
"""

from __future__ import annotations

import pytest

from ferry.errors import NfsError
from ferry.nfs3 import filehandle
from ferry.nfs3.access import R, W, X, access_mask, may
from ferry.nfs3.const import Access, Ftype3, Nfsstat3
from ferry.nfs3.filehandle import HandleCodec
from ferry.rpc.auth import Credentials
from ferry.vocab import Attr

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


def _access_reference(attr: Attr, cred: Credentials, asked: int, read_only: bool) -> int:
    """ACCESS as it was computed before issue 20, with ``Access`` flags and ``may`` per bit."""
    granted = Access(0)
    if may(attr, cred, R):
        granted |= Access.READ
    is_dir = attr.type == Ftype3.DIR
    if may(attr, cred, X):
        granted |= Access.LOOKUP if is_dir else Access.EXECUTE
    if not read_only and may(attr, cred, W):
        granted |= Access.MODIFY | Access.EXTEND
        if is_dir:
            granted |= Access.DELETE
    return int(granted & asked)


def test_access_mask_grants_what_the_flag_arithmetic_granted() -> None:
    """Every file type, a spread of modes, owner/group/other/root, every asked mask."""
    creds = [
        Credentials(1, 0, 0),
        Credentials(1, 100, 200),
        Credentials(1, 300, 200),
        Credentials(1, 300, 9, (5, 200)),
        Credentials(1, 300, 9),
    ]
    modes = [0, 0o1, 0o10, 0o100, 0o444, 0o555, 0o600, 0o640, 0o700, 0o750, 0o777, 0o6755]
    for ftype in Ftype3:
        for mode in modes:
            attr = Attr(ftype, mode, 1, 100, 200, 0, 0, (0, 0), 5, 0, 0, 0)
            for cred in creds:
                for asked in (0, 0x3F, 0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x2A, 0xFFFFFFFF):
                    for ro in (False, True):
                        got = access_mask(attr, cred, asked, ro)
                        assert type(got) is int
                        assert got == _access_reference(attr, cred, asked, ro), (
                            ftype,
                            oct(mode),
                            cred,
                            hex(asked),
                            ro,
                        )
