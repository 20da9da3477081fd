"""Fixtures for the AF_XDP integration tests: a bed plus raw packet sockets on the peer."""

from __future__ import annotations

import contextlib
import socket
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from xsk_helpers import ETH_P_TX, Link, mac_bytes

from joyride.testbed import Testbed

# The venv's editable install was generated before ``xsk/__init__.py`` existed and maps
# ``xsk`` as a namespace package; until ``pip install -e .`` is re-run, the tests import
# it from the source tree (the same files either way).
ROOT = Path(__file__).resolve().parents[3]
if getattr(sys.modules.get("xsk"), "__file__", "") is None:
    del sys.modules["xsk"]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@pytest.fixture
def link(make_testbed: Callable[..., Testbed]) -> Iterator[Link]:
    tb = make_testbed()
    with tb.peer.inside():
        tx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
        tx.bind((tb.peer.ifname, 0))
        rx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_TX))
        rx.bind((tb.peer.ifname, ETH_P_TX))
        rx.setsockopt(socket.SOL_SOCKET, 33, 8 << 20)  # SO_RCVBUFFORCE: no drops in tests
        rx.settimeout(0.2)
    lk = Link(tb, tx, rx, mac_bytes(tb.joy.mac), mac_bytes(tb.peer.mac))
    try:
        yield lk
    finally:
        for close in reversed(lk.closers):
            with contextlib.suppress(Exception):
                close()
        tx.close()
        rx.close()
