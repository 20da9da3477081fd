"""``embed()`` works wherever a user calls it: inside a running asyncio loop (the natural
``async def main(): with embed(...)`` under ``asyncio.run``), inside uvloop's loop, and
outside any loop.

pyroute2's synchronous API runs its requests on the calling thread's *running* loop
when there is one, and fails there ("This event loop is already running"); every
netlink call of steering therefore runs on a worker thread with no loop. These tests
embed on the veth test bed from each place, serve an echo with ``joyride.asyncio``,
check the data end to end, and check that leaving the ``with`` block (still inside the
loop) detaches the program: the detach is a netlink call too.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from api_peers import PORT, echo_handler
from peers import digest, kernel_echo, random_payload

import joyride.asyncio as jasyncio
from joyride.claim import queues
from joyride.embed import embed
from joyride.steer import xdp
from joyride.testbed import Testbed

pytestmark = pytest.mark.integration

PAYLOAD_SIZE = 256 << 10


async def _serve_and_echo(bed: Testbed) -> tuple[str, str]:
    """Serve an echo on PORT with joyride.asyncio; echo a payload from the kernel peer."""
    server = await jasyncio.start_server(echo_handler, None, PORT)
    try:
        payload = random_payload(PAYLOAD_SIZE)
        echoed = await asyncio.to_thread(kernel_echo, bed, payload, port=PORT, timeout=30)
        return digest(payload), digest(echoed)
    finally:
        server.close()


def _attached(bed: Testbed) -> xdp.AttachedProgram | None:
    return xdp.query(xdp.ifindex(bed.joy.ifname))


async def _embed_inside_loop(bed: Testbed) -> dict[str, Any]:
    """The pattern of the issue: ``embed`` entered and left inside a coroutine."""
    loop = asyncio.get_running_loop()
    with embed(bed.joy.ifname, [PORT]) as joy:
        attached = _attached(bed)  # a steering netlink call from the loop's thread
        sent, echoed = await _serve_and_echo(bed)
        mode = joy.mode
    return {
        "loop_module": type(loop).__module__,
        "attached": attached,
        "mode": mode,
        "sent": sent,
        "echoed": echoed,
        "after": _attached(bed),  # detached on exit, still inside the loop
    }


def _run_inside(bed: Testbed, runner: Callable[[Coroutine[Any, Any, dict[str, Any]]],
                                               dict[str, Any]]) -> dict[str, Any]:
    with bed.joy.inside():
        return runner(_embed_inside_loop(bed))


def _check(result: dict[str, Any]) -> None:
    attached = result["attached"]
    assert attached is not None and attached.mode == result["mode"]
    assert result["sent"] == result["echoed"]
    assert result["after"] is None


def test_embed_inside_asyncio_run(testbed: Testbed) -> None:
    result = _run_inside(testbed, asyncio.run)
    assert result["loop_module"].startswith("asyncio")
    _check(result)


def test_embed_inside_uvloop(testbed: Testbed) -> None:
    uvloop = pytest.importorskip("uvloop")

    def run(main: Coroutine[Any, Any, dict[str, Any]]) -> dict[str, Any]:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(main)

    result = _run_inside(testbed, run)
    assert result["loop_module"].startswith("uvloop")
    _check(result)


def test_embed_outside_a_loop_then_asyncio_run(testbed: Testbed) -> None:
    """The README's pattern (embed first, then run the loop) keeps working."""
    with testbed.joy.inside():
        with embed(testbed.joy.ifname, [PORT]) as joy:
            attached = _attached(testbed)
            sent, echoed = asyncio.run(_serve_and_echo(testbed))
            mode = joy.mode
        after = _attached(testbed)
    assert attached is not None and attached.mode == mode
    assert sent == echoed
    assert after is None


def test_steering_netlink_acts_in_the_callers_namespace(testbed: Testbed) -> None:
    """The worker that makes steering's netlink calls starts in the namespace of the
    thread that asks (one that entered the bed's namespace with setns): asked from a
    running loop, from the thread itself and from a thread it started, the query finds
    the bed's interface by its index there and the same program on it. (A worker in
    the root namespace would read whatever device has that index there.)"""
    with testbed.joy.inside(), embed(testbed.joy.ifname, [PORT]):
        index = xdp.ifindex(testbed.joy.ifname)

        async def query() -> xdp.AttachedProgram | None:
            return xdp.query(index)

        inside_loop = asyncio.run(query())
        direct = xdp.query(index)
        seen: list[bool] = []
        # A thread started before entering would be in the root namespace; one started
        # from here inherits the bed's, as the worker does.
        worker = threading.Thread(target=lambda: seen.append(
            xdp.query(xdp.ifindex(testbed.joy.ifname)) is not None))
        worker.start()
        worker.join(30)
    assert inside_loop is not None and inside_loop.name != ""
    assert inside_loop == direct
    assert seen == [True]


def test_rx_queue_count_over_netlink_inside_a_loop(testbed: Testbed) -> None:
    """embed() counts the interface's rx queues; where the driver has no ethtool
    channels that is a netlink query, which must work from a running loop too."""
    with testbed.joy.inside():
        async def count() -> int:
            return queues._netlink_rx_queues(testbed.joy.ifname)

        assert asyncio.run(count()) == queues._netlink_rx_queues(testbed.joy.ifname) >= 1
