"""Kernel netlink queries that work from inside a running asyncio loop.

pyroute2 (0.9) runs its synchronous API on a private event loop with
``run_until_complete``, which raises "Cannot run the event loop while another loop is
running" when called from a thread that runs an asyncio loop — exactly where embedded
mode polls the engine. Every netlink call of an embedded engine therefore runs on one
worker thread, created in the caller's network namespace. The engine's hot path does
not pay for it: ``KernelNetwork`` answers from its caches and asks netlink only on a
miss (a new neighbour, an entry older than its TTL, a new destination).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from joyride.engine.network import KernelNetwork

T = TypeVar("T")


class NetlinkWorker:
    """One thread that runs netlink calls; start it in the namespace they concern."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="joyride-netlink")
        # Start the thread now, from the caller (it inherits the caller's namespace).
        self._thread = self._pool.submit(threading.get_ident).result()

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        if threading.get_ident() == self._thread:
            return fn(*args, **kwargs)  # already on the worker (nested call)
        return self._pool.submit(fn, *args, **kwargs).result()

    def close(self) -> None:
        self._pool.shutdown(wait=True)


class LoopSafeNetwork(KernelNetwork):
    """``KernelNetwork`` whose netlink calls all run on a ``NetlinkWorker``."""

    def __init__(self, ifname: str, worker: NetlinkWorker) -> None:
        self._worker = worker
        worker.call(super().__init__, ifname)

    def _netlink(self, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return self._worker.call(super()._netlink, call, *args, **kwargs)

    def close(self) -> None:
        self._worker.call(super().close)
