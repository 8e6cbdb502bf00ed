"""``ServerConnection``, the sans-IO state every server model runs: no sockets, no threads,
no clock (time is an argument). Deadlines, backpressure, EOF, oversized records and the
in-flight limit, each checked at exact instants."""

from __future__ import annotations

import pytest

from ferry.errors import RecordError
from ferry.rpc.record import frame_bytes
from ferry.server.connection import Limits, ServerConnection

CALL = b"\0\0\0\x07" + b"\0" * 36  # any 40 bytes: the connection never decodes calls
RECORD = frame_bytes(CALL)
T0 = 1000.0


def connection(**limits: float) -> ServerConnection:
    base = {"idle_timeout": 0.0, "record_timeout": 0.0, "send_timeout": 0.0}
    return ServerConnection(Limits(**{**base, **limits}), T0)  # type: ignore[arg-type]


def test_calls_come_out_whole_and_in_order_and_replies_are_framed() -> None:
    conn = connection()
    data = RECORD + frame_bytes(b"second") + RECORD[:10]
    for i in range(0, len(data), 7):  # in any pieces
        conn.receive_data(data[i : i + 7], T0)
    assert conn.next_call() == CALL
    assert conn.next_call() == b"second"
    assert conn.next_call() is None
    assert conn.reader.incomplete
    assert b"".join(conn.send([b"ab", b"cd"])) == frame_bytes(b"abcd")


def test_buffer_updated_takes_bytes_written_into_get_buffer() -> None:
    conn = connection()
    buf = conn.get_buffer()
    buf[: len(RECORD)] = RECORD
    conn.buffer_updated(len(RECORD), T0)
    assert conn.next_call() == CALL


def test_calls_done_together_free_their_room_at_once() -> None:
    """The asyncio adapter answers a batch of calls and says so in one ``call_done``."""
    conn = ServerConnection(Limits(idle_timeout=10), T0, max_in_flight=3)
    conn.receive_data(RECORD * 4, T0)
    assert [conn.next_call() for _ in range(4)] == [CALL, CALL, CALL, None]
    assert not conn.reading and conn.deadline() is None
    conn.call_done(T0 + 2, 3)
    assert conn.in_flight == 0 and conn.reading
    assert conn.deadline() == T0 + 12
    assert conn.next_call() == CALL


def test_one_fragment_records_after_a_multi_fragment_one_come_out_whole() -> None:
    """The reader takes a record of one fragment directly, never mixed with fragments
    still waiting for their last one."""
    conn = connection()
    data = frame_bytes(b"first-part-" + b"second-part", max_fragment=11) + RECORD
    buf = conn.get_buffer()
    buf[: len(data)] = data
    conn.buffer_updated(len(data), T0)
    assert conn.next_call() == b"first-part-second-part"
    assert conn.next_call() == CALL
    assert conn.next_call() is None


def test_nothing_expires_with_every_limit_disabled() -> None:
    conn = connection()
    conn.receive_data(RECORD[:5], T0)
    conn.pause_writing(T0)
    assert conn.deadline() is None
    assert conn.expired(T0 + 1e9) is None


def test_idle_deadline_runs_from_the_last_activity_and_not_during_a_call() -> None:
    conn = connection(idle_timeout=10)
    assert conn.deadline() == T0 + 10
    assert conn.expired(T0 + 9.9) is None
    timeout = conn.expired(T0 + 10)
    assert timeout is not None and timeout.kind == "idle"
    conn.receive_data(RECORD, T0 + 5)
    assert conn.next_call() == CALL
    assert conn.deadline() is None  # a call in progress: our time, not the client's
    assert conn.expired(T0 + 100) is None
    conn.call_done(T0 + 100)
    assert conn.deadline() == T0 + 110


def test_record_deadline_is_not_extended_by_trickling_bytes() -> None:
    conn = connection(idle_timeout=100, record_timeout=3)
    conn.receive_data(RECORD[:4], T0 + 1)
    assert conn.deadline() == T0 + 4
    conn.receive_data(RECORD[4:6], T0 + 2)  # slowloris: a byte now and then
    conn.receive_data(RECORD[6:7], T0 + 3.5)
    assert conn.deadline() == T0 + 4
    timeout = conn.expired(T0 + 4)
    assert timeout is not None and timeout.kind == "record"
    conn.receive_data(RECORD[7:], T0 + 3.9)  # completed in time: the clock stops
    assert conn.deadline() == T0 + 3.9 + 100
    assert conn.expired(T0 + 4) is None


