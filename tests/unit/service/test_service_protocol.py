"""The application protocol's messages and names: round trips, and junk never raises
anything but ProtocolError (or None for names)."""

from __future__ import annotations

import contextlib
import socket

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from joyride.service import protocol

ips = st.binary(min_size=4, max_size=4)
ports = st.integers(0, 65535)


@settings(max_examples=200, deadline=None)
@given(op=st.integers(0, 65535), ip=ips, port=ports,
       name=st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=100))
def test_request_round_trip(op: int, ip: bytes, port: int, name: str) -> None:
    req = protocol.Request(op, ip, port, name)
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
