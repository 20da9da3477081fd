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

ips = st.one_of(st.binary(min_size=4, max_size=4), st.binary(min_size=16, max_size=16))
ports = st.integers(0, 65535)


@settings(max_examples=200, deadline=None)
@given(op=st.integers(0, 65535), ip=ips, port=ports,
       name=st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=100),
       flags=st.integers(0, 65535))
def test_request_round_trip(op: int, ip: bytes, port: int, name: str, flags: int) -> None:
    req = protocol.Request(op, ip, port, name, flags)
    raw = req.encode()
    assert len(raw) == protocol.REQUEST.size == 136
    assert protocol.Request.decode(raw) == req


@settings(max_examples=200, deadline=None)
@given(op=st.integers(0, 255), status=st.integers(-(2**31), 2**31 - 1), lip=ips,
       lport=ports, rip=ips, rport=ports, granted=st.booleans())
def test_reply_round_trip(op: int, status: int, lip: bytes, lport: int, rip: bytes,
                          rport: int, granted: bool) -> None:
    rip = rip[:len(lip)] if len(rip) >= len(lip) else rip * 4  # one family per reply
    flags = protocol.REPLY_CHANNELS if granted else 0
    rep = protocol.Reply(op, status, lip, lport, rip, rport, flags)
    raw = rep.encode()
    assert len(raw) == protocol.REPLY.size == 48
    assert protocol.Reply.decode(raw) == rep
    # The flags sit above the op's byte, where the shim reads them (reply.op & 0x100).
    assert int.from_bytes(raw[4:6], "little") == op | flags


def test_reply_flags_never_touch_the_op() -> None:
    """A hostile request's op past one byte is echoed by its low byte alone (never as
    a grant); flags inside the op's byte are a programming error."""
    raw = protocol.Reply(0x1FF, -1).encode()
    assert protocol.Reply.decode(raw) == protocol.Reply(0xFF, -1)
    with pytest.raises(ValueError):
        protocol.Reply(protocol.OP_CONNECT, 0, flags=1).encode()


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


def test_version_1_and_bad_families_are_refused() -> None:
    """A version-1 shim's request (124 bytes, magic JRD1) is refused, not misread; an
    unknown family, or an IPv4 address with bytes past its fourth, is malformed."""
    v1 = b"JRD1" + bytes(120)
    with pytest.raises(protocol.ProtocolError):
        protocol.Request.decode(v1)
    with pytest.raises(protocol.ProtocolError):
        protocol.Request.decode(v1 + bytes(12))
    good = bytearray(protocol.Request(1, bytes(4), 80, "x").encode())
    good[8:10] = (99).to_bytes(2, "little")  # the family
    with pytest.raises(protocol.ProtocolError):
        protocol.Request.decode(bytes(good))
    good[8:10] = socket.AF_INET.to_bytes(2, "little")
    good[10 + 5] = 1  # an IPv4 address's sixth byte
    with pytest.raises(protocol.ProtocolError):
        protocol.Request.decode(bytes(good))
    with pytest.raises(ValueError):
        protocol.Reply(1, 0, bytes(4), 1, bytes(16), 2).encode()


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
    assert parsed.key() == (ip, 80, socket.inet_aton("192.0.2.9"), 55000)
    assert parsed.families == {4}


def test_ipv6_names_spell_addresses_and_families() -> None:
    """IPv6 addresses are base64url in names; the family, v6only and v4-mapped peers
    read back as Linux's AF_INET6 sockets report them."""
    six = socket.inet_pton(socket.AF_INET6, "2001:db8::1")
    peer = socket.inet_pton(socket.AF_INET6, "2001:db8::2")
    lname = protocol.listener_name(six, 8080, 4242, 7)
    assert lname == "joyride/l/IAENuAAAAAAAAAAAAAAAAQ:8080/4242.7"
    parsed = protocol.parse_name(lname)
    assert parsed == protocol.ParsedName("listener", ("2001:db8::1", 8080), None, 4242,
                                         socket.AF_INET6, False)
    assert parsed.families == {6}  # bound to one IPv6 address
    assert protocol.parse_name(protocol.listener_name(
        bytes(16), 80, 1, 2)).families == {4, 6}  # type: ignore[union-attr]  # [::]: both
    only = protocol.parse_name(protocol.listener_name(bytes(16), 80, 1, 2, v6only=True))
    assert only is not None and only.v6only and only.families == {6}
    assert only.local == ("::", 80)
    with pytest.raises(ValueError):
        protocol.listener_name(bytes(4), 80, 1, 2, v6only=True)
    # Bound to a v4-mapped address: IPv4 connections only.
    mapped_bound = protocol.socket_address(socket.inet_aton("10.0.0.1"), socket.AF_INET6)
    assert protocol.parse_name(protocol.listener_name(
        mapped_bound, 80, 1, 2)).families == {4}  # type: ignore[union-attr]
    assert protocol.parse_name("joyride/l/1.2.3.4:80/1.2/v6only") is None
    cname = protocol.connection_name((six, 80), (peer, 55000), 9, 1)
    parsed = protocol.parse_name(cname)
    assert parsed is not None and parsed.family == socket.AF_INET6
    assert parsed.key() == (six, 80, peer, 55000)
    # A dual-stack listener's IPv4 peer: named v4-mapped, keyed as IPv4.
    v4, v4peer = socket.inet_aton("198.18.0.1"), socket.inet_aton("198.18.0.2")
    mapped = protocol.connection_name(
        (protocol.socket_address(v4, socket.AF_INET6), 80),
        (protocol.socket_address(v4peer, socket.AF_INET6), 5), 9, 2)
    parsed = protocol.parse_name(mapped)
    assert parsed is not None and parsed.remote == ("::ffff:198.18.0.2", 5)
    assert parsed.key() == (v4, 80, v4peer, 5)
    # One family per connection name.
    mixed = f"joyride/c/1.2.3.4:80/{protocol.name_address(peer)}:5/9.3"
    assert protocol.parse_name(mixed) is None


@settings(max_examples=200, deadline=None)
@given(local=ips, remote=ips, lport=ports, rport=ports, pid=st.integers(1, 2**22),
       n=st.integers(0, 2**64))
def test_connection_names_round_trip(local: bytes, remote: bytes, lport: int, rport: int,
                                     pid: int, n: int) -> None:
    remote = protocol.socket_address(remote, socket.AF_INET6) if len(local) == 16 \
        and len(remote) == 4 else remote[:len(local)]
    name = protocol.connection_name((local, lport), (remote, rport), pid, n)
    assert len(protocol.abstract(name)) <= 107
    parsed = protocol.parse_name(name)
    assert parsed is not None and parsed.pid == pid
    assert parsed.key() == (protocol.engine_address(local), lport,
                            protocol.engine_address(remote), rport)


@settings(max_examples=300, deadline=None)
@given(name=st.one_of(st.text(max_size=120), st.binary(max_size=120)))
def test_parse_name_never_raises(name: str | bytes) -> None:
    parsed = protocol.parse_name(name)
    assert parsed is None or parsed.kind in ("listener", "connection")


def test_names_fit_sun_path() -> None:
    for ip in (socket.inet_aton("255.255.255.255"), b"\xff" * 16):
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
