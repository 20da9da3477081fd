"""The steering program of one interface: load, attach, ports, sockets, counters.

``Steering`` owns one BCC-loaded copy of ``bpf/steer.c``. Ports and sockets change at
run time through the program's maps, never by reloading. The program keeps working
when this process dies (the kernel holds the attachment); the sockets registered in
its XSKMAP vanish with their process, which turns steering into XDP_PASS (fail-open).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import sys
from collections.abc import Collection, Iterable
from types import TracebackType
from typing import Any, Final, Literal

from joyride import bccenv
from joyride.errors import EnvironmentProblem, JoyrideError, PrivilegeError
from joyride.steer import kernel_sockets, xdp
from joyride.steer.counters import SteerCounters, counter_names, program_source
from joyride.steer.ports import PortSet

log = logging.getLogger(__name__)

PROG_NAME: Final = "joyride_steer"  # the BPF object name Joyride's programs carry
DEFAULT_MAX_QUEUES: Final = 64
MAX_ADDRS: Final = 256  # bpf/steer.c JR_MAX_ADDRS: addresses of each family one interface may carry
_CFG_VLAN: Final = 0  # bpf/steer.c enum jr_config
_CFG_MATCH_ADDR: Final = 1
_CFG_IPV6: Final = 2
Proto = Literal["tcp", "udp"]
Mode = Literal["auto", "native", "skb"]
# Values of the ports maps (bpf/steer.c JR_PORT_*): why a port is steered.
LISTEN: Final = 1
EPHEMERAL: Final = 2
KIND_NAMES: Final = {LISTEN: "listen", EPHEMERAL: "ephemeral"}
# A flag beside the kind (bpf/steer.c JR_PORT_SERVING): a Joyride application listens on
# the port for IPv4, so its SYNs are Joyride's even where a kernel socket listens too.
SERVING: Final = 4
# The same for IPv6 (JR_PORT_SERVING6).
SERVING6: Final = 16
# A flag beside the kind (bpf/steer.c JR_PORT_KERNEL_CONNS): the kernel may have
# connections on the port, so its frames are looked up even where Joyride serves.
KERNEL_CONNS: Final = 8
VLAN_MAX: Final = 4094


class ForeignProgram(JoyrideError):
    """The interface runs an XDP program that Joyride did not attach."""


class PortConflict(JoyrideError):
    """A port is asked to be steered for two reasons at once."""

    exit_code = 2


class Steering:
    """One loaded steering program for interface ``ifname`` (in the caller's netns)."""

    def __init__(self, ifname: str, *, max_queues: int = DEFAULT_MAX_QUEUES) -> None:
        if os.geteuid() != 0:
            raise PrivilegeError("loading XDP programs needs root (CAP_BPF, CAP_NET_ADMIN): "
                                 "run it as root")
        self.ifname = ifname
        self.ifindex = xdp.ifindex(ifname)
        self.max_queues = max_queues
        self.mode: str | None = None
        self.notices: list[str] = []
        self._ports: dict[Proto, dict[int, int]] = {"tcp": {}, "udp": {}}
        # Ports a Joyride application listens on, per protocol, with the IP versions
        # (4, 6) it listens for.
        self._serving: dict[Proto, dict[int, frozenset[int]]] = {"tcp": {}, "udp": {}}
        self._kernel_conns: set[int] = set()  # TCP ports with KERNEL_CONNS
        self._sockets: dict[int, int] = {}
        self._addresses: frozenset[bytes] | None = None  # None: any destination
        self._counter_names = counter_names()
        bcc = bccenv.load_bcc()
        bccenv.ensure_kernel_headers()
        try:
            self._bpf: Any = bcc.BPF(text=program_source().encode(),
                                     cflags=[f"-DJR_MAX_QUEUES={max_queues}",
                                             f"-DJR_MAX_ADDRS={MAX_ADDRS}"])
            self._fn: Any = self._bpf.load_func(PROG_NAME.encode(), bcc.BPF.XDP)
        except Exception as exc:  # BCC raises bare Exception for compile and load errors
            raise EnvironmentProblem(
                f"BCC could not compile/load the steering program: {exc} "
                "(check `joyride selfcheck`)") from exc
        self._attached: xdp.AttachedProgram | None = None
        # BCC wants map names as bytes.
        self._tables: dict[str, Any] = {
            name: self._bpf[name.encode()]
            for name in ("tcp_ports", "udp_ports", "config", "counters", "xsks",
                         "local_addrs", "local_addrs6")
        }

    # -- identity -------------------------------------------------------------------------

    @property
    def prog_fd(self) -> int:
        return int(self._fn.fd)

    @property
    def prog_id(self) -> int:
        """The kernel id of this program (as ``bpftool prog`` shows it)."""
        if self._attached is not None:
            return self._attached.prog_id
        raise JoyrideError("the steering program is not attached")

    @property
    def map_ids(self) -> tuple[int, ...]:
        return self._attached.map_ids if self._attached is not None else ()

    # -- attach / detach ------------------------------------------------------------------

    def attach(self, mode: Mode = "auto", *, force: bool = False) -> str:
        """Attach to the interface; return the mode used (native or skb).

        A program already on the interface is replaced only if it is Joyride's (a crash
        leftover) or ``force`` is set; ``auto`` tries native XDP and falls back to skb
        (generic) mode with a notice.
        """
        current = xdp.query(self.ifindex)
        if current is not None and current.name != PROG_NAME and not force:
            shown = f"{current.name!r}" if current.name else "a program"
            raise ForeignProgram(
                f"{self.ifname} runs XDP {shown} (id {current.prog_id}, {current.mode} mode) "
                "that Joyride did not attach: remove it "
                f"(`ip link set dev {self.ifname} xdp off`) or pass --force to replace it")
        if current is not None:
            log.info("replacing XDP program id %d (%s) on %s", current.prog_id,
                     current.name or "?", self.ifname)
        if mode == "auto":
            try:
                xdp.attach(self.ifindex, self.prog_fd, "native", replace=current)
                used = "native"
            except xdp.XdpError as exc:
                notice = (f"native XDP unavailable on {self.ifname} ({exc}); "
                          "attached in skb (generic) mode, which is slower")
                self.notices.append(notice)
                log.warning("%s", notice)
                # The failed attempt may already have taken a differently-moded program
                # off: look again rather than trusting `current`.
                xdp.attach(self.ifindex, self.prog_fd, "skb",
                           replace=xdp.query(self.ifindex))
                used = "skb"
        else:
            xdp.attach(self.ifindex, self.prog_fd, mode, replace=current)
            used = mode
        self.mode = used
        attached = xdp.query(self.ifindex)
        if attached is None or attached.name != PROG_NAME:
            raise xdp.XdpError(f"the steering program did not stay attached to {self.ifname}")
        self._attached = attached
        return used

    def detach(self) -> None:
        """Take this program off the interface (no-op if it is not there any more)."""
        if self._attached is None:
            return
        with contextlib.suppress(xdp.InterfaceNotFound):
            xdp.detach(self.ifindex, self._attached)
        self._attached = None
        self.mode = None

    def close(self, *, detach: bool = True) -> None:
        """Detach (unless told not to: a process without the privilege leaves that to
        its helper) and release the program and maps held by this process."""
        try:
            if detach:
                self.detach()
        finally:
            self._bpf.cleanup()

    def __enter__(self) -> Steering:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- ports ------------------------------------------------------------------------------

    def add_ports(self, ports: Iterable[int], proto: Proto = "tcp", kind: int = LISTEN) -> None:
        """Steer ``ports``; takes effect for the next frame, no reload."""
        owned = self._ports[proto]
        wanted = PortSet(ports)
        clash = [p for p in wanted if owned.get(p, kind) != kind]
        if clash:
            raise PortConflict(
                f"{proto} port(s) {PortSet(clash)} already steered as "
                f"{KIND_NAMES.get(owned[clash[0]], '?')}")
        if proto == "tcp":
            self._kernel_conns |= kernel_sockets.connected_ports(wanted)
        for port in wanted:
            owned[port] = kind
            self._write_port(proto, port)

    def set_serving(self, port: int, families: Collection[int], proto: Proto = "tcp"
                    ) -> None:
        """Note the IP versions (4, 6) Joyride applications listen on ``port`` for
        (``SERVING``, ``SERVING6``; empty: none). Kept for a port not steered (yet): it
        applies when the port is added."""
        serving = bool(families)
        if serving:
            self._serving[proto][port] = frozenset(families)
        else:
            self._serving[proto].pop(port, None)
        if proto == "tcp" and serving:
            # The kernel's listener may have taken connections until now: looked up
            # (flag first, then the check) until none is left.
            self._kernel_conns.add(port)
        if port in self._ports[proto]:
            self._write_port(proto, port)
        if proto == "tcp" and serving:
            self.refresh_kernel_connections()

    def refresh_kernel_connections(self) -> None:
        """Drop ``KERNEL_CONNS`` from ports where the kernel has no connection left
        (called every second by the engine's owner while any port has the flag)."""
        if not self._kernel_conns:
            return
        # Only where the flag changes anything: other steered ports are looked up on
        # every frame, and a busy kernel server there would keep this reading its table.
        watched = {p for p in self._kernel_conns if self._lookup_optional(p)}
        still = kernel_sockets.connected_ports(watched)
        gone, self._kernel_conns = self._kernel_conns - still, still
        for port in gone:
            if port in self._ports["tcp"]:
                self._write_port("tcp", port)

    def _lookup_optional(self, port: int) -> bool:
        """Does the program skip the kernel-socket lookup for TCP ``port`` when the
        port has no KERNEL_CONNS (bpf/steer.c: served or ephemeral)?"""
        return port in self._serving["tcp"] or self._ports["tcp"].get(port) == EPHEMERAL

    def _write_port(self, proto: Proto, port: int) -> None:
        value = self._ports[proto].get(port, 0)
        families = self._serving[proto].get(port, frozenset())
        if value and 4 in families:
            value |= SERVING
        if value and 6 in families:
            value |= SERVING6
        if value and proto == "tcp" and port in self._kernel_conns:
            value |= KERNEL_CONNS
        self._tables[f"{proto}_ports"][ctypes.c_int(port)] = ctypes.c_uint8(value)

    def remove_ports(self, ports: Iterable[int], proto: Proto = "tcp") -> None:
        owned = self._ports[proto]
        table = self._tables[f"{proto}_ports"]
        for port in PortSet(ports):
            table[ctypes.c_int(port)] = ctypes.c_uint8(0)  # array maps cannot delete
            owned.pop(port, None)

    def ports(self, proto: Proto = "tcp", kind: int | None = None) -> PortSet:
        return PortSet(p for p, k in self._ports[proto].items() if kind is None or k == kind)

    def set_vlan(self, vid: int) -> None:
        """Steer frames of VLAN ``vid`` (1..4094) instead of untagged ones (0)."""
        if not 0 <= vid <= VLAN_MAX:
            raise PortConflict(f"VLAN id {vid} out of range 0..{VLAN_MAX}")
        self._tables["config"][ctypes.c_int(_CFG_VLAN)] = ctypes.c_uint32(vid)

    # -- addresses -------------------------------------------------------------------------

    def set_addresses(self, addresses: Iterable[bytes] | None) -> None:
        """Steer only frames whose destination is one of ``addresses`` (the interface's
        own addresses: IPv4's 4 bytes, IPv6's 16); replaces the previous set. ``None``
        (the state after loading) steers any destination on a steered port.

        A steered port is not enough: traffic this host routes for others, or sends
        to an address the stack does not serve, must stay the kernel's (counted as
        ``pass_addr``). An empty set steers nothing. IPv6 frames are looked at only
        with ``set_ipv6(True)``.
        """
        config = self._tables["config"]
        if addresses is None:
            config[ctypes.c_int(_CFG_MATCH_ADDR)] = ctypes.c_uint32(0)
            self._tables["local_addrs"].clear()
            self._tables["local_addrs6"].clear()
            self._addresses = None
            return
        wanted = frozenset(bytes(a) for a in addresses)
        bad = [a for a in wanted if len(a) not in (4, 16)]
        if bad:
            raise JoyrideError(f"not IPv4 or IPv6 addresses: {bad!r}")
        for family in (4, 16):
            if sum(len(a) == family for a in wanted) > MAX_ADDRS:
                raise JoyrideError(f"more than {MAX_ADDRS} IPv{4 if family == 4 else 6} "
                                   f"addresses on {self.ifname}: at most {MAX_ADDRS} can "
                                   "be steered")
        old = self._addresses or frozenset()
        for addr in wanted - old:
            self._addr_table(addr)[self._addr_key(addr)] = ctypes.c_uint8(1)
        for addr in old - wanted:
            with contextlib.suppress(KeyError):
                del self._addr_table(addr)[self._addr_key(addr)]
        self._addresses = wanted
        config[ctypes.c_int(_CFG_MATCH_ADDR)] = ctypes.c_uint32(1)

    def _addr_table(self, addr: bytes) -> Any:
        return self._tables["local_addrs" if len(addr) == 4 else "local_addrs6"]

    def _addr_key(self, addr: bytes) -> Any:
        """The map key of ``addr``: the header's bytes read as native words."""
        if len(addr) == 4:
            return ctypes.c_uint32(int.from_bytes(addr, sys.byteorder))
        key = self._tables["local_addrs6"].Key()
        ctypes.memmove(ctypes.addressof(key), addr, 16)
        return key

    def set_ipv6(self, enabled: bool) -> None:
        """Steer IPv6 TCP on the steered ports too (off after loading: every IPv6 frame
        is the kernel's, as before issue 18; on once the stack serves IPv6)."""
        self._tables["config"][ctypes.c_int(_CFG_IPV6)] = ctypes.c_uint32(int(enabled))

    @property
    def addresses(self) -> frozenset[bytes] | None:
        """The destinations steered (None: any, ``set_addresses`` was never called)."""
        return self._addresses

    # -- sockets ---------------------------------------------------------------------------

    def register_socket(self, queue: int, fd: int) -> None:
        """Point rx queue ``queue`` at the AF_XDP socket ``fd`` (bound to that queue)."""
        if not 0 <= queue < self.max_queues:
            raise JoyrideError(f"rx queue {queue} beyond the XSKMAP size {self.max_queues}")
        try:
            self._tables["xsks"][ctypes.c_int(queue)] = ctypes.c_int(fd)
        except Exception as exc:  # BCC raises bare Exception on a failed map update
            raise EnvironmentProblem(
                f"registering the AF_XDP socket of queue {queue}: {exc}") from exc
        self._sockets[queue] = fd

    def unregister_socket(self, queue: int) -> None:
        if self._sockets.pop(queue, None) is None:
            return
        with contextlib.suppress(KeyError):  # already gone: its socket was closed
            del self._tables["xsks"][ctypes.c_int(queue)]

    @property
    def queues(self) -> tuple[int, ...]:
        return tuple(sorted(self._sockets))

    def test_run(self, frame: bytes, rx_queue: int = 0) -> int:
        """Run the program on ``frame`` without a network; return the XDP action."""
        return xdp.test_run(self.prog_fd, frame, ifindex=self.ifindex, rx_queue=rx_queue)

    # -- counters --------------------------------------------------------------------------

    def counters(self) -> SteerCounters:
        table = self._tables["counters"]
        per_cpu = [list(table[ctypes.c_int(i)]) for i in range(len(self._counter_names))]
        return SteerCounters.from_per_cpu(self._counter_names, per_cpu)
