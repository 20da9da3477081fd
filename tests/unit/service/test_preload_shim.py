"""The C preload shim against a fake service (no privileges, no network namespace): a
listen on an accelerated port becomes a Joyride listener, accept/getpeername/
getsockname speak sockaddr_in, recvfrom/recvmsg report no source (as Linux's TCP) and
sendto/sendmsg to an address work (TCP ignores it), TCP options are accepted, and no
service means the kernel plus one notice."""

from __future__ import annotations

import errno
import importlib.util
import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from joyride import sockopts
from joyride.service import protocol

REPO = Path(__file__).resolve().parents[3]

CHILD = r"""
import json, socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1])))
s.listen(8)
out = {"listen_name": s.getsockname(),
       "domain": s.getsockopt(socket.SOL_SOCKET, socket.SO_DOMAIN)}
conn, peer = s.accept()
conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
out.update(peer=peer, peer_again=conn.getpeername(), local=conn.getsockname(),
           nodelay=conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY),
           protocol=conn.getsockopt(socket.SOL_SOCKET, socket.SO_PROTOCOL),
           data=conn.recv(100).decode())
conn.sendall(b"pong")
# Linux's TCP reports no source (None here); a send to an address ignores it, so
# sockperf answers to whatever address it holds.
data, source = conn.recvfrom(100)
sent = conn.sendto(b"pong2", ("198.51.100.9", 9))
data2, _, _, source2 = conn.recvmsg(100)
sent2 = conn.sendmsg([b"pong3"], [], 0, ("198.51.100.9", 9))
out.update(recvfrom=[data.decode(), source], sendto=sent,
           recvmsg=[data2.decode(), source2], sendmsg=sent2)
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def shim() -> Path:
    spec = importlib.util.spec_from_file_location("preload_build",
                                                  REPO / "preload" / "build.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return Path(module.build())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class FakeService:
    """Answers OP_LISTEN with success and delivers one connection to the listener,
    named with ``local`` and ``remote`` (the application socket's form)."""

    def __init__(self, path: Path, local: bytes = socket.inet_aton("10.0.0.1"),
                 remote: bytes = socket.inet_aton("192.0.2.7")) -> None:
        self.local, self.remote = local, remote
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.sock.bind(str(path))
        self.sock.listen(4)
        self.sock.settimeout(20)
        self.requests: list[protocol.Request] = []
        self.reply_from_app = b""
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        session, _ = self.sock.accept()
        with session:
            request = protocol.Request.decode(session.recv(200))
            self.requests.append(request)
            session.send(protocol.Reply(request.op, 0, request.ip, request.port,
                                        bytes(len(request.ip))).encode())
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.bind(protocol.abstract(protocol.connection_name(
            (self.local, request.port), (self.remote, 5555), os.getpid(), 0)))
        conn.connect(protocol.abstract(request.name))
        conn.settimeout(20)
        for ping, size in ((b"ping", 4), (b"ping2", 5), (b"ping3", 5)):
            conn.sendall(ping)  # one at a time: each read in the child sees one
            self.reply_from_app += recv_exactly(conn, size)
        conn.close()


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n and (chunk := sock.recv(n - len(out))):
        out += chunk
    return out


def test_listen_accept_and_addresses(shim: Path, tmp_path: Path) -> None:
    path = tmp_path / "app.sock"
    service = FakeService(path)
    port = free_port()
    env = dict(os.environ, LD_PRELOAD=str(shim), JOYRIDE_SOCKET=str(path))
    proc = subprocess.run([sys.executable, "-c", CHILD, str(port)], env=env,
                          capture_output=True, timeout=30)
    assert proc.returncode == 0, proc.stderr.decode()
    out = json.loads(proc.stdout)
    service.thread.join(10)
    [request] = service.requests
    assert request.op == protocol.OP_LISTEN and request.port == port
    parsed = protocol.parse_name(request.name)
    assert parsed is not None and parsed.kind == "listener"
    assert parsed.local == ("0.0.0.0", port) and parsed.pid != os.getpid()  # the child's
    assert out["listen_name"] == ["0.0.0.0", port]
    assert out["domain"] == socket.AF_INET
    assert out["peer"] == ["192.0.2.7", 5555] == out["peer_again"]
    assert out["local"] == ["10.0.0.1", port]
    assert out["nodelay"] == 1
    assert out["protocol"] == socket.IPPROTO_TCP
    assert out["data"] == "ping"
    assert out["recvfrom"] == ["ping2", None]
    assert out["recvmsg"] == ["ping3", None]
    assert out["sendto"] == 5 and out["sendmsg"] == 5
    assert service.reply_from_app == b"pongpong2pong3"
    assert b"joyride:" not in proc.stderr


CHILD6 = r"""
import json, socket, sys
s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, int(sys.argv[2]))
s.bind(("::", int(sys.argv[1])))
s.listen(8)
out = {"listen_name": s.getsockname(),
       "domain": s.getsockopt(socket.SOL_SOCKET, socket.SO_DOMAIN),
       "v6only": s.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY)}
conn, peer = s.accept()
out.update(peer=peer, peer_again=conn.getpeername(), local=conn.getsockname(),
           domain_conn=conn.getsockopt(socket.SOL_SOCKET, socket.SO_DOMAIN),
           data=conn.recv(100).decode())
conn.sendall(b"pong")
data, source = conn.recvfrom(100)
conn.sendto(b"pong2", ("2001:db8::9", 9))
data2, _, _, source2 = conn.recvmsg(100)
conn.sendmsg([b"pong3"], [], 0, ("2001:db8::9", 9))
out.update(recvfrom=[source, source2])
print(json.dumps(out))
"""


@pytest.mark.parametrize(("v6only", "local", "remote"), [
    (0, "2001:db8::1", "2001:db8::7"),
    (0, "::ffff:10.0.0.1", "::ffff:192.0.2.7"),  # a dual-stack listener's IPv4 peer
    (1, "2001:db8::1", "2001:db8::7"),
    (0, "fe80::1", "fe80::7"),  # link-local: no interface here, so scope id 0
], ids=["ipv6", "v4-mapped", "v6only", "link-local"])
def test_an_inet6_listener_speaks_sockaddr_in6(shim: Path, tmp_path: Path, v6only: int,
                                                local: str, remote: str) -> None:
    """An AF_INET6 socket becomes a Joyride listener named with its IPv6 address (and
    /v6only when set); accept, getpeername and getsockname report sockaddr_in6,
    v4-mapped for an IPv4 peer, as Linux does on such a socket (and recvfrom no source)."""
    path = tmp_path / "app.sock"
    service = FakeService(path, socket.inet_pton(socket.AF_INET6, local),
                          socket.inet_pton(socket.AF_INET6, remote))
    port = free_port()
    env = dict(os.environ, LD_PRELOAD=str(shim), JOYRIDE_SOCKET=str(path))
    proc = subprocess.run([sys.executable, "-c", CHILD6, str(port), str(v6only)], env=env,
                          capture_output=True, timeout=30)
    assert proc.returncode == 0, proc.stderr.decode()
    out = json.loads(proc.stdout)
    service.thread.join(10)
    [request] = service.requests
    assert request.ip == bytes(16) and request.port == port
    parsed = protocol.parse_name(request.name)
    assert parsed is not None and parsed.family == socket.AF_INET6
    assert parsed.v6only == bool(v6only) and request.name.endswith("/v6only") == bool(v6only)
    assert out["listen_name"] == ["::", port, 0, 0]
    assert out["domain"] == out["domain_conn"] == socket.AF_INET6
    assert out["v6only"] == v6only
    assert out["peer"] == [remote, 5555, 0, 0] == out["peer_again"]
    assert out["recvfrom"] == [None, None]
    assert out["local"] == [local, port, 0, 0]
    assert out["data"] == "ping"
    assert service.reply_from_app == b"pongpong2pong3"
    assert b"joyride:" not in proc.stderr


def test_no_service_uses_the_kernel_and_says_so_once(shim: Path, tmp_path: Path) -> None:
    port = free_port()
    script = ("import socket\n"
              "for _ in range(3):\n"
              "    s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(1)\n"
              "    assert s.getsockname()[0] == '127.0.0.1'; s.close()\n"
              f"s = socket.create_server(('127.0.0.1', {port}))\n"
              f"c = socket.create_connection(('127.0.0.1', {port}))\n"
              "a, _ = s.accept(); c.sendall(b'x'); assert a.recv(1) == b'x'\n")
    env = dict(os.environ, LD_PRELOAD=str(shim),
               JOYRIDE_SOCKET=str(tmp_path / "missing.sock"))
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          timeout=30)
    assert proc.returncode == 0, proc.stderr.decode()
    notices = [line for line in proc.stderr.decode().splitlines()
               if line.startswith("joyride:")]
    assert len(notices) == 1 and "using the kernel" in notices[0]


