"""One worker thread that runs every netlink call of a ``KernelNetwork``.

pyroute2 (0.9) runs its synchronous API on a private event loop with
``run_until_complete``, which raises "Cannot run the event loop while another loop is
running" when called from a thread that runs an asyncio loop — exactly where embedded
mode polls the engine. Its netlink socket is also opened in the namespace of the
thread that first uses it. Both are settled by one thread, created from the caller
(a new thread starts in its creator's network namespace, setns(2) being per thread),
that makes every call. The engine's hot path does not pay for the hop:
``KernelNetwork`` answers from its caches and asks netlink only on a miss (a new
neighbour, an entry older than its TTL, a new destination).

Callers that ask netlink rarely and hold no worker (steering's attach, detach and
query; counting an interface's rx queues) use ``on_netlink_thread``: one call on a
worker started for it, so it acts in the namespace the *calling* thread is in now, and
works from a coroutine, from uvloop's loop and from a plain thread alike.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


class NetlinkWorker:
    """One thread that runs netlink calls, in the namespace of the thread creating it."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="joyride-netlink")
        # Start the thread now, from the caller: it inherits the caller's namespace.
        self._thread = self._pool.submit(threading.get_ident).result()

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        if threading.get_ident() == self._thread:
            return fn(*args, **kwargs)  # already on the worker (a nested call)
        return self._pool.submit(fn, *args, **kwargs).result()

    def close(self) -> None:
        self._pool.shutdown(wait=True)


def on_netlink_thread(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run ``fn(*args, **kwargs)`` on a new ``NetlinkWorker`` and return its result.

    The worker is started here, so it is in the calling thread's network namespace at
    the moment of the call (a long-lived worker would keep the namespace it started in),
    and it runs no event loop, so pyroute2 can run its own. Exceptions propagate.
    """
    worker = NetlinkWorker()
    try:
        return worker.call(fn, *args, **kwargs)
    finally:
        worker.close()
