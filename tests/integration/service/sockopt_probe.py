"""What a kernel TCP socket and a Joyride descriptor in the same state answer.

Run by ``test_sockopt_table.py`` inside the bed's Joyride namespace, as root:

    python sockopt_probe.py shim|python JOY_PORT KERNEL_PORT PEER_IP PEER_PORT TABLE

with the option table in the file TABLE (JSON: ``[[level, optname, valid_hex|null,
invalid_hex|null], ...]``). ``shim``: plain ``socket`` objects under ``LD_PRELOAD`` of the
shim, every call made through libc with ``ctypes`` (so the shim's interposed symbols
answer, with zeroed buffers); ``python``: ``joyride.socket`` in service mode against
the standard library's sockets. The Joyride side listens on JOY_PORT (accelerated) and
connects out through the service; the kernel side listens on KERNEL_PORT (not
accelerated) and connects out with the kernel. Both outgoing connections go to
PEER_IP:PEER_PORT, a server in the peer namespace that sends each connection 100 bytes.

Protocol on stdout (one JSON object a line): ``{"listening": true}`` once both listen;
the test then opens two connections to each port from the peer namespace, each sending
100 bytes (the first pair is the "accepted" state, the second is shut down for
"shutdown"); then ``{"results": {...}}``: per state, per side ("kernel", "joyride"),
what every call answered.

An answer is ``["ok", hex]`` (getsockopt: the bytes the kernel wrote, so their count is
the returned length), ``["ok", int]`` (ioctl, fcntl), ``["ok", [ip, port]]`` (names) or
``["err", errno]``.
"""

from __future__ import annotations

import ctypes
import fcntl
import json
import os
import select
import socket
import struct
import sys
import time
from typing import Any

MODE = sys.argv[1]
JOY_PORT, KERNEL_PORT = int(sys.argv[2]), int(sys.argv[3])
PEER_IP, PEER_PORT = sys.argv[4], int(sys.argv[5])
with open(sys.argv[6]) as table:
    OPTIONS: list[list[Any]] = json.load(table)

FIONREAD = 0x541B
SIOCOUTQ = 0x5411
SIOCOUTQNSD = 0x894B
BUFLEN = 512  # larger than any option's value: the returned length is the kernel's
TCP_INFO = 11
TCP_ESTABLISHED, TCP_FIN_WAIT2 = 1, 5
SETTLE_S = 10.0

libc = ctypes.CDLL(None, use_errno=True)
libc.getsockopt.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_void_p,
                            ctypes.POINTER(ctypes.c_uint32)]
libc.setsockopt.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_void_p,
                            ctypes.c_uint32]
libc.ioctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p]
libc.getsockname.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.POINTER(ctypes.c_uint32)]
libc.getpeername.argtypes = libc.getsockname.argtypes
libc.fcntl.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]

Answer = list[Any]


def _err(code: int) -> Answer:
    return ["err", code]


