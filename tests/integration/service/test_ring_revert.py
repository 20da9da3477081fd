"""Leaving ring mode under ``joyride run`` (docs/channels.md, "Leaving ring mode"): a
connection handed to another program turns back into a plain stream first, and nothing
is lost or duplicated on the way.

The server (a plain Python program in ring mode) reads and echoes the first part of each
connection itself, then waits until the client's next bytes and its FIN sit unread in
the rx ring, and hands the connection on:

- ``fork``: fork, dup2 onto 0 and 1, exec (the shim reverts in the child, whose memory
  is its own);
- ``subprocess``: ``subprocess.Popen(stdin=conn, stdout=conn)``, which vforks: the child
  runs in the server's memory, so the shim must not touch its tables there;
- ``path``: the same with a bare program name and two missing directories first in
  ``PATH``: the child's first execs fail, and the later ones must not revert again;
- ``scm``: the descriptor goes over SCM_RIGHTS to a helper process started before;
- ``stdio``: the server itself goes on with C's stdio on a copy (``fdopen``: glibc's
  ``fread`` and ``fwrite`` use calls no shim sees);
- ``system``: the server calls ``system()`` with the connection inheritable and in an
  epoll set, then goes on serving it from that set (the registration, which the kernel
  drops with the old socket, is made again);
- ``crowded``: ``subprocess`` while the server holds 100 more ring-mode connections
  open: the vfork child's ``close_range`` of all of them must not push its ``dup2``s
  onto 0 and 1 out of the shim's notes (64 entries), or the program it execs would read
  the service's tokens as data;
- ``closeeach``: the same crowd, handed on by a C helper (built here) that vforks,
  ``dup2``s onto 0 and 1, then closes every other descriptor one ``close`` at a time,
  as a daemon's loop up to ``getdtablesize`` does, and execs.

Whoever holds the connection then echoes the rest to EOF, after one line with the peer's
address as ``getpeername`` reports it on the new descriptor. A kernel client checks
every byte by hash, and the address line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from service_helpers import JOYRIDE, wait_port
from test_run_ring_mode import RING_ENV, channel_counters

from joyride.testbed import Testbed

pytestmark = pytest.mark.integration

# Echo stdin (or the descriptor in argv[1]) to EOF, after "peer <ip>\n".
ECHO = r'''
import os, socket, sys
fd = int(sys.argv[1]) if len(sys.argv) > 1 else 0
out = fd if len(sys.argv) > 1 else 1
s = socket.socket(fileno=os.dup(fd))
line = ("peer %s\n" % s.getpeername()[0]).encode()
s.detach()
def put(data):
    while data:
        data = data[os.write(out, data):]
put(line)
while True:
    d = os.read(fd, 65536)
    if not d:
        break
    put(d)
'''

# Prepended to the servers here and in test_ring_revert_options.py: up to n bytes,
# fewer only at EOF (a short read would take a connection for the port probe).
RECV_UPTO = r'''
def recv_upto(c, n):
    got = b""
    while len(got) < n:
        d = c.recv(n - len(got))
        if not d:
            break
        got += d
    return got
'''

SERVER = RECV_UPTO + r'''
import os, socket, subprocess, sys, time
mode, port, first, echo = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
idle = int(sys.argv[5]) if len(sys.argv) > 5 else 0
helper = None
if mode == "scm":
    mine, theirs = socket.socketpair()
    helper = subprocess.Popen([sys.executable, "-c", """
import os, socket, subprocess, sys, threading
u = socket.socket(fileno=int(sys.argv[1]))
def serve(fd):  # a plain stream by now: handed on as any descriptor
    subprocess.run([sys.executable, "-c", sys.argv[2], str(fd)], pass_fds=[fd])
    os.close(fd)
while True:
    msg, fds, _, _ = socket.recv_fds(u, 16, 1)
    if not msg:
        break
    threading.Thread(target=serve, args=(fds[0],)).start()
