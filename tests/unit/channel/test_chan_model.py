"""The channel protocol's wake-up steps, every interleaving (chan_model.py).

The correct protocol must reach the end in every interleaving, for every calling
pattern an application uses (one read per level-triggered readiness, edge-triggered
reads to EAGAIN, blocking calls, one blocking read per readiness as iperf3 does;
blocking writes, EPOLLOUT after EAGAIN, polling before every write), ring sizes from
one byte up and reads and writes smaller and larger than the ring. Each step the
protocol takes must matter: the search must find the lost wake-up (or, for the
blocking reader, the stale token) that leaving it out causes.
"""

from __future__ import annotations

import itertools

import pytest
from chan_model import DoorConfig, RxConfig, TxConfig, check_door, check_rx, check_tx

RX_CASES = list(itertools.product(("lt", "et", "block", "select"), (1, 2, 3), (1, 2, 3)))
TX_CASES = list(itertools.product(("block", "nonblock", "pollfirst"), (1, 2, 3), (1, 2)))


@pytest.mark.parametrize(("pattern", "buf", "cap"), RX_CASES)
def test_readable_never_loses_a_wakeup(pattern: str, buf: int, cap: int) -> None:
    result = check_rx(RxConfig(units=3, cap=cap, buf=buf, pattern=pattern))
    assert result.failure is None, (result.failure, result.trace)
    assert result.states > 300  # the search went somewhere


def test_readable_with_more_bytes() -> None:
    result = check_rx(RxConfig(units=5, cap=2, buf=1, pattern="lt"))
    assert result.failure is None, (result.failure, result.trace)


@pytest.mark.parametrize(("pattern", "buf", "cap"), TX_CASES)
def test_writable_never_loses_a_wakeup(pattern: str, buf: int, cap: int) -> None:
    result = check_tx(TxConfig(units=3, cap=cap, buf=buf, pattern=pattern))
    assert result.failure is None, (result.failure, result.trace)
    # EPOLLOUT can be spurious in one race (docs/channels.md, "Writable"): the writer
    # refilled the ring between the service's look at it and its drain of the filler.
    # It then meets EAGAIN once; it is never woken twice in a row for nothing.
    assert result.max_spurious <= 1 or cap == 1


@pytest.mark.parametrize(
    ("step", "expected"),
    [
        ("svc_room_arm", "the service sleeps for room without arming svc_rx_armed"),
        ("app_room_bell", "the reader does not ring the service waiting for room"),
        ("retoken", "a read that cancelled its arm leaves bytes with no token"),
        ("eager_arm", "a read that emptied the ring returns unarmed"),
        ("recheck", "the reader arms and sleeps without looking again"),
        ("settle", "a blocking read returns while a token for its bytes is on its way"),
        ("putting", "the service puts and sends tokens without rx_putting"),
    ],
)
def test_each_readable_step_prevents_a_lost_wakeup(step: str, expected: str) -> None:
    failures = [
        case for case in RX_CASES
        if check_rx(RxConfig(units=3, cap=case[2], buf=case[1], pattern=case[0],
                             skip=frozenset([step]))).failure is not None
    ]
    assert failures, f"leaving out {step!r} ({expected}) lost no wake-up"


@pytest.mark.parametrize(
    ("step", "expected"),
    [
        ("app_bell", "the writer does not ring the sleeping service"),
        ("svc_recheck", "the service arms and sleeps without looking again"),
    ],
)
def test_each_writable_step_prevents_a_lost_wakeup(step: str, expected: str) -> None:
    failures = [
        case for case in TX_CASES
        if check_tx(TxConfig(units=3, cap=case[2], buf=case[1], pattern=case[0],
                             skip=frozenset([step]))).failure is not None
    ]
    assert failures, f"leaving out {step!r} ({expected}) lost no wake-up"


BORROW_CASES = [(*case, min_room, hold_cap) for case in TX_CASES
                for min_room in (0, 1, case[2]) for hold_cap in sorted({1, case[2]})]


@pytest.mark.parametrize(("pattern", "buf", "cap", "min_room", "hold_cap"), BORROW_CASES)
def test_writable_never_loses_a_wakeup_when_tx_is_borrowed(
        pattern: str, buf: int, cap: int, min_room: int, hold_cap: int) -> None:
    """tx as the send ring (snd_borrow): bytes taken in place and given back later, a
    byte at a time as ACKs come, the writer woken only once min_room is free (up to the
    whole ring), TCP holding at most hold_cap of them (snd.cap <= tx's size): no
    interleaving loses the writer's wake-up or the service's. (The give-back's arm is
    not the only rescue: a service that goes to wait for bytes drains the filler too,
    so no search finds a loss without it.)"""
    result = check_tx(TxConfig(units=3, cap=cap, buf=buf, pattern=pattern, borrow=True,
                               min_room=min_room, hold_cap=hold_cap))
    assert result.failure is None, (result.failure, result.trace)
    assert result.states > 100
    assert result.max_spurious <= 1 or cap == 1  # as when tx is copied


def test_a_lost_wakeup_comes_with_its_trace() -> None:
    result = check_rx(RxConfig(units=3, cap=1, buf=1, pattern="lt",
                               skip=frozenset(["recheck"])))
    assert result.failure is not None and "lost wake-up" in result.failure
    assert "app arm" in result.trace and result.trace[-1].startswith("app")


@pytest.mark.parametrize("units", [0, 1, 2, 3])
def test_the_door_never_loses_a_wakeup(units: int) -> None:
    """Embedded mode's door (chan.h, struct jr_door): writes and the shutdown after
    them always reach a service that polls, arms and sleeps in any interleaving."""
    result = check_door(DoorConfig(units=units))
    assert result.failure is None, (result.failure, result.trace)


@pytest.mark.parametrize("step", ["eof_recheck", "door_arm"])
def test_each_door_step_matters(step: str) -> None:
    """Without the look at tx_eof after arming (the review's finding) a shutdown that
    rang an unarmed door leaves the service asleep; without arming the door no ring
    ever writes the eventfd."""
    result = check_door(DoorConfig(units=1, skip=frozenset([step])))
    assert result.failure is not None and "lost wake-up" in result.failure, result
    assert result.trace[-1] == "svc sleep" or "sleep" in result.failure
