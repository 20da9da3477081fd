"""The service's privilege drop (issue 21): the seccomp allow-list built by ``privdrop``
kills a process that leaves it, and lets the steady state's calls through; the
supervisor's helper accepts only well-formed unicast IPv4 neighbour requests."""

from __future__ import annotations

import platform
import signal
import subprocess
import sys
import textwrap

import pytest

from joyride.claim import privdrop
from joyride.service.supervisor import valid_neighbour

needs_x86_64 = pytest.mark.skipif(platform.machine() != "x86_64",
                                  reason="the allow-list is built for x86-64")

# Installs the service's filter (no uid change: only NNP + seccomp), then does $1.
CHILD = textwrap.dedent("""
    import ctypes, os, socket, sys, threading
    from joyride.claim import privdrop
    libc = ctypes.CDLL(None, use_errno=True)
    worker = threading.Thread(target=lambda: None)  # threads still start afterwards
    privdrop.set_no_new_privs()
    privdrop.install_filter()
    what = sys.argv[1]
    if what == "steady":
        worker.start(); worker.join()
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        a.send(b"x"); assert b.recv(8) == b"x"
        with open("/proc/self/status") as f:
            text = f.read()
        print([l for l in text.splitlines() if l.startswith(("NoNewPrivs", "Seccomp:"))])
    elif what == "ptrace":
        libc.syscall(ctypes.c_long(101), ctypes.c_long(0), ctypes.c_long(0),
                     ctypes.c_long(0), ctypes.c_long(0))
    elif what == "inet":
        socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    elif what == "bpf_prog_load":
        libc.syscall(ctypes.c_long(321), ctypes.c_long(5), ctypes.c_long(0), ctypes.c_long(0))
    elif what == "exec":
        os.execv("/bin/true", ["true"])
    elif what == "thread_ptrace":  # a violation in another thread kills the process too
        t = threading.Thread(target=lambda: libc.syscall(ctypes.c_long(101), ctypes.c_long(0),
                             ctypes.c_long(0), ctypes.c_long(0), ctypes.c_long(0)))
        t.start(); t.join()
    print("survived")
""")


def run_child(what: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", CHILD, what], capture_output=True,
                          text=True, timeout=30, check=False)


@needs_x86_64
def test_steady_state_calls_pass() -> None:
    out = run_child("steady")
    assert out.returncode == 0, out.stderr
    assert "'NoNewPrivs:\\t1'" in out.stdout and "'Seccomp:\\t2'" in out.stdout
    assert "survived" in out.stdout


@needs_x86_64
@pytest.mark.parametrize("what", ["ptrace", "inet", "bpf_prog_load", "exec", "thread_ptrace"])
def test_forbidden_call_kills_the_process(what: str) -> None:
    out = run_child(what)
    assert out.returncode == -signal.SIGSYS, (out.returncode, out.stdout, out.stderr)
    assert "survived" not in out.stdout


def test_filter_shape() -> None:
    program = privdrop.build_filter()
    assert len(program) % 8 == 0 and len(program) // 8 < 4096
    # every block ends in a kill: the last instruction is RET KILL_PROCESS
    code, _jt, _jf, k = __import__("struct").unpack("=HBBI", program[-8:])
    assert code == privdrop.BPF_RET_K and k == privdrop.SECCOMP_RET_KILL_PROCESS
    for name in ("execve", "ptrace", "setuid", "mount", "chmod", "chown", "mkdir", "unlink",
                 "kill"):
        assert name not in privdrop.ALLOWED


def test_resolve_user_refuses_root_and_unknown() -> None:
    with pytest.raises(KeyError):
        privdrop.resolve_user("root")
    with pytest.raises(KeyError):
        privdrop.resolve_user("no-such-user-joyride-test")


@pytest.mark.parametrize("message,expected", [
    (b"neigh 198.18.0.2", "198.18.0.2"),
    (b"neigh 10.0.0.1", "10.0.0.1"),
    (b"neigh 224.0.0.1", None),
    (b"neigh 255.255.255.255", None),
    (b"neigh 0.0.0.0", None),
    (b"neigh 127.0.0.1", None),
    (b"neigh 240.0.0.1", None),
    (b"neigh 10.0.0.1 dev eth0", None),
    (b"neigh ::1", None),
    (b"neigh 2001:2::2", "2001:2::2"),  # IPv6 neighbours (issue 18)
    (b"neigh 2001:0002:0000::0002", "2001:2::2"),  # written as RFC 5952 writes it
    (b"neigh fe80::1", "fe80::1"),
    (b"neigh ff02::1", None),
    (b"neigh ::", None),
    (b"neigh ::ffff:10.0.0.1", None),
    (b"del 10.0.0.1", None),
    (b"neigh \xff", None),
    (b"neigh " + b"1" * 40, None),
])
def test_helper_validates_requests(message: bytes, expected: str | None) -> None:
    assert valid_neighbour(message) == expected

