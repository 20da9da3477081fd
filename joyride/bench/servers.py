"""The servers each comparison runs, started inside a bed's Joyride-side namespace.

Every server runs twice with the same binary and configuration: once on the kernel, on
a port Joyride does not steer, and once on Joyride, on a steered port — under
``joyride run`` (service mode) or, for the Python server, through ``joyride.embed``
(embedded mode). Processes are started with ``Node.popen``, so the test bed ends them
by pid at teardown whatever happens; ``Endpoint.stop`` ends them earlier.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from joyride.bench.pyserver import BODY
from joyride.processes import terminate
from joyride.testbed import Node, Testbed

JOYRIDE: Final = str(Path(sys.executable).with_name("joyride"))
# A response big enough to be bulk (45 segments at MTU 1500): nginx_64k.
BODY_64K: Final = bytes(range(256)) * 256
PY: Final = sys.executable

# Ports: kernel servers on 91xx (never steered); service mode on 81xx (steered by
# `joyride attach`); embedded mode on 82xx (steered by the embedding process).
KERNEL_BASE: Final = 9100
SERVICE_BASE: Final = 8100
EMBED_BASE: Final = 8200
OFFSETS: Final = {"sockperf": 1, "iperf3": 2, "nginx": 3, "py_rr": 4, "py_http": 5,
                  "py_sink": 6, "py_bulk": 7}
SERVICE_PORTS: Final = f"{SERVICE_BASE + 1}-{SERVICE_BASE + len(OFFSETS)}"
NATIVE_SERVERS: Final = ("sockperf", "iperf3", "nginx")

MODES: Final = ("service", "embedded")


class ServerError(RuntimeError):
    """A server did not come up."""


def port_of(mode: str, name: str) -> int:
    base = {"kernel": KERNEL_BASE, "service": SERVICE_BASE, "embedded": EMBED_BASE}[mode]
    return base + OFFSETS[name]


@dataclass
class Endpoint:
    """One server process tree reachable at ``ports`` (kind -> port) in ``mode``."""

    name: str  # "sockperf", "iperf3", "nginx" or "python"
    mode: str  # "kernel", "service" or "embedded"
    ports: dict[str, int]
    procs: list[subprocess.Popen[Any]] = field(default_factory=list)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def alive(self) -> bool:
        return all(p.poll() is None for p in self.procs)

    def stop(self, timeout: float = 5.0) -> None:
        terminate(self.procs, timeout)


def nginx_conf(workdir: Path, port: int, *, workers: int = 1, reuseport: bool = True,
               ipv6: bool = False, access_log: bool = False, locations: str = "") -> Path:
    """nginx with ``workers`` workers (1: with 2 vCPUs, one is the client's),
    keep-alive, listening on ``port`` (``reuseport``: one listener per worker; ``ipv6``:
    also on ``[::]``, as Debian's default site, which nginx makes IPV6_V6ONLY) and
    logging each request's peer and local address to ``access.log`` if asked;
    ``locations``: the server block's ``location`` directives (a proxy's)."""
    for sub in ("www", "body", "proxy", "fcgi", "uwsgi", "scgi"):
        (workdir / sub).mkdir(parents=True, exist_ok=True)
    (workdir / "www" / "body").write_bytes(BODY)
    (workdir / "www" / "body64k").write_bytes(BODY_64K)
    options = " reuseport backlog=4096" if reuseport else ""
    listens = f"listen {port}{options};" + (f" listen [::]:{port}{options};" if ipv6 else "")
    log = (f"log_format peer '$remote_addr $server_addr $status';\n"
           f"    access_log {workdir}/access.log peer;") if access_log else "access_log off;"
    conf = workdir / "nginx.conf"
    conf.write_text(f"""
worker_processes {workers};
daemon off;
master_process on;
user root;
pid {workdir}/nginx.pid;
error_log {workdir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    {log}
    sendfile on;
    tcp_nodelay on;
    keepalive_requests 1000000;
    default_type text/plain;
    client_body_temp_path {workdir}/body;
    proxy_temp_path {workdir}/proxy;
    fastcgi_temp_path {workdir}/fcgi;
    uwsgi_temp_path {workdir}/uwsgi;
    scgi_temp_path {workdir}/scgi;
    server {{ {listens} root {workdir}/www; {locations} }}
}}
""")
    return conf


def server_argv(name: str, mode: str, workdir: Path, ifname: str) -> list[str]:
    """The command line of server ``name`` for ``mode`` (before any ``joyride run``)."""
    if name == "sockperf":
        return ["sockperf", "server", "--tcp", "-p", str(port_of(mode, "sockperf"))]
    if name == "iperf3":  # on [::], dual-stack: IPv4 clients and the IPv6 rows' alike
        return ["iperf3", "-s", "-p", str(port_of(mode, "iperf3"))]
    if name == "nginx":  # "listen PORT" and "listen [::]:PORT", as Debian's default site
        conf = nginx_conf(workdir / f"nginx-{mode}", port_of(mode, "nginx"), ipv6=True)
        return ["nginx", "-c", str(conf), "-e", str(conf.parent / "error.log")]
    if name == "python":
        argv = [PY, "-m", "joyride.bench.pyserver",
                "--rr", str(port_of(mode, "py_rr")), "--http", str(port_of(mode, "py_http")),
                "--sink", str(port_of(mode, "py_sink")), "--bulk", str(port_of(mode, "py_bulk"))]
        return [*argv, "--embed", ifname] if mode == "embedded" else argv
    raise ValueError(f"unknown server {name!r}")


def ports_of(name: str, mode: str) -> dict[str, int]:
    if name == "python":
        return {kind: port_of(mode, f"py_{kind}") for kind in ("rr", "http", "sink", "bulk")}
    return {name: port_of(mode, name)}


def start(bed: Testbed, name: str, mode: str, workdir: Path, log: Path,
          extra: tuple[str, ...] = ()) -> Endpoint:
    """Start server ``name`` in ``mode`` on the bed's Joyride side (``extra``: more
    arguments for it); wait until it serves."""
    argv = [*server_argv(name, mode, workdir, bed.joy.ifname), *extra]
    if mode == "service":
        argv = [JOYRIDE, "run", "--iface", bed.joy.ifname, "--", *argv]
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        proc = bed.joy.popen(*argv, stdout=out, stderr=subprocess.STDOUT)
    ep = Endpoint(name, mode, ports_of(name, mode), [proc])
    timeout = 60.0 if mode == "embedded" else 20.0  # embedding compiles the BPF program
    for port in ep.ports.values():
        wait_port(bed.peer, bed.joy.ip, port, timeout, ep, log)
    return ep


def wait_port(peer: Node, ip: str, port: int, timeout: float, ep: Endpoint,
              log: Path) -> None:
    """Until a TCP connect from the peer namespace to ip:port succeeds."""
    deadline = time.monotonic() + timeout
    while True:
        if not ep.alive():
            raise ServerError(f"{ep.name} ({ep.mode}) exited at start: {tail(log)}")
        with peer.inside():
            sock = socket.socket()
        sock.settimeout(1.0)
        try:
            sock.connect((ip, port))
            return
        except OSError:
            if time.monotonic() > deadline:
                raise ServerError(f"{ep.name} ({ep.mode}) not serving on port {port} after "
                                  f"{timeout:.0f} s: {tail(log)}") from None
            time.sleep(0.1)
        finally:
            sock.close()


def tail(log: Path, n: int = 400) -> str:
    try:
        text = log.read_text(errors="replace").strip()
    except OSError:
        return "(no log)"
    return text[-n:].replace("\n", " | ") or "(no output)"


# -- the network service -----------------------------------------------------------------


def joyride_cli(node: Node, *args: str,
                timeout: float = 120.0) -> subprocess.CompletedProcess[bytes]:
    return node.run(JOYRIDE, *args, check=False, timeout=timeout)


def attach(bed: Testbed, ports: str = SERVICE_PORTS, *options: str) -> int:
    """``joyride attach`` on the bed's Joyride side (with ``options``, e.g. ``--workers
    2``); the service's pid.

    Pair with ``detach`` in a ``finally`` (also after a failed attach: it cleans up
    whatever part of the attach happened).
    """
    proc = joyride_cli(bed.joy, "attach", bed.joy.ifname, "--ports", ports, *options)
    if proc.returncode != 0:
        raise ServerError("joyride attach failed: "
                          + (proc.stderr or proc.stdout).decode(errors="replace").strip())
    return service_pid(bed)


def detach(bed: Testbed) -> None:
    joyride_cli(bed.joy, "detach", bed.joy.ifname)


def service_pid(bed: Testbed) -> int:
    proc = joyride_cli(bed.joy, "status", bed.joy.ifname, "--json")
    try:
        return int(json.loads(proc.stdout)[0]["service"]["pid"])
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise ServerError(f"no service pid in `joyride status`: {proc.stdout[:300]!r}") from exc


def service_stats(bed: Testbed) -> dict[str, Any]:
    """``joyride stats --json`` of the bed's Joyride side ({} when unavailable)."""
    proc = joyride_cli(bed.joy, "stats", bed.joy.ifname, "--json", timeout=30)
    try:
        doc = json.loads(proc.stdout)
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}