def test_refusal_is_returned_as_the_errno(shim: Path, tmp_path: Path) -> None:
    path = tmp_path / "app.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    sock.bind(str(path))
    sock.listen(1)

    def refuse() -> None:
        session, _ = sock.accept()
        with session:
            request = protocol.Request.decode(session.recv(200))
            session.send(protocol.Reply(request.op, 98).encode())  # EADDRINUSE

    t = threading.Thread(target=refuse, daemon=True)
    t.start()
    script = ("import socket, sys\ns = socket.socket(); s.bind(('0.0.0.0', int(sys.argv[1])))\n"
              "try:\n    s.listen(1)\nexcept OSError as e:\n    print(e.errno)\n")
    env = dict(os.environ, LD_PRELOAD=str(shim), JOYRIDE_SOCKET=str(path))
    proc = subprocess.run([sys.executable, "-c", script, str(free_port())], env=env,
                          capture_output=True, timeout=30)
    t.join(5)
    sock.close()
    assert proc.stdout.decode().strip() == "98"


OPTIONS_CHILD = r"""
import json, socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)  # before listen: carried over
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 42)
s.bind(("0.0.0.0", int(sys.argv[1])))
s.listen(8)
conn, _ = s.accept()
conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 7)
conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)  # fixed at the handshake
try:
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 0)
    refused = 0
except OSError as exc:
    refused = exc.errno
conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # not forwarded: Nagle is off
print(json.dumps({"refused": refused}))
"""


