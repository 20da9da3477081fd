"""The one table of socket options with a TCP meaning (joyride.sockopts)."""

from __future__ import annotations

import errno
import socket

import pytest

from joyride import sockopts
from joyride.tcp.config import TcpConfig


def test_options_map_to_config_fields() -> None:
    config = sockopts.apply(TcpConfig(), [
        (socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),
        (socket.SOL_SOCKET, socket.SO_SNDBUF, 1),  # raised to Linux's floor
        (socket.SOL_SOCKET, socket.SO_RCVBUF, 65536),
        (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1),
        (socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 30),
        (socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 5),
        (socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 3),
    ])
    assert config.nodelay and config.keepalive
    assert config.send_buffer == config.send_buffer_max == sockopts.MIN_SNDBUF  # fixed
    assert config.receive_buffer == config.receive_buffer_max == 65536
    assert (config.keepalive_idle, config.keepalive_interval, config.keepalive_probes) == (
        30.0, 5.0, 3)


def test_later_options_win_and_unknown_ones_change_nothing() -> None:
    base = TcpConfig()
    assert sockopts.apply(base, [(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1),
                                 (socket.IPPROTO_TCP, socket.TCP_NODELAY, b"\x01")]) is base
    config = sockopts.apply(base, [(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1),
                                   (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 0)])
    assert not config.keepalive


@pytest.mark.parametrize(("optname", "value"), [
    (socket.TCP_KEEPIDLE, 0), (socket.TCP_KEEPIDLE, 32768),
    (socket.TCP_KEEPINTVL, -1), (socket.TCP_KEEPCNT, 128),
])
def test_out_of_range_keepalive_values_are_einval(optname: int, value: int) -> None:
    with pytest.raises(OSError) as info:
        sockopts.changes(socket.IPPROTO_TCP, optname, value)
    assert info.value.errno == errno.EINVAL
