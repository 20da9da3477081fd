"""Network namespaces joined by veth pairs, with guaranteed cleanup.

Topology (both ends of every veth live in namespaces this module creates; nothing is
ever created in, or sent through, the root namespace)::

    [joy ns] jr<tag>j ──veth── jr<tag>p [peer ns]                   (unimpaired link)
    [joy ns] jr<tag>j ──veth── jr<tag>r ⇄ relay ⇄ jr<tag>s ──veth── jr<tag>p [peer ns]
    [joy ns] jr<tag>j ──veth── jr<tag>r ⇄ bridge ⇄ jr<tag>s ──veth── jr<tag>p [peer ns]
    [joy ns] jr<tag>j ──veth── jr<tag>r ⇄ router ⇄ jr<tag>s ──veth── jr<tag>p [peer ns]

The middle namespace exists when the link is impaired towards the Joyride side (loss or
duplication: its nft rules sit on ``jr<tag>r``'s egress, see ``impair``) or needs the
relay (delay, reordering, corruption). Without the relay, a kernel bridge joins it.
With ``path_mtu`` it is a router instead, between two subnets (of both families with
``ipv6``), whose peer-side device has that smaller MTU: the path is narrower than either
end's own link, and the router answers a packet too big for it (DF set) with ICMP
"fragmentation needed" (RFC 1191), or ICMPv6 "packet too big" (RFC 8201), as a real one
does.

The *joy* node is where Joyride attaches (XDP + AF_XDP); the *peer* node is the kernel
on the other side of the wire. Transmit checksum offload is off on the peer's veth (and
on every veth of a middle namespace), because frames with
unfinished checksums would otherwise reach Joyride (DESIGN.md, facts).

With ``ipv6=True`` both ends also get an IPv6 address (``Node.ip6``, RFC 5180's
2001:2::/48); otherwise IPv6 is off in every namespace.

Namespace names are ``jr-<pid>-<hex>-<role>``: unique per run, and ``sweep()`` can tell a
leftover of a crashed run (its pid is gone) from a live parallel run.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Final

from joyride import netns
from joyride.processes import pid_alive, terminate
from joyride.testbed.impair import Impairment, nft_table, tbf_args

PREFIX: Final = "jr"
NS_PATTERN: Final = re.compile(rf"^{PREFIX}-(\d+)-([0-9a-f]+)-(\w+)$")
# RFC 2544 benchmarking range: never routed, never anyone else's address.
SUBNET_BASE: Final = "198.18"
RELAY_STATS_TIMEOUT: Final = 5.0  # seconds for the relay to write its counters
# IPv6's (RFC 5180): 2001:2::/48, a /64 per test bed.
SUBNET6_BASE: Final = "2001:2:0"


def _canonical6(address: str) -> str:
    """The canonical text of an IPv6 address (RFC 5952), as ip(8) prints it."""
    return socket.inet_ntop(socket.AF_INET6, socket.inet_pton(socket.AF_INET6, address))


class TestbedError(RuntimeError):
    """The test bed could not be built (missing privilege, missing tool, kernel refusal)."""

    __test__ = False  # not a pytest test class


def _run(args: Sequence[str], *, check: bool = True, timeout: float = 30.0,
         input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    try:
        proc = subprocess.run(list(args), capture_output=True, timeout=timeout, input=input)
    except FileNotFoundError as exc:
        raise TestbedError(f"{args[0]} not found: run scripts/setup.sh") from exc
    if check and proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip()
        raise TestbedError(f"`{' '.join(args)}` failed ({proc.returncode}): {err}")
    return proc


@dataclass
class Node:
    """One end of the link: a namespace with one veth."""

    __test__ = False

    netns: str
    ifname: str
    ip: str
    prefix_len: int
    processes: list[subprocess.Popen[Any]] = field(default_factory=list)
    ip6: str | None = None  # with Testbed(ipv6=True): its IPv6 address (/64)

    @property
    def ip_bytes(self) -> bytes:
        return socket.inet_aton(self.ip)

    @property
    def ip6_bytes(self) -> bytes:
        assert self.ip6 is not None, "a test bed made without ipv6=True"
        return socket.inet_pton(socket.AF_INET6, self.ip6)

    @property
    def mac(self) -> str:
        out = self.run("cat", f"/sys/class/net/{self.ifname}/address").stdout
        return out.decode().strip()

    @property
    def ifindex(self) -> int:
        with self.inside():
            return socket.if_nametoindex(self.ifname)

    def cmd(self, *args: str) -> list[str]:
        """The argv that runs ``args`` inside this namespace."""
        return ["ip", "netns", "exec", self.netns, *args]

    def run(self, *args: str, check: bool = True, timeout: float = 30.0,
            input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        return _run(self.cmd(*args), check=check, timeout=timeout, input=input)

    def popen(self, *args: str, **kwargs: Any) -> subprocess.Popen[Any]:
        """Start a process in this namespace; the test bed ends it (by pid) on teardown."""
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        proc: subprocess.Popen[Any] = subprocess.Popen(self.cmd(*args), **kwargs)
        self.processes.append(proc)
        return proc

    def inside(self) -> contextlib.AbstractContextManager[None]:
        """Move the calling thread into this namespace for the body (sockets, XDP, AF_XDP)."""
        return netns.inside(self.netns)

    def sysctl(self, key: str, value: str) -> None:
        self.run("sysctl", "-q", "-w", f"{key}={value}")

    def stop_processes(self, timeout: float = 3.0) -> None:
        terminate(self.processes, timeout)
        self.processes.clear()


class Testbed:
    """Two namespaces (``joy`` and ``peer``) joined by a veth pair, optionally impaired.

    Use as a context manager (teardown runs even when the body raises) or through the
    ``testbed`` pytest fixture in ``tests/conftest.py``.
    """

    __test__ = False

    def __init__(
        self,
        *,
        mtu: int = 1500,
        rx_queues: int = 1,
        to_joy: Impairment | None = None,
        to_peer: Impairment | None = None,
        subnet: int | None = None,
        seed: int | None = None,
        path_mtu: int | None = None,
        ipv6: bool = False,
    ) -> None:
        if not 68 <= mtu <= 65535:
            raise ValueError(f"mtu={mtu} out of range 68..65535")
        if not 1 <= rx_queues <= 64:
            raise ValueError(f"rx_queues={rx_queues} out of range 1..64")
        self.mtu = mtu
        self.rx_queues = rx_queues
        self.to_joy = to_joy or Impairment()
        self.to_peer = to_peer or Impairment()
        if self.to_peer.rate_bps:
            raise ValueError("rate limiting applies towards the Joyride side only")
        least = 1280 if ipv6 else 576  # RFC 8200 §5: IPv6 links carry 1280 bytes at least
        if path_mtu is not None and not least <= path_mtu < mtu:
            raise ValueError(f"path_mtu={path_mtu} must be in {least}..{mtu - 1}")
        if path_mtu is not None and (not self.to_joy.is_none or not self.to_peer.is_none):
            raise ValueError("a routed path (path_mtu) takes no impairment")
        self.path_mtu = path_mtu
        self.seed = seed
        self.tag = secrets.token_hex(3)
        base = f"{PREFIX}-{os.getpid()}-{self.tag}"
        third = subnet if subnet is not None else int(self.tag[:2], 16)
        # Routed: the peer lives in a second subnet, behind the router.
        peer_third = (third + 128) % 256 if path_mtu is not None else third
        self.joy = Node(f"{base}-joy", f"{PREFIX}{self.tag}j", f"{SUBNET_BASE}.{third}.1", 24)
        self.peer = Node(f"{base}-peer", f"{PREFIX}{self.tag}p",
                         f"{SUBNET_BASE}.{peer_third}.2", 24)
        self._router_ips = (f"{SUBNET_BASE}.{third}.254", f"{SUBNET_BASE}.{peer_third}.254")
        self._router_ips6: tuple[str, str] | None = None
        if ipv6:
            # Canonical text (RFC 5952), as ip(8) prints it: a third group of 0 would
            # otherwise read "2001:2:0:0::2" where the kernel says "2001:2::2".
            self.joy.ip6 = _canonical6(f"{SUBNET6_BASE}:{third:x}::1")
            self.peer.ip6 = _canonical6(f"{SUBNET6_BASE}:{peer_third:x}::2")
            if path_mtu is not None:
                self._router_ips6 = (_canonical6(f"{SUBNET6_BASE}:{third:x}::fe"),
                                     _canonical6(f"{SUBNET6_BASE}:{peer_third:x}::fe"))
        self.middle_ns: str | None = None
        self.relay_proc: subprocess.Popen[bytes] | None = None
        self._workdir: tempfile.TemporaryDirectory[str] | None = None
        self._namespaces: list[str] = []

    # -- lifecycle ---------------------------------------------------------------------

    def __enter__(self) -> Testbed:
        try:
            self.setup()
        except BaseException:
            self.teardown()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.teardown()

    @property
    def uses_relay(self) -> bool:
        return self.to_joy.needs_relay or self.to_peer.needs_relay

    @property
    def uses_middle(self) -> bool:
        """Loss or duplication towards Joyride must happen past the peer's own device;
        a narrower path needs its router."""
        return self.uses_relay or self.to_joy.needs_nft or self.path_mtu is not None

    @property
    def _middle_left(self) -> str:
        return f"{PREFIX}{self.tag}r"  # the middle namespace's Joyride-facing veth

    @property
    def _middle_right(self) -> str:
        return f"{PREFIX}{self.tag}s"  # the middle namespace's peer-facing veth

    def setup(self) -> None:
        if os.geteuid() != 0:
            raise TestbedError("the test bed needs root (network namespaces, veth, nftables)")
        self._workdir = tempfile.TemporaryDirectory(prefix=f"{PREFIX}-{self.tag}-")
        for node in (self.joy, self.peer):
            self._add_netns(node.netns)
        queues = ["numtxqueues", str(self.rx_queues), "numrxqueues", str(self.rx_queues)]
        if self.uses_middle:
            self.middle_ns = mid = f"{PREFIX}-{os.getpid()}-{self.tag}-mid"
            self._add_netns(mid)
            left, right = self._middle_left, self._middle_right
            self._veth(self.joy.netns, self.joy.ifname, mid, left, queues)
            self._veth(mid, right, self.peer.netns, self.peer.ifname, queues)
            for dev in (left, right):
                self._link_up(mid, dev)
                self._offloads_off(mid, dev)
            self._offloads_off(self.joy.netns, self.joy.ifname)
            if self.path_mtu is not None:
                self._router(mid, left, right, self.path_mtu)
            elif not self.uses_relay:
                self._bridge(mid, f"{PREFIX}{self.tag}b", (left, right))
        else:
            self._veth(self.joy.netns, self.joy.ifname, self.peer.netns, self.peer.ifname, queues)
            if not self.to_peer.is_none:
                # The peer's ingress rules judge frames as the wire carries them: a TSO
                # or GSO super-frame (the kernel's, or Joyride's GSO) would otherwise be
                # lost, duplicated or corrupted whole, 45 segments at once.
                self._offloads_off(self.joy.netns, self.joy.ifname)
        for node in (self.joy, self.peer):
            _run(["ip", "-n", node.netns, "addr", "add", f"{node.ip}/{node.prefix_len}",
                  "dev", node.ifname])
            self._link_up(node.netns, node.ifname)
            self._link_up(node.netns, "lo")
        for node in (self.joy, self.peer):
            if node.ip6 is not None:
                self._ipv6_on(node)
        if self.path_mtu is not None:
            for node, router_ip in ((self.joy, self._router_ips[0]),
                                    (self.peer, self._router_ips[1])):
                _run(["ip", "-n", node.netns, "route", "add", "default", "via", router_ip])
            if self._router_ips6 is not None:
                for node, router_ip in ((self.joy, self._router_ips6[0]),
                                        (self.peer, self._router_ips6[1])):
                    _run(["ip", "-n", node.netns, "-6", "route", "add", "default", "via",
                          router_ip])
        self._offloads_off(self.peer.netns, self.peer.ifname)
        self._apply_impairments()
        if self.uses_relay:
            self._start_relay()

    def _add_netns(self, name: str) -> None:
        _run(["ip", "netns", "add", name])
        self._namespaces.append(name)
        # No IPv6 autoconfiguration chatter: counters in tests must equal the traffic sent.
        for key in ("net.ipv6.conf.all.disable_ipv6", "net.ipv6.conf.default.disable_ipv6"):
            _run(["ip", "netns", "exec", name, "sysctl", "-q", "-w", f"{key}=1"], check=False)

    def _veth(self, ns_a: str, dev_a: str, ns_b: str, dev_b: str, queues: list[str]) -> None:
        # Created inside ns_a with its peer placed straight into ns_b: never in the root ns.
        _run(["ip", "-n", ns_a, "link", "add", dev_a, "mtu", str(self.mtu), *queues,
              "type", "veth", "peer", "name", dev_b, "netns", ns_b, "mtu", str(self.mtu),
              *queues])

    def _link_up(self, ns: str, dev: str) -> None:
        _run(["ip", "-n", ns, "link", "set", dev, "up"])

    def _bridge(self, ns: str, name: str, ports: Sequence[str]) -> None:
        # No STP: a port forwards as soon as it is up, with no learning delay.
        _run(["ip", "-n", ns, "link", "add", name, "type", "bridge", "stp_state", "0"])
        for port in ports:
            _run(["ip", "-n", ns, "link", "set", port, "master", name])
        self._link_up(ns, name)

    def _ipv6_on(self, node: Node) -> None:
        """IPv6 on the node's device only (every namespace starts with it off): a /64
        address without duplicate address detection (usable at once), no router
        solicitations, no autoconfiguration."""
        conf = f"net.ipv6.conf.{node.ifname}"
        for key, value in (("accept_ra", "0"), ("autoconf", "0"),
                           ("router_solicitations", "0"), ("dad_transmits", "0"),
                           ("disable_ipv6", "0")):
            node.sysctl(f"{conf}.{key}", value)
        _run(["ip", "-n", node.netns, "-6", "addr", "add", f"{node.ip6}/64", "dev",
              node.ifname, "nodad"])

    def _router(self, ns: str, left: str, right: str, path_mtu: int) -> None:
        """Forwarding between the two subnets; the peer-side device's smaller MTU makes
        the router answer a bigger packet with DF set with ICMP "fragmentation needed"
        (RFC 1191 §3), and any bigger IPv6 packet with ICMPv6 "packet too big" (RFC 8201
        §4: IPv6 routers never fragment), instead of forwarding it."""
        _run(["ip", "netns", "exec", ns, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])
        for dev, ip in ((left, self._router_ips[0]), (right, self._router_ips[1])):
            _run(["ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", dev])
        if self._router_ips6 is not None:
            _run(["ip", "netns", "exec", ns, "sysctl", "-q", "-w",
                  "net.ipv6.conf.all.forwarding=1"])
            for dev, ip in ((left, self._router_ips6[0]), (right, self._router_ips6[1])):
                for key, value in (("accept_ra", "0"), ("dad_transmits", "0"),
                                   ("disable_ipv6", "0")):
                    _run(["ip", "netns", "exec", ns, "sysctl", "-q", "-w",
                          f"net.ipv6.conf.{dev}.{key}={value}"])
                _run(["ip", "-n", ns, "-6", "addr", "add", f"{ip}/64", "dev", dev, "nodad"])
        _run(["ip", "-n", ns, "link", "set", right, "mtu", str(path_mtu)])

    def _offloads_off(self, ns: str, dev: str) -> None:
        # Full checksums on the wire; no super-frames bigger than the MTU for a relay.
        _run(["ip", "netns", "exec", ns, "ethtool", "-K", dev, "tx", "off", "tso", "off",
              "gso", "off"], check=False)
        proc = _run(["ip", "netns", "exec", ns, "ethtool", "-k", dev])
        if b"tx-checksumming: off" not in proc.stdout:
            raise TestbedError(f"could not turn off tx checksum offload on {dev}")

    def _apply_impairments(self) -> None:
        towards_joy = nft_table("egress", self._middle_left, self.to_joy)
        if towards_joy:
            assert self.middle_ns is not None
            _run(["ip", "netns", "exec", self.middle_ns, "nft", "-f", "-"],
                 input=towards_joy.encode())
        towards_peer = nft_table("ingress", self.peer.ifname, self.to_peer)
        if towards_peer:
            self.peer.run("nft", "-f", "-", input=towards_peer.encode())
        if self.to_joy.rate_bps:
            self.peer.run(*tbf_args(self.peer.ifname, self.to_joy.rate_bps))

    def _start_relay(self) -> None:
        assert self.middle_ns is not None and self._workdir is not None
        ready = Path(self._workdir.name) / "relay.ready"
        cmd = [
            "ip", "netns", "exec", self.middle_ns, sys.executable, "-m", "joyride.testbed.relay",
            self._middle_left, self._middle_right,
            "--to-left", f"{self.to_joy.delay},{self.to_joy.reorder},{self.to_joy.corrupt}",
            "--to-right", f"{self.to_peer.delay},{self.to_peer.reorder},{self.to_peer.corrupt}",
            "--stats", str(self.relay_stats_path), "--ready", str(ready),
        ]
        if self.seed is not None:
            cmd += ["--seed", str(self.seed)]
        self.relay_proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL,
                                           stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while not ready.exists():
            if self.relay_proc.poll() is not None:
                err = self.relay_proc.stderr.read().decode() if self.relay_proc.stderr else ""
                raise TestbedError(f"relay exited at start: {err.strip()}")
            if time.monotonic() > deadline:
                raise TestbedError("relay did not start within 10 s")
            time.sleep(0.02)

    @property
    def relay_stats_path(self) -> Path:
        assert self._workdir is not None
        return Path(self._workdir.name) / "relay.json"

    def relay_stats(self) -> dict[str, dict[str, float]]:
        """Counters of the relay: ``to_joy`` and ``to_peer`` directions."""
        if not self.uses_relay:
            return {}
        # The relay writes its counters every 0.2 s: wait for a write made after this
        # call, which counts every frame it forwarded before (a fixed sleep read a stale
        # count on a loaded machine).
        asked = time.monotonic()
        deadline = asked + RELAY_STATS_TIMEOUT
        while True:
            try:
                raw = json.loads(self.relay_stats_path.read_text())
            except (FileNotFoundError, ValueError):
                raw = {}
            if raw.get("written_at", 0.0) >= asked:
                return {"to_peer": raw["0"], "to_joy": raw["1"]}
            if time.monotonic() >= deadline:
                raise TestbedError(f"the relay wrote no counters for {RELAY_STATS_TIMEOUT} s "
                                   f"({self.relay_stats_path})")
            time.sleep(0.05)

    def teardown(self) -> None:
        """Remove everything this bed created. Safe to call twice; never raises."""
        errors: list[str] = []
        for node in (self.joy, self.peer):
            node.stop_processes()
        if self.relay_proc is not None:
            terminate([self.relay_proc], 3.0)
            self.relay_proc = None
        # Deleting a namespace destroys its veths (and their peers), qdiscs, nft tables
        # and any XDP program attached to its devices.
        for name in reversed(self._namespaces):
            proc = _run(["ip", "netns", "delete", name], check=False)
            if proc.returncode != 0 and Path(netns.NETNS_RUN_DIR, name).exists():
                errors.append(proc.stderr.decode().strip())
        self._namespaces.clear()
        if self._workdir is not None:
            self._workdir.cleanup()
            self._workdir = None
        if errors:
            print(f"joyride testbed: teardown problems: {errors}", file=sys.stderr)


def list_namespaces() -> list[str]:
    proc = _run(["ip", "netns", "list"], check=False)
    return [line.split()[0] for line in proc.stdout.decode().splitlines() if line.strip()]


def sweep(*, include_live: bool = False) -> list[str]:
    """Delete test-bed namespaces left by runs whose process is gone; return their names."""
    removed = []
    for name in list_namespaces():
        m = NS_PATTERN.match(name)
        if not m:
            continue
        if not include_live and pid_alive(int(m.group(1))) and int(m.group(1)) != 0:
            continue
        _kill_namespace_processes(name)
        if _run(["ip", "netns", "delete", name], check=False).returncode == 0:
            removed.append(name)
    if removed:
        # A service killed with its namespace leaves its state directory, named by the
        # namespace's inode; a new namespace may reuse that inode and would then seem to
        # hold a second (dead) service.
        from joyride.service import orphans

        orphans.sweep()
    return removed


def _kill_namespace_processes(name: str) -> None:
    """End processes still inside a leftover namespace (a crashed run's relay or servers).

    They are found by pid through ``ip netns pids`` for that one namespace, never by name.
    """
    proc = _run(["ip", "netns", "pids", name], check=False)
    for token in proc.stdout.decode().split():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(token), signal.SIGKILL)


@contextlib.contextmanager
def testbed(**kwargs: Any) -> Iterator[Testbed]:
    with Testbed(**kwargs) as bed:
        yield bed
