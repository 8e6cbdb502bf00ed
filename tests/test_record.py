"""Record marking (RFC 5531 section 11): fragments, limits, and stream splitting."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ferry.errors import RecordError
from ferry.rpc.record import RecordReader, frame, frame_bytes


def test_single_fragment_header_bytes() -> None:
    assert frame_bytes(b"abcd") == b"\x80\x00\x00\x04abcd"


def test_multi_fragment_record_is_reassembled() -> None:
    wire = b"\x00\x00\x00\x03abc" + b"\x00\x00\x00\x02de" + b"\x80\x00\x00\x01f"
    r = RecordReader()
    r.receive_data(wire)
    assert r.next_record() == b"abcdef"
    assert r.next_record() is None
    assert not r.incomplete


def test_frame_splits_into_fragments() -> None:
    wire = b"".join(frame([b"0123456789"], max_fragment=4))
    assert wire == (b"\x00\x00\x00\x040123" + b"\x00\x00\x00\x044567" + b"\x80\x00\x00\x0289")


def test_record_over_limit_raises_before_buffering() -> None:
    r = RecordReader(max_record=1024)
    r.receive_data(b"\x80\x10\x00\x00")  # declares 1 MiB
    with pytest.raises(RecordError):
        r.next_record()


def test_fragments_adding_up_over_limit_raise() -> None:
    r = RecordReader(max_record=10)
    r.receive_data(b"\x00\x00\x00\x08" + b"x" * 8 + b"\x80\x00\x00\x08")
    with pytest.raises(RecordError):
        r.next_record()


def test_eof_mid_record_is_reported() -> None:
    r = RecordReader()
    r.receive_data(b"\x80\x00\x00\x10abc")
    r.receive_data(b"")
    assert r.next_record() is None
    assert r.eof and r.incomplete


@given(
    st.lists(st.binary(max_size=300), min_size=1, max_size=8),
    st.integers(1, 64),
    st.integers(1, 97),
)
def test_any_split_of_the_stream_yields_the_records(
    records: list[bytes], frag: int, chunk: int
) -> None:
    wire = b"".join(
        b"".join(frame([rec], max_fragment=frag)) if rec else frame_bytes(rec) for rec in records
    )
    r = RecordReader()
    out = []
    for i in range(0, len(wire), chunk):
        r.receive_data(wire[i : i + chunk])
        while (rec := r.next_record()) is not None:
            out.append(rec)
    assert out == records


def test_empty_fragments_count_towards_the_limit() -> None:
    r = RecordReader(max_record=1024)
    r.receive_data(b"\0\0\0\0" * 512)
    with pytest.raises(RecordError):
        r.next_record()


def test_buffer_starts_small_and_grows_for_a_busy_stream() -> None:
    """An idle connection holds 4 KiB, not 64; a stream of records grows it as it needs."""
    r = RecordReader()
    assert len(r.get_buffer()) <= 4096
    stream = b"".join(frame_bytes(bytes([i]) * (i * 97 % 3000)) for i in range(200))
    held = []  # views the IO layer still holds while buffer_updated runs (asyncio does)
    pos = 0
    while pos < len(stream):
        buf = r.get_buffer()
        held.append(buf)
        n = min(len(buf), len(stream) - pos)
        buf[:n] = stream[pos : pos + n]
        pos += n
        r.buffer_updated(n)
    got = []
    while (rec := r.next_record()) is not None:
        got.append(bytes(rec))
    assert got == [bytes([i]) * (i * 97 % 3000) for i in range(200)]
    assert 4096 < len(r.get_buffer()) <= 64 * 1024


def test_calls_read_one_at_a_time_start_at_the_front_of_the_buffer() -> None:
    """A read that holds whole records only leaves the next read the whole buffer: a client
    with one call in flight never has a call split over two reads (nor grows the buffer)."""
    r = RecordReader()
    call = frame_bytes(b"c" * 150)
    for _ in range(100):  # 15 KiB in all: past the first buffer's end several times
        buf = r.get_buffer()
        assert len(buf) == 4096
        buf[: len(call)] = call
        r.buffer_updated(len(call))
        assert r.next_record() == b"c" * 150
        assert not r.incomplete


def test_a_small_fragment_larger_than_the_first_buffer_is_assembled() -> None:
    r = RecordReader()
    r.receive_data(frame_bytes(b"x" * 20_000)[:3])  # header split: buffer must grow later
    r.receive_data(frame_bytes(b"x" * 20_000)[3:])
    assert r.next_record() == b"x" * 20_000


def test_a_large_fragment_buffer_is_used_again_once_its_record_is_dropped() -> None:
    """The next large fragment of the same size lands in the last one's buffer when the
    record was answered and dropped (no zeroed 1 MiB per WRITE), never while anything
    still holds it: a record taken and kept, a view of it, or one not yet taken."""
    r = RecordReader()
    one, two, three = (bytes([i]) * 300_000 for i in (1, 2, 3))
    r.receive_data(frame_bytes(one))
    first = r.next_record()
    assert first == one
    address = id(first)
    del first  # answered
    r.receive_data(frame_bytes(two))
    second = r.next_record()
    assert second == two and id(second) == address  # the same buffer, filled anew
    view = memoryview(second)[100:200]
    del second
    r.receive_data(frame_bytes(three))
    third = r.next_record()
    assert third == three and bytes(view) == b"\2" * 100  # a view kept it from reuse
    r.receive_data(frame_bytes(one) + frame_bytes(two))  # two queued: distinct buffers
    assert [r.next_record(), r.next_record()] == [one, two]
    r.receive_data(frame_bytes(three[:-4]))  # another size: a buffer of its own
    assert r.next_record() == three[:-4]
