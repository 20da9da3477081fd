"""The arena's bell, every interleaving (bell_model.py).

The correct protocol must reach the end in every interleaving, for a level-triggered
registration read once per event and an edge-triggered one read to EAGAIN, reads that
take one byte or all there is, maxevents 1 and 2, and each start the registration can
find. Each step the protocol takes must matter: the search must find the lost wake-up
that leaving it out causes, in a configuration named here.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from bell_model import BELL, SKIPS, TOKEN, Bell, BellConfig, check, lost_wakeup

STARTS = ("fresh", "early", "bell", "born", "unarmed")
CASES = list(itertools.product(("lt", "et"), (1, 2), (1, 2), STARTS))


@pytest.mark.parametrize(("trigger", "buf", "max_events", "start"), CASES)
def test_the_bell_never_loses_a_wakeup(trigger: str, buf: int, max_events: int,
                                       start: str) -> None:
    result = check(BellConfig(units=2, buf=buf, trigger=trigger, max_events=max_events,
                              start=start))
    assert result.failure is None, (result.failure, result.trace)
    assert result.states > 300  # the search went somewhere


@pytest.mark.parametrize(("trigger", "start"), list(itertools.product(("lt", "et"), STARTS)))
def test_the_bell_with_three_arrivals(trigger: str, start: str) -> None:
    result = check(BellConfig(units=3, buf=1, trigger=trigger, start=start))
    assert result.failure is None, (result.failure, result.trace)


@pytest.mark.parametrize(("trigger", "buf", "start"),
                         list(itertools.product(("lt", "et"), (1, 2), STARTS)))
def test_the_bell_with_reads_before_waits(trigger: str, buf: int, start: str) -> None:
    """An application that also reads without an event (a client reading its answer
    right after its request) takes bytes a push then stands for."""
    result = check(BellConfig(units=2, buf=buf, trigger=trigger, start=start, eager=True))
    assert result.failure is None, (result.failure, result.trace)


# Each step left out, with a configuration whose search finds the lost wake-up.
MUTATIONS = [
    # jr_bell_wait: arm, then sleep without jr_slotq_arm's look at the queue: a push
    # between the harvest's take and the arm wrote no door (armed was 0).
    ("sleep_relook", dict(trigger="lt", start="bell")),
    ("sleep_relook", dict(trigger="et", start="bell")),
    # jr_chan_read: arm the bell on an empty rx and return without looking again: a put
    # between the look and the arm found no arm. Only a read the harvest did not arm for
    # shows it: one a token announced (the first arrival of a channel the harvest
    # unlisted before its ring was on). LT only: an ET reader reads again anyway.
    ("read_relook", dict(trigger="lt", buf=1, start="early")),
    ("read_relook", dict(trigger="lt", buf=2, start="early")),
    # jr_bell_harvest: unlist an empty entry without arming. A read before the wait
    # took the byte whose push the harvest then finds: the service took the arm, and
    # nothing arms it again. From a start with no arm, the registration's mark then
    # announces nothing.
    ("harvest_arm", dict(trigger="lt", start="bell", eager=True)),
    ("harvest_arm", dict(trigger="et", start="bell", eager=True)),
    ("harvest_arm", dict(trigger="lt", start="unarmed")),
    # jr_arena_bell_ring without its fence: the look at armed before the push is seen.
    ("svc_fence", dict(trigger="lt", start="bell")),
    ("svc_fence", dict(trigger="et", start="fresh")),
    # LT entries unlisted when reported (as ET), and a read that leaves a byte behind.
    ("lt_as_et", dict(trigger="lt", buf=1, start="bell")),
    ("lt_as_et", dict(trigger="lt", buf=1, max_events=1, start="unarmed")),
]


@pytest.mark.parametrize(("step", "where"), MUTATIONS)
def test_each_step_prevents_a_lost_wakeup(step: str, where: dict[str, Any]) -> None:
    result = check(BellConfig(skip=frozenset([step]), **where))
    assert result.failure is not None, f"leaving out {step!r} ({SKIPS[step]}) lost nothing"
    assert "lost wake-up" in result.failure, result
    assert "app arm bell" in result.trace  # it went to sleep, armed


def test_every_step_named_is_tested() -> None:
    tested = {step for step, _ in MUTATIONS}
    assert tested == SKIPS.keys() - {"et_report_arm"}


def test_lt_as_et_needs_a_read_that_leaves_bytes() -> None:
    """Treated as ET, a level-triggered entry is lost only when a read leaves bytes for
    the next event: a read that takes all there is arms the bell itself."""
    for max_events, start in itertools.product((1, 2), STARTS):
        result = check(BellConfig(trigger="lt", buf=2, max_events=max_events, start=start,
                                  skip=frozenset(["lt_as_et"])))
        assert result.failure is None, (start, result.failure, result.trace)


@pytest.mark.parametrize("start", ["fresh", "bell"])
def test_the_reads_and_the_harvest_arm_for_each_other(start: str) -> None:
    """Once running, the bell arm is sticky (only the service's take and a read's own
    cancel clear it): when the application reads only after events, the read's look
    after its arm, the harvest's arm of an empty entry and the ET report's arm each
    cover for a missing other. Left out alone, none of them loses a wake-up from a
    token-armed channel or a steady one; the read's look and the harvest's arm together
    do from a new channel."""
    for trigger, buf in itertools.product(("lt", "et"), (1, 2)):
        for step in ("read_relook", "harvest_arm", "et_report_arm"):
            alone = check(BellConfig(trigger=trigger, buf=buf, start=start,
                                     skip=frozenset([step])))
            assert alone.failure is None, (step, alone.failure, alone.trace)
    both = check(BellConfig(trigger="lt", start="fresh",
                            skip=frozenset(["read_relook", "harvest_arm"])))
    assert both.failure is not None and "lost wake-up" in both.failure


def test_a_lost_wakeup_comes_with_its_trace() -> None:
    result = check(BellConfig(trigger="lt", start="bell", skip=frozenset(["svc_fence"])))
    assert result.failure is not None and "lost wake-up" in result.failure
    t = result.trace
    # The service looked at armed before the application armed it, and pushed only
    # after the application looked at the queue.
    assert t.index("svc bell not armed") < t.index("app arm bell") < t.index("svc push")


def test_the_invariant() -> None:
    config = BellConfig(units=1)
    asleep = Bell(tail=1, sent=1, rx_armed=0, a_pc="k_sleep")
    assert lost_wakeup(asleep, config)
    assert not lost_wakeup(Bell(tail=1, sent=1, rx_armed=BELL, a_pc="k_sleep", door=1), config)
    assert not lost_wakeup(Bell(tail=1, sent=1, rx_armed=TOKEN, a_pc="k_sleep", tokens=1),
                           config)
    assert not lost_wakeup(Bell(tail=1, sent=1, a_pc="k_sleep", s_todo=("push",)), config)
    assert not lost_wakeup(Bell(tail=1, head=1, sent=1, a_pc="k_sleep"), config)
