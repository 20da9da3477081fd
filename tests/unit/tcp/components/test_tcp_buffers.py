"""SendBuffer / ReceiveBuffer: FIFO semantics, bounds, and receive autotuning."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from joyride.tcp.buffers import ReceiveBuffer, SendBuffer


def test_send_write_is_bounded_by_capacity() -> None:
    sb = SendBuffer(10)
    assert sb.write(b"abcdefgh") == 8
    assert sb.write(memoryview(b"12345")) == 2
    assert len(sb) == 10 and sb.free == 0
    assert sb.write(b"x") == 0
    assert sb.peek(0, 100) == b"abcdefgh12"


def test_send_peek_offsets_and_consume() -> None:
    sb = SendBuffer(100)
    sb.write(b"0123456789")
    assert sb.peek(3, 4) == b"3456"
    assert sb.peek(8, 10) == b"89"
    assert sb.peek(10, 5) == b""
    assert sb.peek(-1, 5) == b"" and sb.peek(0, 0) == b""
    sb.consume(4)
    assert sb.peek(0, 3) == b"456"
    assert len(sb) == 6 and sb.free == 94


def test_send_consume_out_of_range_is_a_caller_bug() -> None:
    sb = SendBuffer(10)
    sb.write(b"abc")
    with pytest.raises(ValueError):
        sb.consume(4)
    with pytest.raises(ValueError):
        sb.consume(-1)
    assert sb.peek(0, 3) == b"abc"


def test_send_capacity_never_below_length() -> None:
    sb = SendBuffer(10)
    sb.write(b"abcdef")
    sb.capacity = 2
    assert sb.capacity == 6 and sb.free == 0
    sb.capacity = 20
    assert sb.free == 14


def test_send_accepts_non_byte_memoryviews() -> None:
    sb = SendBuffer(100)
    arr = memoryview(bytearray(range(8))).cast("I")
    assert sb.write(arr) == 8
    assert sb.peek(0, 8) == bytes(range(8))


def test_receive_push_bounded_by_window() -> None:
    rb = ReceiveBuffer(8, 64)
    assert rb.window == 8
    assert rb.push(b"hello world") == 8
    assert rb.window == 0
    assert rb.read(5) == b"hello"
    assert rb.window == 5
    assert rb.read() == b" wo"
    assert rb.read() == b""


def test_receive_readinto() -> None:
    rb = ReceiveBuffer(100, 100)
    rb.push(b"abcdef")
    out = bytearray(4)
    assert rb.readinto(out) == 4
    assert out == b"abcd"
    big = bytearray(10)
    assert rb.readinto(memoryview(big)) == 2
    assert big[:2] == b"ef"
    assert len(rb) == 0


def test_receive_constructor_validates() -> None:
    with pytest.raises(ValueError):
        ReceiveBuffer(10, 5)


def test_drs_grows_when_reader_drains_more_than_half_per_rtt() -> None:
    rb = ReceiveBuffer(1000, 8000)
    rb.note_read(0.0, 0.1)  # opens the first measurement epoch
    rb.push(b"x" * 1000)
    rb.read()
    rb.note_read(0.05, 0.1)  # less than one RTT: no decision yet
    assert rb.capacity == 1000
    rb.note_read(0.1, 0.1)  # one RTT, drained 1000 > 500: grow to 2 * 1000
    assert rb.capacity == 2000
    rb.push(b"x" * 2000)
    rb.read()
    rb.push(b"x" * 2000)
    rb.read()
    rb.note_read(0.2, 0.1)  # drained 4000 in one RTT -> 8000, the maximum
    assert rb.capacity == 8000
    rb.push(b"x" * 8000)
    rb.read()
    rb.push(b"x" * 8000)
    rb.read()
    rb.note_read(0.3, 0.1)
    assert rb.capacity == 8000  # never beyond maximum


def test_drs_does_not_grow_for_slow_reader_or_without_rtt() -> None:
    rb = ReceiveBuffer(1000, 8000)
    rb.push(b"x" * 1000)
    rb.read()
    rb.note_read(0.0, None)
    rb.note_read(1.0, None)
    assert rb.capacity == 1000
    rb.note_read(2.0, 0.1)
    rb.push(b"x" * 400)
    rb.read()
    rb.note_read(2.2, 0.1)  # 400 <= half of 1000
    assert rb.capacity == 1000


@settings(max_examples=150, deadline=None)
@given(
    st.integers(min_value=1, max_value=300),
    st.lists(
        st.tuples(st.sampled_from(["write", "peek", "consume"]),
                  st.integers(min_value=0, max_value=400),
                  st.integers(min_value=0, max_value=400)),
        max_size=60,
    ),
)
def test_send_buffer_matches_model(capacity: int, ops: list[tuple[str, int, int]]) -> None:
    sb = SendBuffer(capacity)
    model = bytearray()
    counter = 0
    for op, a, b in ops:
        if op == "write":
            data = bytes((counter + i) & 0xFF for i in range(a))
            taken = sb.write(data)
            assert taken == min(a, capacity - len(model))
            model += data[:taken]
            counter += taken
        elif op == "peek":
            assert sb.peek(a, b) == bytes(model[a : a + b])
        else:
            n = min(a, len(model))
            sb.consume(n)
            del model[:n]
        assert len(sb) == len(model) <= capacity
        assert sb.free == capacity - len(model)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["push", "read", "readinto"]),
                  st.integers(min_value=-1, max_value=300)),
        max_size=60,
    ),
)
def test_receive_buffer_preserves_order(ops: list[tuple[str, int]]) -> None:
    rb = ReceiveBuffer(256, 256)
    sent = bytearray()
    got = bytearray()
    counter = 0
    for op, a in ops:
        if op == "push":
            data = bytes((counter + i) % 251 for i in range(max(a, 0)))
            taken = rb.push(data)
            sent += data[:taken]
            counter += taken
        elif op == "read":
            got += rb.read(a)
        else:
            out = bytearray(max(a, 0))
            n = rb.readinto(out)
            got += out[:n]
        assert len(rb) <= rb.capacity == 256
        assert len(rb) + len(got) == len(sent)
    got += rb.read()
    assert got == sent


def test_send_buffer_cost_is_per_call_not_per_buffer() -> None:
    # Consuming from the front of a large buffer must not copy the remainder: 20k
    # small consumes of a 32 MiB buffer would take seconds if each were O(size).
    sb = SendBuffer(32 << 20)
    sb.write(bytes(32 << 20))
    start = time.perf_counter()
    for _ in range(20_000):
        sb.peek(0, 1448)
        sb.consume(1448)
    assert time.perf_counter() - start < 1.0
    assert len(sb) == (32 << 20) - 20_000 * 1448


@settings(max_examples=200, deadline=None)
@given(
    st.integers(min_value=1, max_value=20_000),
    st.lists(
        st.tuples(st.sampled_from(["write", "peek", "consume", "capacity"]),
                  st.integers(min_value=0, max_value=9000),
                  st.integers(min_value=0, max_value=9000)),
        max_size=80,
    ),
)
def test_send_ring_matches_model_across_wraps_and_growth(
    capacity: int, ops: list[tuple[str, int, int]]
) -> None:
    """Large writes and consumes wrap the ring and grow it; contents never change."""
    sb = SendBuffer(capacity)
    model = bytearray()
    counter = 0
    for op, a, b in ops:
        if op == "write":
            data = bytes((counter + i) % 253 for i in range(a))
            room = sb.capacity - len(model)
            taken = sb.write(data)
            assert taken == min(a, room)
            model += data[:taken]
            counter += taken
        elif op == "peek":
            assert sb.peek(a, b) == bytes(model[a : a + b])
        elif op == "consume":
            n = min(a, len(model))
            sb.consume(n)
            del model[:n]
        else:
            sb.capacity = a
            assert sb.capacity == max(a, len(model))
        assert len(sb) == len(model) <= sb.capacity
        assert sb.free == sb.capacity - len(model)
    assert sb.peek(0, len(model)) == bytes(model)


def test_send_ring_releases_a_big_ring_when_drained() -> None:
    sb = SendBuffer(1 << 20)
    sb.write(bytes(1 << 20))
    sb.consume(1 << 20)
    assert len(sb) == 0 and sb.free == 1 << 20
    assert sb.write(b"next") == 4 and sb.peek(0, 4) == b"next"


def test_send_write_after_consume_is_per_call_not_per_buffer() -> None:
    # A sender keeping its buffer full (consume a little, write a little) must not
    # move what stays buffered: 20k rounds at 32 MiB would take minutes if each call
    # copied the remainder, as a bytearray FIFO's append after a front delete does.
    sb = SendBuffer(32 << 20)
    sb.write(bytes(32 << 20))
    piece = bytes(1448)
    start = time.perf_counter()
    for _ in range(20_000):
        sb.consume(1448)
        assert sb.write(piece) == 1448
    assert time.perf_counter() - start < 1.0
    assert len(sb) == 32 << 20


@settings(max_examples=150, deadline=None)
@given(
    st.integers(min_value=1, max_value=5000),
    st.lists(
        st.tuples(st.sampled_from(["fill", "push", "read"]),
                  st.integers(min_value=0, max_value=6000)),
        max_size=60,
    ),
)
def test_receive_in_place_fill_matches_model(capacity: int, ops: list[tuple[str, int]]) -> None:
    """free_region/commit (how the C fast path delivers) keeps FIFO order with pushes
    and reads interleaved, across wraps, and never offers more than the window."""
    rb = ReceiveBuffer(capacity, capacity)
    model = bytearray()
    counter = 0
    for op, a in ops:
        if op == "fill":
            ring, start, room = rb.free_region()
            assert 0 <= room <= rb.window and start + room <= len(ring)
            if rb.window and len(rb) == 0:
                assert room == rb.window  # an empty buffer offers all of it at once
            n = min(a, room)
            data = bytes((counter + i) % 251 for i in range(n))
            ring[start : start + n] = data
            rb.commit(n)
            model += data
            counter += n
        elif op == "push":
            data = bytes((counter + i) % 251 for i in range(a))
            taken = rb.push(data)
            model += data[:taken]
            counter += taken
        else:
            assert rb.read(a) == bytes(model[:a])
            del model[:a]
        assert len(rb) == len(model) <= capacity
    assert rb.read() == bytes(model)


def test_receive_commit_beyond_window_is_a_caller_bug() -> None:
    rb = ReceiveBuffer(10, 10)
    with pytest.raises(ValueError):
        rb.commit(1)  # no region was asked for: nothing to commit
    ring, start, room = rb.free_region()
    assert (start, room) == (0, 10)
    with pytest.raises(ValueError):
        rb.commit(11)
    ring[:10] = b"0123456789"
    rb.commit(10)
    assert rb.read(4) == b"0123"
    assert rb.free_region()[2] == 4 and rb.window == 4  # [10, end) is gone: from 0