class Side:
    """One socket and the way the mode calls it."""

    def __init__(self, sock: Any, python_api: bool) -> None:
        self.sock = sock
        self.python_api = python_api

    def fileno(self) -> int:
        return int(self.sock.fileno())

    def getsockopt(self, level: int, optname: int) -> Answer:
        if self.python_api:
            try:
                return ["ok", bytes(self.sock.getsockopt(level, optname, BUFLEN)).hex()]
            except OSError as exc:
                return _err(exc.errno or -1)
        buf = ctypes.create_string_buffer(BUFLEN)
        size = ctypes.c_uint32(BUFLEN)
        if libc.getsockopt(self.fileno(), level, optname, buf, ctypes.byref(size)) != 0:
            return _err(ctypes.get_errno())
        return ["ok", buf.raw[:size.value].hex()]

    def getsockopt_int(self, level: int, optname: int) -> Answer:
        """The stdlib's int form (``getsockopt(level, optname)``): Python mode only."""
        try:
            return ["ok", int(self.sock.getsockopt(level, optname))]
        except OSError as exc:
            return _err(exc.errno or -1)

    def setsockopt(self, level: int, optname: int, value: bytes) -> Answer:
        if self.python_api:
            try:
                self.sock.setsockopt(level, optname, value)
                return ["ok", None]
            except OSError as exc:
                return _err(exc.errno or -1)
        buf = ctypes.create_string_buffer(value, max(len(value), 1))
        if libc.setsockopt(self.fileno(), level, optname, buf, len(value)) != 0:
            return _err(ctypes.get_errno())
        return ["ok", None]

    def ioctl(self, request: int) -> Answer:
        value = ctypes.c_int(-12345)
        if self.python_api:
            buf = bytearray(4)
            try:
                fcntl.ioctl(self.fileno(), request, buf)
            except OSError as exc:
                return _err(exc.errno or -1)
            return ["ok", int.from_bytes(buf, sys.byteorder, signed=True)]
        if libc.ioctl(self.fileno(), request, ctypes.byref(value)) != 0:
            return _err(ctypes.get_errno())
        return ["ok", value.value]

    def fcntl(self, cmd: int) -> Answer:
        if self.python_api:
            try:
                return ["ok", fcntl.fcntl(self.fileno(), cmd)]
            except OSError as exc:
                return _err(exc.errno or -1)
        r = libc.fcntl(self.fileno(), cmd, 0)
        return _err(ctypes.get_errno()) if r < 0 else ["ok", r]

    def name(self, peer: bool) -> Answer:
        if self.python_api:
            try:
                got = self.sock.getpeername() if peer else self.sock.getsockname()
            except OSError as exc:
                return _err(exc.errno or -1)
            return ["ok", list(got) if isinstance(got, tuple) else repr(got)]
        buf = ctypes.create_string_buffer(128)
        size = ctypes.c_uint32(128)
        call = libc.getpeername if peer else libc.getsockname
        if call(self.fileno(), buf, ctypes.byref(size)) != 0:
            return _err(ctypes.get_errno())
        raw = buf.raw[:size.value]
        if size.value == 16 and raw[:2] == struct.pack("=H", socket.AF_INET):
            port, ip = struct.unpack("!H4s", raw[2:8])
            return ["ok", [socket.inet_ntoa(ip), port, raw.hex()]]
        return ["ok", raw.hex()]

    def tcp_state(self) -> int:
        got = self.getsockopt(socket.IPPROTO_TCP, TCP_INFO)
        return bytes.fromhex(got[1])[0] if got[0] == "ok" and got[1] else -1


def _wait(ready: Any) -> bool:
    deadline = time.monotonic() + SETTLE_S
    while not ready():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def settle(side: Side, inbound: int) -> list[str]:
    """Until ``inbound`` bytes wait to be read and what was sent is acknowledged (the
    kernel: SIOCOUTQ 0), so both sides are quiescent when asked. What never came."""
    missed = []
    if not _wait(lambda: side.ioctl(FIONREAD) == ["ok", inbound]):
        missed.append("inbound bytes")
    if not _wait(lambda: side.ioctl(SIOCOUTQ) == ["ok", 0]):
        missed.append("send queue drained")
    return missed


def survey(side: Side) -> dict[str, Any]:
    """Everything, read-only."""
    out: dict[str, Any] = {"get": {}, "ioctl": {}, "fcntl": {}}
    for level, optname, _valid, _invalid in OPTIONS:
        key = f"{level}:{optname}"
        out["get"][key] = side.getsockopt(level, optname)
        if side.python_api:
            out.setdefault("geti", {})[key] = side.getsockopt_int(level, optname)
    for name, request in (("FIONREAD", FIONREAD), ("SIOCOUTQ", SIOCOUTQ),
                          ("SIOCOUTQNSD", SIOCOUTQNSD)):
        out["ioctl"][name] = side.ioctl(request)
    out["fcntl"]["F_GETFL"] = side.fcntl(fcntl.F_GETFL)
    out["fcntl"]["F_GETFD"] = side.fcntl(fcntl.F_GETFD)
    out["sockname"] = side.name(peer=False)
    out["peername"] = side.name(peer=True)
    return out


