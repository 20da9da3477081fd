"""Socket options, ioctls and address calls answer as a kernel TCP socket does (issue 14).

A kernel TCP socket and a Joyride descriptor in the same state (listening; accepted;
after ``shutdown(SHUT_WR)``; connected out through the service) are asked the same
things by ``sockopt_probe.py``: ``getsockopt`` for every option Linux defines at
``SOL_SOCKET``, ``IPPROTO_IP`` and ``IPPROTO_TCP`` (``sockopt_table.OPTIONS``: value and
length, or the errno), ``setsockopt`` with a valid value (and the value read back)
and an invalid one, ``FIONREAD``/``SIOCOUTQ``/``SIOCOUTQNSD``, ``fcntl``'s flags and
``getsockname``/``getpeername``. Twice: through the preload shim (a Python program
under ``LD_PRELOAD``: the socket module calls libc) and through ``joyride.socket`` in
service mode. The kernel side is a socket on a port the service does not accelerate,
over the same veth bed, talking to the same peer.

Every answer must be the kernel's, except where ``EXPECTED`` says otherwise, with the
reason (the README's "What differs from a kernel socket" says the same). An
expected difference that stops happening fails too, so the table stays true.
"""

from __future__ import annotations

import contextlib
import errno
import json
import re
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from service_helpers import app_path
from sockopt_table import IP, OPTIONS, SOL, TCP

from joyride.sockopts import TCP_INFO, TCP_INFO_FIELDS
from joyride.testbed import Testbed

REPO = Path(__file__).resolve().parents[3]
PROBE = Path(__file__).with_name("sockopt_probe.py")
PORTS = {"shim": (8097, 7097), "python": (8098, 7098)}  # (Joyride's, the kernel's)
PEER_PORT = 7099  # the peer's server, for the connected state
STATES = ("listening", "accepted", "shutdown", "connected")
CONNECTED = frozenset({"accepted", "shutdown", "connected"})
ALL = frozenset(STATES)
BOTH = frozenset({"shim", "python"})
PYTHON = frozenset({"python"})

# Rules for an expected difference.
VARIES = "varies"  # both succeed with the same length; the values are each stack's own
DIFFERS = "differs"  # the answers differ (and must: else the entry is stale)
PORT = "port"  # an address or port: each side's own (same family, address, length)
UNCHECKED = "unchecked"  # nothing to compare, for the reason given


@dataclass(frozen=True)
class Expect:
    check: str  # get, geti, set_valid, readback, set_invalid, ioctl, fcntl, name, tcp_info
    what: str  # the option, ioctl or field
    rule: str
    why: str
    states: frozenset[str] = ALL
    modes: frozenset[str] = BOTH


UNINITIALISED = ("the stdlib's getsockopt(level, name, buflen) passes an uninitialised "
                 "buffer, and this option reads its argument from it")
OWN_WINDOW = "each stack's own receive window and window scale"
TIMING = "a time each stack measures"
NO_IOCTL = ("fcntl.ioctl on a joyride.socket reaches the unix descriptor: only the shim "
            "answers the send queue's ioctls as TCP (Python has no hook for them)")

