"""The hot paths of the NFS layer (issue 20) decide exactly what the general ones do.

ACCESS computes with plain ints and must grant what the ``Access`` flag arithmetic
granted. File handles verified once are remembered by their codec (``HandleCodec.verified``): the
cache is bounded, never holds a handle that failed, and belongs to one set of keys. That a
removed file's handle is STALE even after it was used (and so remembered) is pinned by the
protocol suite: ``test_handle_of_removed_file_stays_stale_after_inode_reuse`` and
``test_every_procedure_refuses_bad_and_stale_handles`` in ``tests/protocol/test_nfs3.py``.
"""

from __future__ import annotations

import bisect
import dataclasses
import random

import pytest

from ferry.backends import MemoryBackend
from ferry.errors import NfsError
from ferry.nfs3 import filehandle, readdir
from ferry.nfs3.access import R, W, X, access_mask, may
from ferry.nfs3.const import Access, Ftype3, Nfsstat3
from ferry.nfs3.exports import Export
from ferry.nfs3.filehandle import HandleCodec
from ferry.nfs3.readdir import Listing
from ferry.nfs3.types import Entry, ReaddirPage, ReaddirRes
from ferry.rpc.auth import Credentials
from ferry.vocab import Attr, DirEntry, attr_row
from ferry.xdr import Packer

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


def _old_page(
    listing: Listing, cookie: int, dircount: int, maxcount: int, plus: bool
) -> tuple[list[int], bool]:
    """``Listing.page`` as it was before issue 20 (a loop over the entries), as indices."""
    start = bisect.bisect_right(listing.cookies, cookie) if cookie else 0
    budget = max(maxcount, 0) - readdir._REPLY_OVERHEAD
    names_budget = dircount if dircount > 0 else 1 << 30
    out: list[int] = []
    extra = readdir._PLUS_EXTRA if plus else 0
    for i in range(start, len(listing.entries)):
        size = readdir._ENTRY_FIXED + ((len(listing.entries[i].name) + 3) & ~3)
        names_budget -= size
        budget -= size + extra
        if budget < 0 or (names_budget < 0 and out):
            return out, False
        out.append(i)
    return out, True


def test_listing_pages_are_what_the_entry_loop_gave() -> None:
    rng = random.Random(20)
    for size in (0, 1, 2, 7, 300):
        names = {
            bytes(rng.choice(b"abcdefgh") for _ in range(rng.randint(1, 40))) for _ in range(size)
        }
        listing = Listing([DirEntry(n, i + 10) for i, n in enumerate(names)], (1, 2))
        cookies = [0, 1, *listing.cookies, *(c + 1 for c in listing.cookies[:5]), 2**63 - 1]
        for _ in range(400):
            cookie, plus = rng.choice(cookies), rng.random() < 0.5
            dircount = rng.choice([0, 1, 36, 100, 512, 4096, rng.randint(0, 20000)])
            maxcount = rng.choice([0, 100, 300, 400, 1024, 4096, 32768, rng.randint(0, 70000)])
            start, stop, eof = listing.page(cookie, dircount, maxcount, plus)
            assert (list(range(start, stop)), eof) == _old_page(
                listing, cookie, dircount, maxcount, plus
            ), (cookie, dircount, maxcount, plus)


def _encode_attrs(
    codec: HandleCodec, export_id: int, attrs: list[Attr | None]
) -> list[bytes | None]:
    """``HandleCodec.encode_ids`` of the files ``attrs`` describe (None: no handle)."""
    return codec.encode_ids(
        export_id,
        [0 if a is None else a.fileid for a in attrs],
        [None if a is None else a.generation for a in attrs],
    )


