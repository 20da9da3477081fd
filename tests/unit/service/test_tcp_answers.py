"""A service listener's options answered as a kernel TCP socket's (``sockopts.TcpAnswers``,
issue 14), against a kernel listener, without a service or privileges: the unix
listener is bound to a listener name, as the service's clients bind theirs."""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import struct
from collections.abc import Callable, Iterator

import pytest

from joyride import sockopts
from joyride.service import protocol

TCP, IP, SOL = socket.IPPROTO_TCP, socket.IPPROTO_IP, socket.SOL_SOCKET
BACKLOG = 16


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, sockopts.TcpAnswers]]:
    kernel = socket.socket()
    kernel.bind(("127.0.0.1", 0))
    kernel.listen(BACKLOG)
    port = kernel.getsockname()[1]
    unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    unix.bind(protocol.abstract(protocol.listener_name(socket.inet_aton("127.0.0.1"), port,
                                                       os.getpid(), 0)))
    unix.listen(BACKLOG)
    try:
        yield kernel, sockopts.TcpAnswers(unix, backlog=BACKLOG)
    finally:
        kernel.close()
        unix.close()


_LIBC = ctypes.CDLL(None, use_errno=True)


def kernel_getsockopt(sock: socket.socket, level: int, optname: int,
                      buflen: int = 0) -> int | bytes:
    """``sock.getsockopt``, but a buffer argument starts zeroed: CPython passes the
    kernel uninitialised memory, and Linux reads some arguments (TCP_ZEROCOPY_RECEIVE's
    reserved fields: EINVAL unless 0), so its answer would depend on what was there."""
    if not buflen:
        return sock.getsockopt(level, optname)
    buf = ctypes.create_string_buffer(buflen)
    size = ctypes.c_uint32(buflen)
    if _LIBC.getsockopt(sock.fileno(), level, optname, buf, ctypes.byref(size)) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return buf.raw[:size.value]


def both(kernel: socket.socket, answers: sockopts.TcpAnswers, level: int, optname: int,
         buflen: int = 0) -> tuple[object, object]:
    def ask(get: Callable[..., object]) -> object:
        try:
            return get(level, optname, buflen) if buflen else get(level, optname)
        except OSError as exc:
            return errno.errorcode[exc.errno or 0]
    return (ask(lambda *a: kernel_getsockopt(kernel, *a)), ask(answers.getsockopt))


@pytest.mark.parametrize(("level", "optname"), [
    (SOL, socket.SO_DOMAIN), (SOL, socket.SO_PROTOCOL), (SOL, socket.SO_TYPE),
    (SOL, socket.SO_ACCEPTCONN), (SOL, socket.SO_PEERCRED), (SOL, socket.SO_PASSCRED),
    (SOL, sockopts.SO_PEERNAME), (SOL, socket.SO_ERROR),
    (IP, socket.IP_TTL), (IP, socket.IP_TOS), (IP, socket.IP_OPTIONS), (IP, sockopts.IP_MTU),
    (IP, sockopts.IP_PROTOCOL),
    (TCP, socket.TCP_NODELAY), (TCP, socket.TCP_MAXSEG), (TCP, socket.TCP_KEEPIDLE),
    (TCP, socket.TCP_CONGESTION), (TCP, sockopts.TCP_ZEROCOPY_RECEIVE),
])
@pytest.mark.parametrize("buflen", [0, 64])
def test_a_listeners_defaults(pair: tuple[socket.socket, sockopts.TcpAnswers], level: int,
                              optname: int, buflen: int) -> None:
    kernel, answers = pair
    if optname == sockopts.TCP_ZEROCOPY_RECEIVE and not buflen:
        return  # its argument does not fit an int
    k, j = both(kernel, answers, level, optname, buflen)
    assert k == j


def test_tcp_info_of_a_listener(pair: tuple[socket.socket, sockopts.TcpAnswers]) -> None:
    kernel, answers = pair
    k, j = both(kernel, answers, TCP, socket.TCP_INFO, 512)
    assert isinstance(k, bytes) and isinstance(j, bytes)
    assert k == j  # state LISTEN, the backlog in tcpi_sacked, Linux's rates and window
    assert k[0] == sockopts.TCP_LISTEN and struct.unpack_from("=I", k, 28)[0] == BACKLOG


def test_set_then_read_back(pair: tuple[socket.socket, sockopts.TcpAnswers]) -> None:
    kernel, answers = pair
    for level, optname, value in [
        (TCP, socket.TCP_NODELAY, 1), (TCP, socket.TCP_MAXSEG, 1200),
        (TCP, socket.TCP_USER_TIMEOUT, 30000), (TCP, socket.TCP_CONGESTION, b"reno"),
        (TCP, socket.TCP_DEFER_ACCEPT, 5), (TCP, socket.TCP_FASTOPEN, 5),
        (IP, socket.IP_TOS, 0x28), (IP, socket.IP_TTL, 33),
        (SOL, socket.SO_REUSEPORT, 1), (SOL, socket.SO_LINGER, struct.pack("=ii", 1, 1)),
    ]:
        kernel.setsockopt(level, optname, value)
        answers.setsockopt(level, optname, value)
        for buflen in (0, 64):
            k, j = both(kernel, answers, level, optname, buflen)
            assert k == j, (level, optname, buflen)
    # Linux derives the priority from IP_TOS, and the unix socket holds SO_PRIORITY.
    k, j = both(kernel, answers, SOL, socket.SO_PRIORITY)
    assert k == j != 0


@pytest.mark.parametrize(("level", "optname", "value"), [
    (TCP, socket.TCP_MAXSEG, 1), (TCP, socket.TCP_CONGESTION, b"no-such-cc"),
    (TCP, sockopts.TCP_REPAIR, 5), (TCP, sockopts.TCP_FASTOPEN_CONNECT, 1),
    (TCP, socket.TCP_NODELAY, b"\x01"), (IP, socket.IP_TTL, 300),
    (SOL, sockopts.SO_ZEROCOPY, 2), (SOL, socket.SO_PASSCRED, 1),
])
def test_refusals(pair: tuple[socket.socket, sockopts.TcpAnswers], level: int, optname: int,
                  value: int | bytes) -> None:
    kernel, answers = pair
    errors = []
    for target in (kernel, answers):
        with pytest.raises(OSError) as caught:
            target.setsockopt(level, optname, value)
        errors.append(caught.value.errno)
    assert errors[0] == errors[1]