EXPECTED: tuple[Expect, ...] = (
    Expect("get", "SO_SNDBUF", VARIES, "the unix descriptor's own buffer (what the "
           "application can queue before the service takes it), not TCP's autotuned one"),
    Expect("get", "SO_RCVBUF", VARIES, "the unix descriptor's own buffer, not TCP's "
           "autotuned one (set before listen, both read back the value set)",
           states=frozenset({"connected"})),
    Expect("get", "SO_MEMINFO", VARIES, "the unix descriptor's memory accounting"),
    Expect("get", "SO_COOKIE", VARIES, "every socket's own"),
    Expect("get", "SO_INCOMING_CPU", VARIES, "the CPU that last received for it; the "
           "unix descriptor's is -1 until it receives from the service",
           states=CONNECTED),
    Expect("get", "SO_INCOMING_NAPI_ID", VARIES, "the veth queue's NAPI instance; a unix "
           "socket has none (0)", states=CONNECTED),
    Expect("get", "SO_PEERNAME", PORT, "the peer's address: each connection's own port",
           states=CONNECTED),
    Expect("geti", "SO_PEERNAME", VARIES, "the first four bytes of the peer's address: "
           "family and each connection's own port", states=CONNECTED, modes=PYTHON),
    Expect("get", "IP_PROTOCOL", PORT, "Linux answers inet_num, the local port: each "
           "its own"),
    Expect("geti", "IP_PROTOCOL", VARIES, "the local port, as get: each its own",
           modes=PYTHON),
    Expect("get", "IP_MULTICAST_TTL", DIFFERS, "Linux gives an accepted socket the TTL "
           "of the peer's SYN (tcp_v4_syn_recv_sock); the service does not keep it, so "
           "it reads the default, 1", states=frozenset({"accepted", "shutdown"})),
    Expect("readback", "IP_MULTICAST_TTL", DIFFERS, "setting it is refused on TCP "
           "(EINVAL, on both): it reads as get does",
           states=frozenset({"accepted", "shutdown"})),
    Expect("get", "TCP_WINDOW_CLAMP", VARIES, "the largest window each stack offers: "
           "Linux's from its receive buffer, Joyride's receive_buffer_max (set, both "
           "read back the value set)", states=CONNECTED),
    Expect("get", "TCP_QUICKACK", VARIES, "Linux's delayed-ACK 'pingpong' state, which "
           "an exchange of data switches", states=CONNECTED),
    Expect("get", "TCP_TIMESTAMP", VARIES, "a clock, offset per connection"),
    Expect("get", "TCP_CC_INFO", VARIES, "the congestion controller's own figures "
           "(Linux's default controller's; the service runs its own)", states=CONNECTED),
    Expect("get", "TCP_ZEROCOPY_RECEIVE", DIFFERS, "zero-copy receive maps TCP's pages "
           "into the caller; the bytes are in a unix socket here: EOPNOTSUPP, and the "
           "caller falls back to recv", states=CONNECTED, modes=frozenset({"shim"})),
    Expect("get", "TCP_ZEROCOPY_RECEIVE", UNCHECKED, UNINITIALISED, modes=PYTHON),
    Expect("geti", "TCP_ZEROCOPY_RECEIVE", UNCHECKED, "the int form's four bytes are "
           "too short for its argument: as get", modes=PYTHON),
    Expect("get", "IP_MSFILTER", UNCHECKED, UNINITIALISED, modes=PYTHON),
    Expect("get", "MCAST_MSFILTER", UNCHECKED, UNINITIALISED, modes=PYTHON),
    Expect("ioctl", "SIOCOUTQ", DIFFERS, NO_IOCTL, states=frozenset({"listening"}),
           modes=PYTHON),
    Expect("ioctl", "SIOCOUTQNSD", DIFFERS, NO_IOCTL, modes=PYTHON),
    Expect("name", "sockname", PORT, "each socket's own port"),
    Expect("name", "peername", PORT, "each connection's own port", states=CONNECTED),
)

# TCP_INFO, field by field (struct tcp_info as of 6.1: joyride.sockopts).
TCP_INFO_VARIES: dict[str, str] = {
    "rcv_wscale": OWN_WINDOW, "rcv_ssthresh": OWN_WINDOW, "rcv_space": OWN_WINDOW,
    "flags": "Linux's delivery-rate sampling (app-limited bit)",
    "rto": TIMING, "rtt": TIMING, "rttvar": TIMING, "min_rtt": TIMING,
    "last_data_sent": TIMING, "last_data_recv": TIMING, "last_ack_recv": TIMING,
    "busy_time": TIMING, "rwnd_limited": TIMING, "sndbuf_limited": TIMING,
    "pacing_rate": "Linux's pacing; the service does not pace",
    "delivery_rate": "Linux's delivery-rate estimate; not tracked by the service (0)",
    "snd_cwnd": "each stack's congestion window, grown by each one's ACKs",
    "delivered": "Linux's delivery count; not tracked by the service (0)",
    "rcv_mss": "Linux's estimate of the peer's segment size starts at 536 and grows "
               "with the segments that arrive; the service starts from the negotiated MSS",
    "segs_in": "segment counts: each stack sends its own ACKs",
    "segs_out": "segment counts: each stack sends its own ACKs",
    "data_segs_in": "not counted by the service (0)",
    "data_segs_out": "not counted by the service (0)",
    "bytes_acked": "Linux counts an active open's SYN and the FIN as acknowledged bytes",
    "tail": "fields newer kernels add after tcpi_snd_wnd (tcpi_rcv_wnd ...) are beyond "
            "the 6.1 struct the service fills: 0",
}