def test_tcp_options_reach_the_service(shim: Path, tmp_path: Path) -> None:
    """Keepalive and buffer options on Joyride descriptors are forwarded (OP_SETOPT):
    a listener's with its own name (also those set on the kernel socket before
    listen), a connection's with its peer's name; an out-of-range value is EINVAL."""
    path = tmp_path / "app.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    sock.bind(str(path))
    sock.listen(8)
    sock.settimeout(20)
    requests: list[protocol.Request] = []
    conn_name = protocol.connection_name((socket.inet_aton("10.0.0.1"), 1),
                                         (socket.inet_aton("192.0.2.7"), 5555),
                                         os.getpid(), 1)

    def serve() -> None:
        keep: list[socket.socket] = []
        while True:
            try:
                session, _ = sock.accept()
            except OSError:
                return
            with session:
                request = protocol.Request.decode(session.recv(200))
                requests.append(request)
                status = 0
                if request.op == protocol.OP_SETOPT:
                    level, opt = protocol.SETOPT_OPTIONS[request.port]
                    try:
                        sockopts.changes(level, opt, protocol.setopt_value(request.ip))
                    except OSError as exc:
                        status = exc.errno or 22
                session.send(protocol.Reply(request.op, status).encode())
            if request.op == protocol.OP_LISTEN:
                conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                conn.bind(protocol.abstract(conn_name))
                conn.connect(protocol.abstract(request.name))
                keep.append(conn)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    env = dict(os.environ, LD_PRELOAD=str(shim), JOYRIDE_SOCKET=str(path))
    try:
        proc = subprocess.run([sys.executable, "-c", OPTIONS_CHILD, str(free_port())],
                              env=env, capture_output=True, timeout=30)
    finally:
        sock.close()
    assert proc.returncode == 0, proc.stderr.decode()
    assert json.loads(proc.stdout)["refused"] == errno.EINVAL
    listen, *setopts = requests
    assert listen.op == protocol.OP_LISTEN
    seen = [(protocol.SETOPT_OPTIONS[r.port], protocol.setopt_value(r.ip), r.name)
            for r in setopts]
    assert all(r.op == protocol.OP_SETOPT for r in setopts)
    tcp, sol = socket.IPPROTO_TCP, socket.SOL_SOCKET
    on_listener = [(o, v) for o, v, name in seen if name == listen.name]
    on_conn = [(o, v) for o, v, name in seen if name == conn_name]
    assert ((tcp, socket.TCP_KEEPIDLE), 42) in on_listener
    assert on_listener[-1] == ((sol, socket.SO_KEEPALIVE), 1)  # last: after its timings
    assert on_conn == [((tcp, socket.TCP_KEEPINTVL), 7), ((sol, socket.SO_SNDBUF), 1 << 20),
                       ((tcp, socket.TCP_KEEPCNT), 0)]
    assert len(seen) == len(on_listener) + len(on_conn)