def test_record_clock_stops_while_reading_is_paused_and_restarts_after() -> None:
    conn = ServerConnection(Limits(idle_timeout=0, record_timeout=3, max_in_flight=1), T0)
    conn.receive_data(RECORD + RECORD[:5], T0)
    assert conn.next_call() == CALL
    assert not conn.reading
    assert conn.deadline() is None  # the half record waits for us, not for the client
    assert conn.expired(T0 + 50) is None
    conn.call_done(T0 + 50)
    assert conn.reading
    assert conn.deadline() == T0 + 53


def test_in_flight_limit_holds_calls_back_and_pauses_reading() -> None:
    conn = ServerConnection(Limits(max_in_flight=2), T0)
    conn.receive_data(RECORD * 3, T0)
    assert conn.next_call() == CALL
    assert conn.reading
    assert conn.next_call() == CALL
    assert not conn.reading
    assert conn.next_call() is None  # the third waits
    assert conn.in_flight == 2
    conn.call_done(T0 + 1)
    assert conn.reading
    assert conn.next_call() == CALL
    assert conn.next_call() is None


def test_a_peer_that_does_not_read_pauses_us_and_is_cut_off_after_send_timeout() -> None:
    conn = connection(idle_timeout=100, send_timeout=5)
    conn.receive_data(RECORD * 2, T0)
    assert conn.next_call() == CALL
    conn.pause_writing(T0 + 1)
    conn.call_done(T0 + 1)
    assert not conn.reading
    assert conn.next_call() is None  # backpressure: no more calls while replies pile up
    assert conn.deadline() == T0 + 6
    timeout = conn.expired(T0 + 6)
    assert timeout is not None and timeout.kind == "send"
    assert "does not read its replies" in str(timeout)
    conn.resume_writing(T0 + 4)
    assert conn.reading
    assert conn.next_call() == CALL
    assert conn.expired(T0 + 6) is None


def test_eof_finishes_once_every_call_is_answered() -> None:
    conn = connection()
    conn.receive_data(RECORD, T0)
    conn.receive_data(b"", T0)
    assert conn.eof and not conn.reading
    assert conn.finished() is None  # a call still to take
    assert conn.next_call() == CALL
    assert conn.finished() is None  # ... and to answer
    conn.call_done(T0 + 1)
    assert conn.finished() == "eof"


def test_eof_mid_record_finishes_and_tells_it_was_cut() -> None:
    conn = connection(record_timeout=3)
    conn.receive_data(RECORD[:9], T0)
    conn.eof_received()
    assert conn.next_call() is None
    assert conn.finished() == "eof"
    assert conn.reader.incomplete
    assert conn.deadline() is None


def test_an_oversized_record_is_refused_after_the_calls_before_it() -> None:
    conn = ServerConnection(Limits(max_record=64), T0)
    conn.receive_data(RECORD + b"\x80\x00\x10\x00", T0)  # then a 4 KiB record is announced
    assert conn.next_call() == CALL
    with pytest.raises(RecordError, match="exceeds limit 64"):
        conn.next_call()
    assert conn.reader.buffered < 64  # refused before it was buffered


def test_an_idle_connection_yields_at_once_to_a_waiting_client() -> None:
    conn = connection(idle_timeout=300)
    assert conn.finished() is None
    conn.client_waiting(T0 + 1)
    assert conn.finished() == "yield"


def test_a_busy_connection_gets_the_grace_when_a_client_waits() -> None:
    conn = connection(idle_timeout=300, record_timeout=60)
    conn.receive_data(RECORD[:9], T0)
    conn.client_waiting(T0 + 1)
    conn.client_waiting(T0 + 1.5)  # the first sighting counts
    assert conn.finished() is None
    assert conn.deadline() == T0 + 3  # waiting_grace 2 s, not the record's 60 s
    timeout = conn.expired(T0 + 3)
    assert timeout is not None and timeout.kind == "record"
    assert "another client is waiting" in str(timeout)