def test_readdir_page_packs_what_readdir_res_packs() -> None:
    """The server's one-struct-per-entry packing gives the bytes of the field-by-field
    ``ReaddirRes`` the client decodes, for READDIR and READDIRPLUS, with and without
    attributes and handles, for names of every padding."""
    rng = random.Random(21)
    codec = HandleCodec(KEY)
    for plus in (False, True):
        entries, cookies, attrs, handles = [], [], [], []
        for i in range(60):
            name = bytes(rng.choice(b"xyz") for _ in range(rng.randint(1, 13))) + b"%d" % i
            entries.append(DirEntry(name, 1000 + i))
            cookies.append(rng.getrandbits(63) | 1)
            attr = None
            if rng.random() < 0.8:
                attr = Attr(Ftype3(rng.randint(1, 7)), rng.getrandbits(16), rng.getrandbits(32),
                            rng.getrandbits(32), rng.getrandbits(32), rng.getrandbits(64),
                            rng.getrandbits(64), (rng.getrandbits(32), rng.getrandbits(32)),
                            1000 + i, rng.getrandbits(70), rng.getrandbits(70),
                            rng.getrandbits(70), 7, rng.getrandbits(32))  # fmt: skip
            attrs.append(attr)
            kind = rng.random()
            handles.append(None if kind < 0.1 else b"\1" * 40 if kind < 0.2 else None)
        made = _encode_attrs(codec, 7, attrs)
        handles = [
            made[i] if h is None and rng.random() < 0.9 else h for i, h in enumerate(handles)
        ]
        verf, eof = b"12345678", rng.random() < 0.5
        dir_attr = attrs[0] or attrs[1]
        page = ReaddirPage(dir_attr, verf, entries, cookies, eof)
        if plus:
            page.rows = [None if a is None else attr_row(a, a.fsid) for a in attrs]
            page.handles = handles
        old = ReaddirRes(dir_attr, verf, [
            Entry(e.fileid, e.name, c, a if plus else None, h if plus else None)
            for e, c, a, h in zip(entries, cookies, attrs, handles, strict=True)
        ], eof, plus)  # fmt: skip
        new_p, old_p = Packer(), Packer()
        page.pack(new_p)
        old.pack(old_p)
        assert new_p.get_buffer() == old_p.get_buffer()
        for a, h in zip(attrs, made, strict=True):
            assert h == (None if a is None else codec.encode(7, a.fileid, a.generation))


