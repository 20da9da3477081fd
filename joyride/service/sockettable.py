"""The service's sockets as rows, for ``joyride ss`` (control operation ``sockets``).

One row per listener, connection and TIME-WAIT entry, with what ``ss -tnip`` shows of
a kernel socket: state, addresses, Recv-Q/Send-Q, the owning process and, on request,
the TCP internals. Every figure comes from the connection's one authority: its
``TcpConnection`` while Python runs it, the C data plane's TCB while C does (through
``Datapath.describe``, which ``OP_GETINFO`` uses too), so ``ss`` and ``TCP_INFO`` agree.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from joyride import sockopts
from joyride.service import protocol
from joyride.tcp.connection import TcpConnection
from joyride.tcp.state import TcpState
from joyride.wire.addr import packed, text

if TYPE_CHECKING:
    from joyride.service.datapath import Datapath

#: ``ss``'s names of the states (iproute2's misc/ss.c, sstate_name).
SS_STATE: Final = {
    TcpState.ESTABLISHED: "ESTAB", TcpState.SYN_SENT: "SYN-SENT",
    TcpState.SYN_RECEIVED: "SYN-RECV", TcpState.FIN_WAIT_1: "FIN-WAIT-1",
    TcpState.FIN_WAIT_2: "FIN-WAIT-2", TcpState.TIME_WAIT: "TIME-WAIT",
    TcpState.CLOSED: "UNCONN", TcpState.CLOSE_WAIT: "CLOSE-WAIT",
    TcpState.LAST_ACK: "LAST-ACK", TcpState.LISTEN: "LISTEN", TcpState.CLOSING: "CLOSING",
}
MAX_ROWS: Final = 20000  # rows in one reply (the rest are counted in "omitted")
_CC_NAME: Final = {"newreno": "reno"}  # as Linux names its controllers


def table(datapath: Datapath, *, info: bool = False) -> dict[str, Any]:
    """Every socket of the service: ``{"sockets": [row, ...], "omitted": n}``."""
    rows: list[dict[str, Any]] = []
    total = 0
    for row in _listeners(datapath):
        total += 1
        if len(rows) < MAX_ROWS:
            rows.append(row)
    for conn in list(datapath.engine.connections.values()):
        total += 1
        if len(rows) < MAX_ROWS:
            rows.append(_connection(datapath, conn, info))
    now = datapath.clock()
    for row in _born(datapath, info, now):
        total += 1
        if len(rows) < MAX_ROWS:
            rows.append(row)
    for tw in list(datapath.engine.time_wait.values()):
        total += 1
        if len(rows) < MAX_ROWS:
            rows.append({
                "state": "TIME-WAIT", "tcp_state": "TIME_WAIT",
                "local": _addr(tw.local_ip, tw.local_port),
                "peer": _addr(tw.remote_ip, tw.remote_port), "recv_q": 0, "send_q": 0,
                "owner": "python", "uid": None, "pid": None,
                "timer_ms": max(0, round((tw.expires - now) * 1000)),
            })
    return {"sockets": rows, "omitted": total - len(rows)}


def _listeners(datapath: Datapath) -> list[dict[str, Any]]:
    """One row per address a port is listened on (``0.0.0.0:80`` and ``[::]:80`` for
    nginx's two listeners), as ``ss`` lists the kernel's sockets. The service keeps one
    accept queue per port: each row's Recv-Q is the port's."""
    rows = []
    for port, pl in sorted(datapath.by_port.items()):
        by_address: dict[bytes, list[int]] = {}
        for reg in pl.registrations:
            parsed = protocol.parse_name(reg.name)
            if parsed is not None:
                by_address.setdefault(packed(parsed.local[0]), []).append(parsed.pid)
        for address, pids in (by_address or {bytes(4): []}).items():
            rows.append({
                "state": "LISTEN", "tcp_state": "LISTEN", "local": _addr(address, port),
                "peer": "[::]:*" if len(address) == 16 else "0.0.0.0:*",
                # As Linux reports a listener: Recv-Q the accept queue, Send-Q the backlog.
                "recv_q": pl.listener.accept_queue_len + len(pl.pending),
                "send_q": pl.listener.config.backlog,
                "owner": "python", "uid": pl.uid if pl.uid >= 0 else None,
                "pid": pids[0] if pids else None, "pids": pids,
            })
    return rows


def _connection(datapath: Datapath, conn: TcpConnection, info: bool) -> dict[str, Any]:
    pump = datapath.pumps.get(conn)
    described = datapath.describe(conn, pump)
    in_c = datapath.plane is not None and conn.parked
    row: dict[str, Any] = {
        "state": SS_STATE.get(conn.state, conn.state.name), "tcp_state": conn.state.name,
        "local": _addr(conn.local_ip, conn.local_port),
        "peer": _addr(conn.remote_ip, conn.remote_port),
        "recv_q": described.inq, "send_q": described.outq,
        "owner": "c" if in_c else "python",
        "uid": pump.uid if pump is not None and pump.uid >= 0 else None,
        "pid": pump.pid if pump is not None and pump.pid > 0 else None,
    }
    if info:
        row["info"] = internals(conn, described, datapath.plane.peek(conn) if in_c
                                and datapath.plane is not None else None)
    return row


def _born(datapath: Datapath, info: bool, now: float) -> list[dict[str, Any]]:
    """The connections the C data plane opened itself and still runs: each shown as
    the Python connection its TCB would become (``TcpConnection.from_hot``), built
    for the row only; C keeps the connection."""
    rows: list[dict[str, Any]] = []
    if datapath.plane is None:
        return rows
    for view in datapath.plane.born_flows():
        tcb = view.tcb
        pl = datapath.by_port.get(int(tcb.local_port))
        conn = TcpConnection.from_hot(datapath.born_config(pl), tcb, bytes(view.recv_queue),
                                      bytes(view.send_queue), now)
        row: dict[str, Any] = {
            "state": SS_STATE.get(conn.state, conn.state.name), "tcp_state": conn.state.name,
            "local": _addr(conn.local_ip, conn.local_port),
            "peer": _addr(conn.remote_ip, conn.remote_port),
            "recv_q": view.recv_queue, "send_q": view.send_queue, "owner": "c",
            "uid": pl.uid if pl is not None and pl.uid >= 0 else None, "pid": None,
        }
        if conn.state is TcpState.TIME_WAIT:
            row["timer_ms"] = max(0, round((float(tcb.state_at) - now) * 1000))
        elif info:
            row["info"] = internals(conn, datapath.describe(conn))
        rows.append(row)
    return rows


def internals(conn: TcpConnection, described: sockopts.ConnectionInfo,
              hot: Any = None) -> dict[str, Any]:
    """``ss -i``'s view of one connection. ``hot``: C's TCB while C runs it."""
    ti = sockopts.tcp_info_fields(described.tcp_info)
    counters = conn.counters
    received = counters["segments_received"] + (int(hot.segs_in) if hot is not None else 0)
    # Segments the C data plane took (counted back at each hand-back, plus its
    # current stint).
    fast = counters["dataplane_segments"] + (int(hot.segs_in) if hot is not None else 0)
    name = conn.config.congestion_control.lower()
    ssthresh = ti["snd_ssthresh"]
    return {
        "cc": _CC_NAME.get(name, name),
        "wscale": [ti["wscale"] & 15, ti["wscale"] >> 4],
        "rto_ms": ti["rto"] / 1000, "rtt_ms": ti["rtt"] / 1000,
        "rttvar_ms": ti["rttvar"] / 1000, "ato_ms": ti["ato"] / 1000,
        "mss": ti["snd_mss"], "rcvmss": ti["rcv_mss"], "pmtu": ti["pmtu"],
        "cwnd": ti["snd_cwnd"],
        "ssthresh": None if ssthresh >= sockopts.INFINITE_SSTHRESH else ssthresh,
        "bytes_sent": ti["bytes_sent"], "bytes_acked": ti["bytes_acked"],
        "bytes_received": ti["bytes_received"],
        "segs_out": ti["segs_out"], "segs_in": ti["segs_in"],
        "unacked": ti["unacked"], "retrans": ti["total_retrans"],
        "rto_expired": counters["rto_expired"],
        "fast_retransmits": counters["fast_retransmits"],
        "snd_wnd": ti["snd_wnd"], "rcv_space": ti["rcv_space"],
        "notsent": ti["notsent_bytes"],
        "recovering": ti["ca_state"] != sockopts.TCP_CA_OPEN,
        # The service's TCP does not measure a delivery rate (RFC draft-cheng-iccrg-
        # delivery-rate-estimation); None rather than a made-up figure.
        "delivery_rate": None,
        "fast_path_share": fast / received if received else None,
    }


def _addr(ip: bytes, port: int) -> str:
    """``ss``'s form: an IPv6 address in brackets before its port."""
    return f"[{text(ip)}]:{port}" if len(ip) == 16 else f"{text(ip)}:{port}"
