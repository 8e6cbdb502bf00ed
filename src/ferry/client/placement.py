"""READ payloads received straight into the caller's buffer, sans-IO.

A READ reply's data is most of the bytes a client receives. Normally a reply lands in a
buffer of the record reader and is then copied to where the caller wants it. Here the
caller registers a destination per xid (``Placements``); ``PlacingReader`` (the client's
record reader) looks at the start of each record and, for a reply to a registered xid that
``read_prefix`` recognises as a successful READ3resok whose data fits the destination, hands
out the destination itself as the buffer for the payload bytes. The record it then delivers
is only the prefix (RPC reply header and READ3resok up to the opaque length); the client
learns from ``Placements.landed`` that the data is already in place.

Anything else takes the ordinary path, which copies: other replies, errors, multi-fragment
records, a count larger than the destination (never written beyond), odd padding. A
destination is claimed by at most one reply (a duplicate goes the ordinary way and is
ignored as a late reply), and ``abandon`` turns the rest of a landing that is under way into
discarded bytes when its call is given up (the caller's buffer is never written after the
call returned).
"""

from __future__ import annotations

import struct

from ferry.rpc.record import LAST_FRAGMENT, MAX_FRAGMENT, RecordReader

_U32 = struct.Struct(">I")
_PAIR = struct.Struct(">II")
MAX_VERF = 400  # RFC 5531: opaque_auth body<400>
FATTR3_SIZE = 84
# xid, msg_type, reply_stat, verifier (flavor, length, body), accept_stat, status,
# attributes_follow, fattr3, count, eof, data length
MAX_PREFIX = 4 * 5 + MAX_VERF + 4 * 3 + FATTR3_SIZE + 4 * 3
MIN_PLACED = 1024  # smaller records are cheaper to copy than to steer; more than
# MAX_PREFIX, so a whole record always tells (read_prefix never wants more than it has)
NEED_MORE = -1
Prefix = tuple[int, int] | int | None  # (prefix length, data count), NEED_MORE or None


def read_prefix(data: memoryview | bytes | bytearray, record_len: int) -> Prefix:
    """The fixed part of a record that may be a successful READ reply (RFC 5531 section 9
    reply header, RFC 1813 section 3.3.6 READ3resok up to the data's length word).

    ``data`` is the start of the record (any amount of it), ``record_len`` its whole size.
    Returns ``(prefix_len, count)`` when the record is a successful READ reply consisting
    of exactly the prefix, ``count`` data bytes and their padding; ``NEED_MORE`` when
    ``data`` is too short to tell; ``None`` when the record is anything else (the ordinary
    path decodes it, errors included).
    """
    n = len(data)
    pos = 0

    def word() -> int:
        nonlocal pos
        value = int(_U32.unpack_from(data, pos)[0])
        pos += 4
        return value

    if n < 20:
        return NEED_MORE
    word()  # xid
    if word() != 1 or word() != 0:  # msg_type REPLY, reply_stat MSG_ACCEPTED
        return None
    word()  # verifier flavor
    verf = word()
    if verf > MAX_VERF:
        return None
    pos += (verf + 3) & ~3
    if n < pos + 12:
        return NEED_MORE
    if word() != 0 or word() != 0:  # accept_stat SUCCESS, nfsstat3 NFS3_OK
        return None
    follows = word()
    if follows > 1:
        return None
    pos += FATTR3_SIZE * follows
    if n < pos + 12:
        return NEED_MORE
    count, eof = _PAIR.unpack_from(data, pos)
    pos += 8
    if eof > 1 or word() != count:
        return None
    if record_len != pos + ((count + 3) & ~3):
        return None
    return pos, count


class Placements:
    """Destinations registered per xid, and the replies that landed in theirs."""

    __slots__ = ("dests", "landed")

    def __init__(self) -> None:
        self.dests: dict[int, memoryview] = {}  # xid -> where its READ data goes
        self.landed: dict[int, int] = {}  # xid -> bytes placed, until the reply is matched

    def register(self, xid: int, dest: memoryview) -> None:
        self.dests[xid] = dest

    def claim(self, xid: int, count: int) -> memoryview | None:
        """The destination for ``count`` data bytes of ``xid``'s reply (taken: one reply
        only), or ``None`` if there is none or it is too small."""
        dest = self.dests.get(xid)
        if dest is None or count > len(dest):
            return None
        del self.dests[xid]
        return dest

    def pop(self, xid: int) -> int | None:
        """Forget ``xid``; how many bytes of its reply were placed, if it landed."""
        self.dests.pop(xid, None)
        return self.landed.pop(xid, None)