""", str(theirs.fileno()), echo], pass_fds=[theirs.fileno()])
    theirs.close()
ls = socket.socket(); ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind(("0.0.0.0", port)); ls.listen(128)
children = []
held = []
while len(held) < idle:  # ring-mode connections held open, each after its greeting
    c, _ = ls.accept()
    if recv_upto(c, 5) == b"idle\n":
        held.append(c)
    else:  # wait_port's probe
        c.close()
while True:
    c, _ = ls.accept()
    got = recv_upto(c, first)
    if len(got) < first:  # wait_port's probe
        c.close()
        continue
    c.sendall(got)
    time.sleep(0.3)  # the rest and the FIN arrive, unread, in the rx ring
    if mode == "fork":
        pid = os.fork()
        if pid == 0:
            os.dup2(c.fileno(), 0); os.dup2(c.fileno(), 1)
            os.execv(sys.executable, [sys.executable, "-c", echo])
        children.append(pid)
    elif mode in ("subprocess", "crowded"):
        children.append(subprocess.Popen([sys.executable, "-c", echo], stdin=c, stdout=c))
    elif mode == "closeeach":  # vfork, dup2s, a close of each descriptor, exec (in C)
        import ctypes
        spawn = ctypes.CDLL(sys.argv[6]).spawn_closing_each
        spawn.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p,
                          ctypes.POINTER(ctypes.c_char_p)]
        argv = (ctypes.c_char_p * 4)(sys.executable.encode(), b"-c", echo.encode(), None)
        pid = spawn(c.fileno(), 1024, sys.executable.encode(), argv)
        assert pid > 0, "vfork failed"
        children.append(pid)
    elif mode == "path":  # a bare name: the vfork child execs once per PATH entry
        path = "/nonexistent-a:/nonexistent-b:" + os.path.dirname(sys.executable)
        children.append(subprocess.Popen([os.path.basename(sys.executable), "-c", echo],
                                         stdin=c, stdout=c, env={**os.environ, "PATH": path}))
    elif mode == "stdio":  # C's stdio on a copy, through ctypes: fdopen, fread, fwrite
        import ctypes
        libc = ctypes.CDLL(None)
        libc.fdopen.restype = ctypes.c_void_p
        libc.fdopen.argtypes = [ctypes.c_int, ctypes.c_char_p]
        for name in ("fread", "fwrite"):
            getattr(libc, name).argtypes = [ctypes.c_char_p, ctypes.c_size_t,
                                            ctypes.c_size_t, ctypes.c_void_p]
        libc.fflush.argtypes = libc.fclose.argtypes = [ctypes.c_void_p]
        fp = libc.fdopen(os.dup(c.fileno()), b"r+")
        assert fp, "fdopen failed"
        line = ("peer %s\n" % c.getpeername()[0]).encode()
        libc.fwrite(line, 1, len(line), fp)
        libc.fflush(fp)
        buf = ctypes.create_string_buffer(65536)
        while True:
            n = libc.fread(buf, 1, 65536, fp)  # whole chunks until the EOF
            if n == 0:
                break
            libc.fwrite(buf, 1, n, fp)
            libc.fflush(fp)
        libc.fclose(fp)
    elif mode == "system":  # an inheritable connection in an epoll set, then system()
        import select
        c.set_inheritable(True)
        ep = select.epoll()
        ep.register(c.fileno(), select.EPOLLIN)
        assert os.system("true") == 0  # reverts c: its registration is made again
        c.sendall(("peer %s\n" % c.getpeername()[0]).encode())
        while True:
            assert ep.poll(30), "the epoll registration did not survive"
            d = c.recv(65536)
            if not d:
                break
            c.sendall(d)
        ep.close()
    else:
        socket.send_fds(mine, [b"c"], [c.fileno()])
    c.close()
'''

CLIENT = r'''
import hashlib, random, socket, sys, threading
ip, port, nconn, first = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
idle = [socket.create_connection((ip, port), timeout=60)
        for _ in range(int(sys.argv[5]) if len(sys.argv) > 5 else 0)]
for s in idle:
    s.sendall(b"idle\n")
results = []
def one(i):
    rnd = random.Random(i)
    data = rnd.randbytes(first + rnd.choice([1, 3000, 70000, 200000]))
    s = socket.create_connection((ip, port), timeout=60)
    me = s.getsockname()[0]
    s.sendall(data[:first])
    echoed = b""
    while len(echoed) < first:
        d = s.recv(first - len(echoed))
        assert d, "EOF before the first part's echo"
        echoed += d
    s.sendall(data[first:])
    s.shutdown(socket.SHUT_WR)
    rest = b""
    while True:
        d = s.recv(1 << 20)
        if not d:
            break
        rest += d
    line, _, body = rest.partition(b"\n")
    results.append((line == ("peer " + me).encode(),
                    hashlib.sha256(echoed + body).digest() == hashlib.sha256(data).digest(),
                    line[:60], len(echoed + body), len(data)))
ts = [threading.Thread(target=one, args=(i,)) for i in range(nconn)]
for t in ts: t.start(); t.join()  # one at a time: the server serves them in turn
print(len(results) == nconn and all(r[0] and r[1] for r in results), results)
'''

FIRST = 1000  # bytes the server reads and echoes itself, through the rings


IDLE = {"crowded": 100, "closeeach": 100}  # ring-mode connections held open meanwhile

# closeeach's hand-off: C, because a vfork child may run no Python. Its closes go
# through libc's close, so the shim sees each one, as it would a C daemon's.
SPAWN_CLOSING_EACH = r"""
#include <unistd.h>
int spawn_closing_each(int conn, int maxfd, const char *path, char *const argv[])
{
    pid_t pid = vfork();
    if (pid == 0) {
        if (dup2(conn, 0) < 0 || dup2(conn, 1) < 0)
            _exit(126);
        for (int fd = 3; fd < maxfd; fd++)
            close(fd);
        execv(path, argv);
        _exit(127);
    }
    return pid;
}
"""


def spawn_helper(tmp_path: Path) -> Path:
    source, lib = tmp_path / "spawn.c", tmp_path / "spawn.so"
    source.write_text(SPAWN_CLOSING_EACH)
    subprocess.run(["gcc", "-O2", "-shared", "-fPIC", "-o", str(lib), str(source)],
                   check=True)
    return lib


@pytest.mark.parametrize("mode,port", [("fork", 8088), ("subprocess", 8089), ("scm", 8099),
                                       ("stdio", 8082), ("system", 8083), ("path", 8084),
                                       ("crowded", 8081), ("closeeach", 8080)])
def test_connection_handed_on_reverts_to_a_stream(service_bed: Testbed, tmp_path: Path,
                                                   mode: str, port: int) -> None:
    bed = service_bed
    before = channel_counters(bed)
    errors = tmp_path / "server.err"
    idle = str(IDLE.get(mode, 0))
    extra = [str(spawn_helper(tmp_path))] if mode == "closeeach" else []
    with errors.open("wb") as err:
        bed.joy.popen(JOYRIDE, "run", "--", sys.executable, "-c", SERVER, mode, str(port),
                      str(FIRST), ECHO, idle, *extra, env=RING_ENV,
                      stdout=subprocess.DEVNULL, stderr=err)
    wait_port(bed.peer, bed.joy.ip, port)
    done = bed.peer.run(sys.executable, "-c", CLIENT, bed.joy.ip, str(port), "4", str(FIRST),
                        idle, timeout=180)
    out = done.stdout.decode().strip()
    assert out.startswith("True"), (out, done.stderr.decode()[-2000:],
                                    errors.read_text()[-2000:])
    after = channel_counters(bed)
    # Each connection was claimed in ring mode, then left it, with bytes still unread.
    assert after["chan_ring"] - before.get("chan_ring", 0) >= 4, after
    assert after["chan_reverts"] - before.get("chan_reverts", 0) == 4, after
    assert after["chan_revert_bytes"] > before.get("chan_revert_bytes", 0), after
    assert after["chan_broken"] == before.get("chan_broken", 0), after
