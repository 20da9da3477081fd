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