class PlacingReader(RecordReader):
    """A ``RecordReader`` that receives registered READ payloads into their destination."""

    __slots__ = ("placements", "_dest", "_dest_fill", "_skip", "_landing")

    def __init__(self, placements: Placements, max_record: int) -> None:
        super().__init__(max_record)
        self.placements = placements
        self._dest: memoryview | None = None  # where the payload being received goes
        self._dest_fill = 0
        self._skip = 0  # padding bytes after a placed payload, still to be dropped
        # the landing under way: xid, its prefix record, its data count, its destination
        # (None once abandoned: the rest is discarded)
        self._landing: tuple[int, bytes, int, memoryview | None] | None = None

    def get_buffer(self) -> memoryview:
        if self._dest is not None:
            return self._dest[self._dest_fill :]
        return super().get_buffer()

    def buffer_updated(self, n: int) -> None:
        if self._dest is None:
            super().buffer_updated(n)
            return
        self._dest_fill += n
        if self._dest_fill == len(self._dest):
            self._dest = None
            self._landed()

    @property
    def incomplete(self) -> bool:
        return super().incomplete or self._dest is not None or self._skip > 0

    def abandon(self, xid: int) -> memoryview | None:
        """``xid`` was given up: the rest of its payload, if it is landing, is discarded.
        Returns its destination if it was landing (so that it can be registered again)."""
        if self._landing is None or self._landing[0] != xid or self._landing[3] is None:
            return None
        _, record, count, dest = self._landing
        self._landing = (xid, record, count, None)
        assert self._dest is not None
        self._dest = memoryview(bytearray(len(self._dest) - self._dest_fill))
        self._dest_fill = 0
        return dest

    def _landed(self) -> None:
        assert self._landing is not None
        xid, record, count, dest = self._landing
        self._landing = None
        if dest is not None:
            self.placements.landed[xid] = count
        self._records.append(record)  # abandoned: counted as a reply to no call

    # -- parsing -----------------------------------------------------------------------

    def _parse(self) -> None:
        while self._body is None and self._dest is None and self._error is None:
            if self._skip:
                k = min(self._skip, self._end - self._start)
                if not k:
                    return
                self._start += k
                self._skip -= k
                continue
            if self._end - self._start < 4:
                return
            if self.placements.dests and not self._fragments:
                placed = self._place()
                if placed is None:
                    return  # more bytes needed to decide
                if placed:
                    continue
            if not self._take_fragment():
                return

    def _place(self) -> bool | None:
        """Start placing the record at ``_start`` if it qualifies: True if it was taken,
        False if it goes the ordinary way, None if more bytes are needed to tell."""
        small = self._small
        (header,) = _U32.unpack_from(small, self._start)
        length = header & MAX_FRAGMENT
        if not header & LAST_FRAGMENT or length < MIN_PLACED or length > self.max_record:
            return False
        begin = self._start + 4
        avail = min(self._end - begin, length)
        if avail < 4:
            self._room(4 + MAX_PREFIX)
            return None
        (xid,) = _U32.unpack_from(small, begin)
        if xid not in self.placements.dests:
            return False
        found = read_prefix(memoryview(small)[begin : begin + avail], length)
        if found == NEED_MORE:
            self._room(4 + MAX_PREFIX)
            return None
        if not isinstance(found, tuple):
            return False
        prefix, count = found
        dest = self.placements.claim(xid, count)
        if dest is None:
            return False
        record = bytes(small[begin : begin + prefix])
        k = min(count, avail - prefix)
        start = begin + prefix
        dest[:k] = small[start : start + k]
        self._start = start + k
        self._skip = length - prefix - count  # the padding
        self._landing = (xid, record, count, dest)
        if k == count:
            self._landed()
        else:
            self._dest, self._dest_fill = dest[:count], k
        return True
