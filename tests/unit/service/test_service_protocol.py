"""The application protocol's messages and names: round trips, and junk never raises
anything but ProtocolError (or None for names)."""

from __future__ import annotations

import contextlib
import os
import socket

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from joyride.service import protocol

ips = st.binary(min_size=4, max_size=4)
ports = st.integers(0, 65535)


@settings(max_examples=200, deadline=None)
@given(op=st.integers(0, 65535), ip=ips, port=ports,
       name=st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=100),
       flags=st.integers(0, 65535))
def test_request_round_trip(op: int, ip: bytes, port: int, name: str, flags: int) -> None:
    req = protocol.Request(op, ip, port, name, flags)
    raw = req.encode()
    assert len(raw) == protocol.REQUEST.size == 124
    assert protocol.Request.decode(raw) == req


@settings(max_examples=200, deadline=None)
@given(op=st.integers(0, 65535), status=st.integers(-(2**31), 2**31 - 1), lip=ips,
       lport=ports, rip=ips, rport=ports)
def test_reply_round_trip(op: int, status: int, lip: bytes, lport: int, rip: bytes,
                          rport: int) -> None:
    rep = protocol.Reply(op, status, lip, lport, rip, rport)
    raw = rep.encode()
    assert len(raw) == protocol.REPLY.size == 28
    assert protocol.Reply.decode(raw) == rep


@settings(max_examples=300, deadline=None)
@given(raw=st.binary(max_size=200))
def test_junk_messages_raise_only_protocol_error(raw: bytes) -> None:
    for cls in (protocol.Request, protocol.Reply):
        with contextlib.suppress(protocol.ProtocolError):
            cls.decode(raw)


def test_bad_magic_and_size_are_refused() -> None:
    good = protocol.Request(1, bytes(4), 80, "x").encode()
    with pytest.raises(protocol.ProtocolError):
        protocol.Request.decode(b"XXXX" + good[4:])
    with pytest.raises(protocol.ProtocolError):
        protocol.Request.decode(good[:-1])
    with pytest.raises(protocol.ProtocolError):
        protocol.Request.decode(good[:-8] + b"\xff" * 8)  # name not ASCII


def test_names_spell_addresses() -> None:
    ip = socket.inet_aton("10.1.2.3")
    lname = protocol.listener_name(ip, 8080, 4242, 7)
    assert lname == "joyride/l/10.1.2.3:8080/4242.7"
    parsed = protocol.parse_name(protocol.abstract(lname))
    assert parsed == protocol.ParsedName("listener", ("10.1.2.3", 8080), None, 4242)
    cname = protocol.connection_name((ip, 80), (socket.inet_aton("192.0.2.9"), 55000), 9, 1)
    parsed = protocol.parse_name(cname)
    assert parsed == protocol.ParsedName("connection", ("10.1.2.3", 80),
                                         ("192.0.2.9", 55000), 9)


@settings(max_examples=300, deadline=None)
@given(name=st.one_of(st.text(max_size=120), st.binary(max_size=120)))
def test_parse_name_never_raises(name: str | bytes) -> None:
    parsed = protocol.parse_name(name)
    assert parsed is None or parsed.kind in ("listener", "connection")


def test_names_fit_sun_path() -> None:
    ip = socket.inet_aton("255.255.255.255")
    longest = protocol.connection_name((ip, 65535), (ip, 65535), 2**22, 2**64)
    assert len(protocol.abstract(longest)) <= 107  # sizeof(sun_path) - 1


def test_tcp_addresses_of_listener_connection_and_stranger() -> None:
    """The one decoder of service descriptors' names (joyride.socket and the asyncio
    ServiceSocket both use it), on real abstract unix sockets."""
    pid, n = os.getpid(), id(object()) & 0xFFFFFF  # unique names: parallel runs never collide
    local, remote = (bytes([198, 18, 0, 1]), 8080), (bytes([198, 18, 0, 2]), 40000)
    with contextlib.ExitStack() as stack:
        lst = stack.enter_context(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM))
        lst.bind(protocol.abstract(protocol.listener_name(local[0], local[1], pid, n)))
        lst.listen()
        assert protocol.tcp_addresses(lst) == (("198.18.0.1", 8080), None)
        # A connection: the service's end is bound to the 4-tuple's name.
        service_end = stack.enter_context(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM))
        service_end.bind(protocol.abstract(protocol.connection_name(local, remote, pid, n + 1)))
        service_end.listen()
        app = stack.enter_context(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM))
        app.connect(service_end.getsockname())
        assert protocol.tcp_addresses(app) == (("198.18.0.1", 8080), ("198.18.0.2", 40000))
        # Neither: an unnamed socket pair, and an unconnected socket.
        a, b = socket.socketpair()
        stack.enter_context(a)
        stack.enter_context(b)
        assert protocol.tcp_addresses(a) == (None, None)
        lone = stack.enter_context(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM))
        assert protocol.tcp_addresses(lone) == (None, None)