def set_all(side: Side) -> dict[str, Any]:
    """Each option set to its valid value (then read back) and to its invalid one."""
    out: dict[str, Any] = {"set_valid": {}, "readback": {}, "set_invalid": {}}
    for level, optname, valid, invalid in OPTIONS:
        key = f"{level}:{optname}"
        if valid is not None:
            out["set_valid"][key] = side.setsockopt(level, optname, bytes.fromhex(valid))
            out["readback"][key] = side.getsockopt(level, optname)
        if invalid is not None:
            out["set_invalid"][key] = side.setsockopt(level, optname, bytes.fromhex(invalid))
    return out


def main() -> None:
    python_api = MODE == "python"
    if python_api:
        import joyride.socket as jsocket

        joy_module: Any = jsocket
    else:
        joy_module = socket

    def listener(module: Any, port: int) -> Any:
        s = module.socket(socket.AF_INET, socket.SOCK_STREAM)
        # As servers do before they listen: these must survive becoming a Joyride one.
        # Accepted connections inherit all but TCP_DEFER_ACCEPT and TCP_FASTOPEN.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 17)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 77)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, 2)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_FASTOPEN, 3)
        s.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, 0x10)
        s.bind(("0.0.0.0", port))
        s.listen(16)
        return s

    joy_l = listener(joy_module, JOY_PORT)
    kern_l = listener(socket, KERNEL_PORT)
    if not python_api:
        assert joy_l.getsockopt(socket.SOL_SOCKET, socket.SO_DOMAIN) == socket.AF_INET
    print(json.dumps({"listening": True}), flush=True)

    def accept(s: Any) -> Any:
        r, _, _ = select.select([s], [], [], SETTLE_S)
        if not r:
            raise SystemExit("probe: nothing to accept")
        conn, _ = s.accept()
        conn.settimeout(None)
        return conn

    pairs = {}
    for state in ("accepted", "shutdown"):
        pairs[state] = (accept(kern_l), accept(joy_l))

    # Outgoing: the service carries the Joyride one (the shim: JOYRIDE_OUTGOING=1).
    os.environ["JOYRIDE_OUTGOING"] = "1"
    joy_c = joy_module.create_connection((PEER_IP, PEER_PORT), timeout=SETTLE_S)
    os.environ.pop("JOYRIDE_OUTGOING")
    kern_c = socket.create_connection((PEER_IP, PEER_PORT), timeout=SETTLE_S)
    for s in (joy_c, kern_c):
        s.settimeout(None)
    pairs["connected"] = (kern_c, joy_c)

    results: dict[str, dict[str, Any]] = {}
    sides = {state: (Side(k, python_api), Side(j, python_api))
             for state, (k, j) in pairs.items()}
    listeners = (Side(kern_l, python_api), Side(joy_l, python_api))
    missed: dict[str, dict[str, list[str]]] = {}
    for state, (kern, joy) in sides.items():
        for name, side in (("kernel", kern), ("joyride", joy)):
            side.sock.sendall(b"x" * 50)
            missed.setdefault(state, {})[name] = settle(side, 100)
            if state == "shutdown":
                side.sock.shutdown(socket.SHUT_WR)
                if not _wait(lambda side=side: side.tcp_state() == TCP_FIN_WAIT2):
                    missed[state][name].append("FIN-WAIT-2")
    for state, (kern, joy) in [("listening", listeners), *sides.items()]:
        results[state] = {"kernel": survey(kern), "joyride": survey(joy)}
    for state, (kern, joy) in [("listening", listeners), *sides.items()]:
        results[state]["kernel"].update(set_all(kern))
        results[state]["joyride"].update(set_all(joy))
    print(json.dumps({"results": results, "missed": missed}), flush=True)


if __name__ == "__main__":
    main()