# -- the headers: the table is complete -------------------------------------------------------

HEADERS = {
    # header: (first option, last option) of each block of option numbers in it
    "/usr/include/asm-generic/socket.h": (("SO_DEBUG", "SO_RCVMARK"),),
    "/usr/include/linux/in.h": (("IP_TOS", "IP_RECVERR_RFC4884"),
                                ("IP_MULTICAST_IF", "IP_PROTOCOL")),
    "/usr/include/linux/tcp.h": (("TCP_NODELAY", "TCP_TX_DELAY"),),
}
NOT_OPTIONS = {"IP_PMTUDISC_DONT", "IP_PMTUDISC_WANT", "IP_PMTUDISC_DO", "IP_PMTUDISC_PROBE",
               "IP_PMTUDISC_INTERFACE", "IP_PMTUDISC_OMIT"}


def header_options(path: Path) -> dict[str, int]:
    """``#define NAME <number>`` lines of the option blocks of a uapi header."""
    defines = re.findall(r"^#define\s+(\w+)\s+(\d+)\b", path.read_text(), re.MULTILINE)
    out: dict[str, int] = {}
    for first, last in HEADERS[str(path)]:
        names = [name for name, _ in defines]
        block = defines[names.index(first):names.index(last) + 1]
        out.update({name: int(value) for name, value in block if name not in NOT_OPTIONS})
    return out


@pytest.mark.parametrize("header", sorted(HEADERS))
def test_the_table_has_every_option_of_the_headers(header: str) -> None:
    path = Path(header)
    if not path.exists():
        pytest.skip(f"{header} is not installed (linux-libc-dev)")
    level = {"socket.h": SOL, "in.h": IP, "tcp.h": TCP}[path.name]
    table = {o.number for o in OPTIONS if o.level == level}
    missing = {name: number for name, number in header_options(path).items()
               if number not in table}
    assert not missing, f"options of {header} missing from sockopt_table.OPTIONS: {missing}"


# -- the run ---------------------------------------------------------------------------------


def _shim() -> Path:
    return sorted((REPO / "joyride").glob("libjoyride_preload*.so"))[-1]


@contextlib.contextmanager
def peer_server(bed: Testbed) -> Iterator[None]:
    """A kernel server in the peer namespace that sends each connection 100 bytes and
    keeps it open: the far end of the connected state."""
    with bed.peer.inside():
        server = socket.create_server(("0.0.0.0", PEER_PORT))
    held: list[socket.socket] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            conn.sendall(b"p" * 100)
            held.append(conn)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            server.shutdown(socket.SHUT_RDWR)  # wakes accept
        server.close()
        thread.join(5)
        for conn in held:
            conn.close()


