"""Only the service delivers connections (issue 14).

A Joyride listener is an abstract unix socket, and abstract names have no permissions:
any local user can connect to one, binding its own end to a name that spells a forged
TCP 4-tuple. The application side (the preload shim in C, ``joyride.service.appclient``
in Python) must refuse such a connection, never hand it to the server, and report it to
the service, which counts it. A real connection from the peer namespace must still be
served afterwards, with its data intact.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from service_helpers import app_path, ask_as, attached, cli, stats, wait_for, wait_port

from joyride.testbed import Node, Testbed

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
NOBODY = 65534
FORGED_PEER = "6.6.6.6"

# An echo server that prints each accepted peer: the shim (C) or joyride.socket (Python)
# does the accepting. argv: port, "shim" | "python".
SERVER = """
import hashlib, sys
port, kind = int(sys.argv[1]), sys.argv[2]
if kind == "python":
    from joyride import socket as socket_module
else:
    import socket as socket_module
srv = socket_module.socket(socket_module.AF_INET, socket_module.SOCK_STREAM)
srv.bind(("0.0.0.0", port))
srv.listen(16)
print("listening", flush=True)
while True:
    conn, peer = srv.accept()
    print("peer", peer[0], flush=True)
    data = b""
    while True:
        chunk = conn.recv(65536)
        if not chunk:
            break
        data += chunk
    conn.sendall(hashlib.sha256(data).hexdigest().encode())
    conn.close()
"""

# Connects, as the calling user, to the Joyride listener for argv[1] (found in
# /proc/net/unix) from a unix socket bound to a name spelling a forged TCP peer; prints
# what came back: "closed" when the server side refused it.
FORGER = """
import socket, sys
port, local_ip, forged = sys.argv[1], sys.argv[2], sys.argv[3]
names = [line.split()[7] for line in open("/proc/net/unix").read().splitlines()[1:]
         if len(line.split()) >= 8 and line.split()[7].startswith("@joyride/l/")
         and line.split()[7].split("/")[2].endswith(":" + port)]
assert names, "no Joyride listener for port " + port
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(("\\0joyride/c/%s:%s/%s:4444/1.1" % (local_ip, port, forged)).encode())
s.settimeout(10)
s.connect(b"\\0" + names[0][1:].encode())
try:
    s.sendall(b"forged request")
    s.shutdown(socket.SHUT_WR)
    print("closed" if s.recv(100) == b"" else "answered")
except (ConnectionResetError, BrokenPipeError):
    print("closed")
"""




def _shim() -> Path:
    return sorted((REPO / "joyride").glob("libjoyride_preload*.so"))[-1]


def _start_server(bed: Testbed, port: int, kind: str) -> subprocess.Popen[bytes]:
    env = ["env", f"JOYRIDE_SOCKET={app_path(bed.joy)}", f"PYTHONPATH={REPO}"]
    if kind == "shim":
        env.append(f"LD_PRELOAD={_shim()}")
    # The server runs as root, with the venv's Python (joyride.socket needs its packages).
    server = bed.joy.popen(*env, sys.executable, "-c", SERVER, str(port), kind,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert server.stdout is not None
    assert server.stdout.readline() == b"listening\n"
    wait_port(bed.peer, bed.joy.ip, port)
    return server


def _forge(node: Node, port: int) -> str:
    out = node.run("setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                   "/usr/bin/python3", "-c", FORGER, str(port), node.ip, FORGED_PEER,
                   timeout=30)
    return out.stdout.decode().strip()


def _real_request(node: Node, ip: str, port: int, payload: bytes) -> str:
    import socket

    with node.inside():
        sock = socket.create_connection((ip, port), timeout=10)
    with sock:
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        reply = b""
        while chunk := sock.recv(4096):
            reply += chunk
    return reply.decode()


@pytest.mark.parametrize("kind", ["shim", "python"])
def test_a_forged_delivery_is_refused_and_counted(kind: str) -> None:
    port = 8091 if kind == "shim" else 8092
    with Testbed() as bed, attached(bed, "--ports", str(port)):
        server = _start_server(bed, port, kind)
        try:
            # wait_port's probe was a real delivery: one peer line already. The shim's
            # listener now holds its proof that root's connections are the service's
            # (jr_proofs), and the forger's, another user's, must still be refused.
            assert server.stdout is not None
            assert server.stdout.readline().startswith(b"peer ")
            assert _forge(bed.joy, port) == "closed"
            wait_for(lambda: stats(bed.joy)["datapath"]["service"].get(
                "forged_deliveries_refused", 0) >= 1, what="the refusal to be reported")
            # A real connection is still served, data checked end to end.
            payload = bytes(range(256)) * 4096
            assert _real_request(bed.peer, bed.joy.ip, port, payload) == \
                hashlib.sha256(payload).hexdigest()
            line = server.stdout.readline().decode()
            assert line == f"peer {bed.peer.ip}\n", line  # never 6.6.6.6
        finally:
            server.terminate()
            _, err = server.communicate(timeout=10)
        assert FORGED_PEER not in err.decode()
        assert "only the Joyride service delivers connections" in err.decode()


def test_an_ordinary_user_is_served_without_a_group() -> None:
    """Without --group every user may use the service, under Linux's port rules: an
    unprivileged port is served (data checked by hash), port 80 is refused as bind(2)
    refuses it; the user may read the service's stats but not change its ports."""
    with tempfile.TemporaryDirectory(prefix="joyride-www-") as www:
        _served_to_an_ordinary_user(Path(www))


def _served_to_an_ordinary_user(www: Path) -> None:
    body = bytes(range(256)) * 1024
    (www / "file.bin").write_bytes(body)
    www.chmod(0o755)  # pytest's tmp_path sits in a directory only root may enter
    (www / "file.bin").chmod(0o644)
    tmp_path = www
    user = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
    with Testbed() as bed, attached(bed, "--ports", "80,8093"):
        env = ["env", f"LD_PRELOAD={_shim()}", f"JOYRIDE_SOCKET={app_path(bed.joy)}"]
        server = bed.joy.popen(*user, *env, "/usr/bin/python3", "-m", "http.server", "-b",
                               "0.0.0.0", "-d", str(tmp_path), "8093",
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_port(bed.peer, bed.joy.ip, 8093)
            got = bed.peer.run("curl", "-s", f"http://{bed.joy.ip}:8093/file.bin",
                               timeout=30).stdout
            assert hashlib.sha256(got).digest() == hashlib.sha256(body).digest()
            assert stats(bed.joy)["datapath"]["service"]["delivered"] >= 1
        finally:
            server.terminate()
            server.wait(10)
        low = bed.joy.run(*user, *env, "/usr/bin/python3", "-m", "http.server", "-b",
                          "0.0.0.0", "80", check=False, timeout=30)
        assert low.returncode != 0 and b"PermissionError" in low.stderr
        # As that user: reading counters is everyone's; changing ports is refused.
        read = ask_as(bed.joy, NOBODY, NOBODY, {"op": "stats"})
        assert "datapath" in json.loads(read)
        change = ask_as(bed.joy, NOBODY, NOBODY,
                        {"op": "ports", "action": "add", "ports": "8094"})
        assert change.startswith("error: permission denied") and "needs root" in change
        assert "8094" not in cli(bed.joy, "ports", bed.joy.ifname, "list").stdout
