"""The service's counters in Prometheus's text exposition format (version 0.0.4).

``render`` turns one ``stats`` reply and one ``sockets`` reply of the control socket
into metric families named by Prometheus's conventions: a ``joyride_`` prefix, base
units (seconds, bytes), ``_total`` on counters, a label for what varies (reason, queue,
state) rather than a name per value. The counters are the service's own (``joyride
stats`` shows the same ones); nothing is counted twice or anew here.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from joyride.steer.counters import group_of

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
_UNSAFE: Final = re.compile(r"[^a-zA-Z0-9_]")

Labels = tuple[tuple[str, str], ...]


@dataclass
class Family:
    name: str
    kind: str  # counter | gauge
    help: str
    samples: list[tuple[Labels, float]] = field(default_factory=list)


class Exposition:
    """Families in the order first seen; each family's samples together (the format
    wants a family in one block)."""

    def __init__(self) -> None:
        self.families: dict[str, Family] = {}

    def add(self, name: str, kind: str, help_text: str, value: float,
            **labels: object) -> None:
        family = self.families.get(name)
        if family is None:
            family = self.families[name] = Family(name, kind, help_text)
        family.samples.append((tuple((k, str(v)) for k, v in labels.items()), value))

    def text(self) -> str:
        out: list[str] = []
        for f in self.families.values():
            out.append(f"# HELP {f.name} {_escape_help(f.help)}")
            out.append(f"# TYPE {f.name} {f.kind}")
            sample_name = f.name
            for labels, value in f.samples:
                body = ",".join(f'{k}="{_escape_label(v)}"' for k, v in labels)
                out.append(f"{sample_name}{{{body}}} {_number(value)}" if body
                           else f"{sample_name} {_number(value)}")
        return "\n".join(out) + "\n"


def render(stats: Mapping[str, Any], sockets: Iterable[Mapping[str, Any]]) -> str:
    """One scrape: ``stats`` and ``sockets`` replies of one service."""
    e = Exposition()
    iface = str(stats.get("ifname", ""))
    e.add("joyride_up", "gauge", "1 while the Joyride service answers", 1, interface=iface)
    _service(e, stats, iface)
    for name, value in stats.get("steer", {}).items():
        e.add("joyride_steer_packets_total", "counter",
              "Frames the XDP steering program decided on, by reason", value,
              interface=iface, group=group_of(name), reason=name)
    for queue, qstats in stats.get("queues", {}).items():
        for key, value in qstats.items():
            e.add(f"joyride_queue_{_name(key)}_total", "counter",
                  f"Per rx queue: {key.replace('_', ' ')}", value, interface=iface,
                  queue=queue)
    datapath = stats.get("datapath") or {}
    _counters(e, iface, "engine", "The engine's (Python's) frame handling",
              datapath.get("engine", {}))
    _counters(e, iface, "service", "The service's connections and applications",
              datapath.get("service", {}))
    _counters(e, iface, "tcp", "TCP, every connection and listener since the service "
                               "started", datapath.get("tcp_total", {}))
    plane = datapath.get("dataplane") or {}
    for key, value in plane.items():
        if key == "flows":
            e.add("joyride_dataplane_flows", "gauge",
                  "Connections the C data plane runs now", value, interface=iface)
        elif key == "workers":
            for index, worker in enumerate(value):
                e.add("joyride_dataplane_worker_flows", "gauge",
                      "Connections each data-plane worker runs now", worker["flows"],
                      interface=iface, worker=str(index))
                for name in ("rx_frames", "rx_fast", "declined", "runs", "asks"):
                    e.add(f"joyride_dataplane_worker_{name}_total", "counter",
                          f"C data plane, per worker: {name.replace('_', ' ')}",
                          worker[name], interface=iface, worker=str(index))
        elif key.startswith("handback_"):
            e.add("joyride_dataplane_handbacks_total", "counter",
                  "Flows the C data plane gave back to Python, by reason", value,
                  interface=iface, reason=key.removeprefix("handback_"))
        else:
            e.add(f"joyride_dataplane_{_name(key)}_total", "counter",
                  f"C data plane: {key.replace('_', ' ')}", value, interface=iface)
    _gauges(e, iface, datapath)
    _sockets(e, iface, sockets)
    return e.text()


def _service(e: Exposition, stats: Mapping[str, Any], iface: str) -> None:
    cpu = stats.get("cpu") or {}
    for mode in ("user", "system"):
        if mode in cpu:
            e.add("joyride_service_cpu_seconds_total", "counter",
                  "CPU time the service used, every thread", cpu[mode], interface=iface,
                  mode=mode)
    memory = stats.get("memory") or {}
    if "VmRSS_kB" in memory:
        e.add("joyride_service_resident_memory_bytes", "gauge",
              "The service's resident memory", memory["VmRSS_kB"] * 1024, interface=iface)
    if "uptime" in stats:
        e.add("joyride_service_uptime_seconds", "gauge", "Seconds since the service started",
              stats["uptime"], interface=iface)


def _counters(e: Exposition, iface: str, part: str, what: str,
              counters: Mapping[str, int]) -> None:
    """``drop_*`` as one family with a reason label; the rest a family each."""
    for key, value in sorted(counters.items()):
        if key.startswith("drop_"):
            e.add(f"joyride_{part}_drops_total", "counter", f"{what}: drops, by reason",
                  value, interface=iface, reason=key.removeprefix("drop_"))
        else:
            e.add(f"joyride_{part}_{_name(key)}_total", "counter",
                  f"{what}: {key.replace('_', ' ')}", value, interface=iface)


def _gauges(e: Exposition, iface: str, datapath: Mapping[str, Any]) -> None:
    for key, help_text in (
            ("connections", "TCP connections the engine holds (any state, either owner)"),
            ("pumps", "Connections with an application channel"),
            ("connecting", "Outgoing connections in their handshake"),
            ("ready_pumps", "Application channels with work queued for the next step"),
            ("selector_fds", "Descriptors the service loop waits on")):
        if key in datapath:
            e.add(f"joyride_{key}", "gauge", help_text, datapath[key], interface=iface)
    if "pump_buffered_bytes" in datapath:
        e.add("joyride_pump_buffered_bytes", "gauge",
              "Bytes held between TCP and applications' channels",
              datapath["pump_buffered_bytes"], interface=iface)


def _sockets(e: Exposition, iface: str, sockets: Iterable[Mapping[str, Any]]) -> None:
    by_state: dict[tuple[str, str], int] = {}
    queued = {"recv": 0, "send": 0}
    for row in sockets:
        if row["state"] == "LISTEN":
            port = str(row["local"]).rpartition(":")[2]
            e.add("joyride_listen_queue_length", "gauge",
                  "Connections waiting for the application to accept them", row["recv_q"],
                  interface=iface, port=port)
            continue
        key = (str(row["state"]), str(row.get("owner", "python")))
        by_state[key] = by_state.get(key, 0) + 1
        queued["recv"] += int(row["recv_q"])
        queued["send"] += int(row["send_q"])
    for (state, owner), n in sorted(by_state.items()):
        e.add("joyride_tcp_connections", "gauge",
              "TCP connections by state (ss's names) and by who runs them (c or python)",
              n, interface=iface, state=state, owner=owner)
    for way, n in queued.items():
        e.add(f"joyride_tcp_{way}_queue_bytes", "gauge",
              f"Bytes in every connection's {way} queue (ss's {way.title()}-Q, summed)", n,
              interface=iface)


def _name(key: str) -> str:
    return _UNSAFE.sub("_", key).lower()


def _escape_label(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _escape_help(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n")


def _number(value: float) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))