def test_handles_made_for_pages_are_remembered_and_the_same_as_encode(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``encode_ids`` gives ``encode``'s handles, the first time (a MAC each) and again
    (from ``made``): by export, file id and generation, so another export or a newer
    file on the same id gets its own handle; ``made`` stays bounded."""
    monkeypatch.setattr(filehandle, "MADE_MAX", 64)
    codec = HandleCodec(KEY, [OTHER])
    attrs: list[Attr | None] = [
        Attr(Ftype3.REG, 0o644, 1, 0, 0, 0, 0, (0, 0), fid, 0, 0, 0, 0, gen)
        for fid in (5, 2**64 - 1)
        for gen in (0, 1, 2**32 - 1)
    ]
    attrs.append(None)
    for export_id in (1, 2, 0xFFFF, 1):
        want = [None if a is None else codec.encode(export_id, a.fileid, a.generation)
                for a in attrs]  # fmt: skip
        assert _encode_attrs(codec, export_id, attrs) == want
        assert _encode_attrs(codec, export_id, attrs) == want  # remembered
        for a, h in zip(attrs, want, strict=True):
            if a is not None and h is not None:
                assert codec.decode(h) == (export_id, a.fileid, a.generation)
    assert len(set(codec.made.values())) == len(codec.made) == 18
    many = [Attr(Ftype3.REG, 0, 1, 0, 0, 0, 0, (0, 0), i, 0, 0, 0) for i in range(100)]
    for _ in range(3):
        assert _encode_attrs(codec, 3, many) == [codec.encode(3, i) for i in range(100)]
        assert len(codec.made) <= 64 + 100  # emptied when full, before a page


def test_encode_remembers_its_handles_and_they_carry_the_mac(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``encode`` (a LOOKUP's handle) gives the same handle again from ``made``, sealed
    with the key's MAC (another codec of the key opens it, one of another key refuses
    it), by export, file id and generation; ``made`` stays bounded."""
    monkeypatch.setattr(filehandle, "MADE_MAX", 8)
    codec, fresh = HandleCodec(KEY), HandleCodec(KEY)
    for export_id, fid, gen in [(1, 5, 0), (1, 5, 1), (2, 5, 0), (1, 2**64 - 1, 2**32 + 3)]:
        h = codec.encode(export_id, fid, gen)
        assert codec.encode(export_id, fid, gen) is h  # remembered
        assert fresh.decode(h) == (export_id, fid, gen & 0xFFFFFFFF)
        with pytest.raises(NfsError) as err:
            HandleCodec(OTHER).decode(h)
        assert err.value.status == Nfsstat3.BADHANDLE
    assert len({codec.encode(1, 5, 0), codec.encode(1, 5, 1), codec.encode(2, 5, 0)}) == 3
    for i in range(50):
        assert fresh.decode(codec.encode(3, i)) == (3, i, 0)
        assert len(codec.made) <= 8


def test_listing_is_sorted_by_cookie_and_keeps_no_attributes() -> None:
    rng = random.Random(22)
    attr = Attr(Ftype3.REG, 0o644, 1, 0, 0, 0, 0, (0, 0), 5, 0, 0, 0)
    given = [
        DirEntry(b"n%d" % rng.getrandbits(40), i, attr if i % 3 == 0 else None) for i in range(2000)
    ]
    listing = Listing(given, (1, 2))
    assert listing.cookies == sorted(listing.cookies)
    assert listing.cookies == [readdir.cookie_for(e.name) for e in listing.entries]
    assert sorted((e.name, e.fileid) for e in listing.entries) == sorted(
        (e.name, e.fileid) for e in given
    )
    assert all(e.attr is None for e in listing.entries)
    assert given[0].attr is attr  # the backend's entries are not changed


def test_squash_remembers_its_answers_by_the_credentials_object(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A client's calls share one ``Credentials`` object: its squashed identity is made
    once and given again; other objects (new ones on a freed one's id among them) get
    their own, right answer; the memory stays bounded."""
    from ferry.nfs3 import exports

    monkeypatch.setattr(exports, "SQUASHED_MAX", 4)
    export = Export("/x", MemoryBackend(), anonuid=4242, anongid=4343)
    root = Credentials(1, 0, 0, (0,), "host", 7)
    first = export.squash(root)
    assert export.squash(root) is first
    assert (first.uid, first.gid, first.gids) == (4242, 4343, ())
    for i in range(20):  # each freed at once: ids come round again
        cred = Credentials(1, i % 2 * 1000, i % 3, (0,) if i % 4 else (), "host", i)
        assert export.squash(cred) == _squash_reference(export, cred), cred
        assert len(export._squashed) <= 4
    plain = Export("/y", MemoryBackend(), root_squash=False)
    assert plain.squash(root) is root and not plain._squashed


def _squash_reference(export: Export, cred: Credentials) -> Credentials:
    """``Export.squash`` as it was before issue 20 (``dataclasses.replace``)."""
    if export.all_squash or (export.root_squash and cred.uid == 0):
        return dataclasses.replace(cred, uid=export.anonuid, gid=export.anongid, gids=())
    if export.root_squash and (cred.gid == 0 or 0 in cred.gids):
        gids = tuple(export.anongid if g == 0 else g for g in cred.gids)
        gid = export.anongid if cred.gid == 0 else cred.gid
        return dataclasses.replace(cred, gid=gid, gids=gids)
    return cred


def test_squash_gives_what_dataclasses_replace_gave() -> None:
    backend = MemoryBackend()
    creds = [
        Credentials(1, uid, gid, gids, "host", 7)
        for uid in (0, 1000)
        for gid in (0, 100)
        for gids in ((), (0,), (5, 0, 6), (5, 6))
    ]
    for root_squash in (False, True):
        for all_squash in (False, True):
            export = Export("/x", backend, root_squash=root_squash, all_squash=all_squash,
                            anonuid=4242, anongid=4343)  # fmt: skip
            for cred in creds:
                assert export.squash(cred) == _squash_reference(export, cred), (export, cred)