def run_probe(bed: Testbed, mode: str, workdir: Path) -> dict[str, Any]:
    joy_port, kernel_port = PORTS[mode]
    table = workdir / "options.json"
    table.write_text(json.dumps([
        [o.level, o.number, None if o.valid is None else o.valid.hex(),
         None if o.invalid is None else o.invalid.hex()] for o in OPTIONS]))
    env = ["env", f"JOYRIDE_SOCKET={app_path(bed.joy)}", f"PYTHONPATH={REPO}"]
    if mode == "shim":
        env.append(f"LD_PRELOAD={_shim()}")
    conns: list[socket.socket] = []
    with peer_server(bed):
        probe = bed.joy.popen(*env, sys.executable, str(PROBE), mode, str(joy_port),
                              str(kernel_port), bed.peer.ip, str(PEER_PORT), str(table),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        watchdog = threading.Timer(PROBE_TIMEOUT_S, probe.kill)
        watchdog.start()
        try:
            assert probe.stdout is not None
            line = probe.stdout.readline()
            assert line and json.loads(line) == {"listening": True}, \
                probe.communicate()[1].decode()
            # Two connections to each: the accepted state's, then the shutdown state's.
            for _ in range(2):
                for port in (kernel_port, joy_port):
                    with bed.peer.inside():
                        conn = socket.create_connection((bed.joy.ip, port), timeout=10)
                    conn.sendall(b"z" * 100)
                    conns.append(conn)
            out, err = probe.communicate(timeout=PROBE_TIMEOUT_S)
        finally:
            watchdog.cancel()
            for conn in conns:
                conn.close()
    assert probe.returncode == 0, err.decode()
    data: dict[str, Any] = json.loads(out.decode().splitlines()[-1])
    return data


# -- the comparison ----------------------------------------------------------------------------

NAMES = {o.key: o for o in OPTIONS}
PROBE_TIMEOUT_S = 90


def expectation(check: str, what: str, state: str, mode: str) -> Expect | None:
    """The entry for this answer. The stdlib's int form (geti) follows get's unless it
    has its own."""
    for e in EXPECTED:
        if e.check == check and e.what == what and state in e.states and mode in e.modes:
            return e
    if check == "geti":
        return expectation("get", what, state, mode)
    return None


def _show(answer: Any) -> str:
    if answer is None:
        return "(not asked)"
    if answer[0] == "err":
        return errno.errorcode.get(answer[1], str(answer[1]))
    return json.dumps(answer[1])


def _same_address(a: Any, b: Any) -> bool:
    """Two answers naming addresses that differ at most in their port."""
    if a[0] != "ok" or b[0] != "ok":
        return bool(a == b)
    x, y = a[1], b[1]
    if isinstance(x, list) and isinstance(y, list):
        return bool(x[0] == y[0] and x[1] and y[1])
    if isinstance(x, str) and isinstance(y, str):  # a sockaddr_in's bytes
        rx, ry = bytes.fromhex(x), bytes.fromhex(y)
        return len(rx) == len(ry) and rx[:2] == ry[:2] and rx[4:] == ry[4:]
    return False


@dataclass
class Verdict:
    unexpected: list[str]
    stale: list[str]
    expected: list[str]


def compare(mode: str, data: dict[str, Any]) -> Verdict:
    verdict = Verdict([], [], [])
    for state in STATES:
        kernel, joyride = data["results"][state]["kernel"], data["results"][state]["joyride"]
        own = {side: _port(data["results"][state][side]) for side in ("kernel", "joyride")}
        for check in ("get", "geti", "set_valid", "readback", "set_invalid"):
            for key, k in kernel.get(check, {}).items():
                option = NAMES[key]
                j = joyride[check].get(key)
                if check == "get" and option.name == "TCP_INFO":
                    _compare_tcp_info(state, mode, k, j, verdict)
                    continue
                if option.name == "IP_PROTOCOL" and check == "get":
                    # Linux's inet_num: each side's own local port.
                    k_ok = k == ["ok", struct.pack("=i", own["kernel"]).hex()]
                    j_ok = j == ["ok", struct.pack("=i", own["joyride"]).hex()]
                    _judge(verdict, state, check, option.name, k_ok and j_ok,
                           expectation(check, option.name, state, mode), k, j, True)
                    continue
                _verdict(verdict, state, mode, check, option.name, k, j)
        for check in ("ioctl", "fcntl"):
            for what, k in kernel[check].items():
                _verdict(verdict, state, mode, check, what, k, joyride[check][what])
        for what in ("sockname", "peername"):
            _verdict(verdict, state, mode, "name", what, kernel[what], joyride[what])
    return verdict


def _port(survey: dict[str, Any]) -> int:
    name = survey["sockname"]
    return int(name[1][1]) if name[0] == "ok" and isinstance(name[1], list) else -1


def _verdict(verdict: Verdict, state: str, mode: str, check: str, what: str, k: Any,
             j: Any) -> None:
    rule = expectation(check, what, state, mode)
    if rule is None or rule.rule == DIFFERS:
        _judge(verdict, state, check, what, k == j, rule, k, j, k == j)
        return
    if rule.rule == UNCHECKED:
        verdict.expected.append(f"{state} {check} {what}: not compared ({rule.why})")
        return
    if rule.rule == VARIES:
        same_kind = k == j or (k[0] == j[0] == "ok" and (
            not isinstance(k[1], str) or len(k[1]) == len(j[1])))
        _judge(verdict, state, check, what, same_kind, rule, k, j, k == j)
        return
    assert rule.rule == PORT
    _judge(verdict, state, check, what, _same_address(k, j), rule, k, j, k == j)


def _judge(verdict: Verdict, state: str, check: str, what: str, ok: bool,
           rule: Expect | None, k: Any, j: Any, identical: bool) -> None:
    where = f"{state} {check} {what}: kernel {_show(k)}, joyride {_show(j)}"
    if rule is None:
        if not ok:
            verdict.unexpected.append(where)
    elif rule.rule == DIFFERS:
        (verdict.stale if identical else verdict.expected).append(
            f"{where} ({rule.why})")
    elif not ok:
        verdict.unexpected.append(f"{where} (expected: {rule.rule}, {rule.why})")
    elif not identical:
        verdict.expected.append(f"{where} ({rule.rule}: {rule.why})")


def _compare_tcp_info(state: str, mode: str, k: Any, j: Any, verdict: Verdict) -> None:
    del mode  # the same fields through both
    if k[0] != "ok" or j[0] != "ok" or len(k[1]) != len(j[1]):
        verdict.unexpected.append(f"{state} get TCP_INFO: kernel {_show(k)[:80]}, "
                                  f"joyride {_show(j)[:80]}")
        return
    kb, jb = bytes.fromhex(k[1]), bytes.fromhex(j[1])
    names = [name for name, _ in TCP_INFO_FIELDS]
    kv = dict(zip(names, TCP_INFO.unpack(kb[:TCP_INFO.size]), strict=True))
    jv = dict(zip(names, TCP_INFO.unpack(jb[:TCP_INFO.size]), strict=True))
    for fields in (kv, jv):
        wscale = fields.pop("wscale")
        fields["snd_wscale"], fields["rcv_wscale"] = wscale & 15, wscale >> 4
    kv["tail"], jv["tail"] = kb[TCP_INFO.size:].hex(), jb[TCP_INFO.size:].hex()
    for field in kv:
        why = TCP_INFO_VARIES.get(field) if state in CONNECTED else None
        where = f"{state} TCP_INFO tcpi_{field}: kernel {kv[field]}, joyride {jv[field]}"
        if why is None:
            if kv[field] != jv[field]:
                verdict.unexpected.append(where)
        elif field == "tail" and jv[field].strip("0"):
            verdict.unexpected.append(f"{where} (expected zeros: {why})")
        elif kv[field] != jv[field]:
            verdict.expected.append(f"{where} (varies: {why})")


@pytest.mark.integration
@pytest.mark.parametrize("mode", ["shim", "python"])
def test_answers_are_a_kernel_tcp_sockets(service_bed: Testbed, mode: str,
                                          tmp_path: Path) -> None:
    data = run_probe(service_bed, mode, tmp_path)
    unsettled = {f"{state}/{side}": what for state, sides in data["missed"].items()
                 for side, what in sides.items() if what}
    assert not unsettled, f"the probe's sockets never settled: {unsettled}"
    verdict = compare(mode, data)
    print(f"\n{mode}: {len(verdict.expected)} expected differences:")
    for line in verdict.expected:
        print("  ", line)
    problems = [f"unexpected: {line}" for line in verdict.unexpected] + [
        f"listed in EXPECTED but gone (update the table and the README): {line}"
        for line in verdict.stale]
    assert not problems, "\n".join(problems)
