"""``joyride ss``'s pieces without privileges: the service's socket table over an
in-memory wire (test_service_datapath's), and the CLI's filters and layout."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from test_service_datapath import IP_SVC, PORT, Wire, listen, wire  # noqa: F401 (fixture)

from joyride.cli import ss
from joyride.errors import JoyrideError
from joyride.service import sockettable


def test_table_lists_listener_and_connection_with_internals(wire: Wire) -> None:  # noqa: F811
    lsock = listen(wire)
    conn = wire.peer.connect(IP_SVC, PORT)
    wire.spin(lambda: wire.dp.counters["delivered"] == 1)
    app, _ = lsock.accept()
    app.sendall(b"x" * 5000)
    got = bytearray()
    wire.spin(lambda: len(got.__iadd__(conn.recv())) >= 5000)

    def acked() -> list[dict[str, Any]] | None:
        rows: list[dict[str, Any]] = sockettable.table(wire.dp, info=True)["sockets"]
        return rows if any(r.get("info", {}).get("bytes_acked", 0) >= 5000
                           for r in rows) else None

    wire.spin(acked)  # the peer's delayed ACK
    rows = acked()
    assert rows is not None
    listener = [r for r in rows if r["state"] == "LISTEN"]
    assert listener and listener[0]["local"] == f"0.0.0.0:{PORT}"
    assert listener[0]["pid"] == os.getpid()
    [row] = [r for r in rows if r["state"] == "ESTAB"]
    assert row["local"] == f"10.9.0.1:{PORT}"
    assert row["peer"] == f"10.9.0.2:{conn.local_port}"
    assert row["uid"] == os.getuid() and row["pid"] == os.getpid()
    info = row["info"]
    assert info["bytes_acked"] >= 5000 and info["cwnd"] > 0 and info["mss"] > 0
    assert info["delivery_rate"] is None
    # The text layout carries the same figures.
    lines = ss.format_table([row], info=True, processes=False)
    assert lines[0].startswith("State") and "ESTAB" in lines[1]
    assert f"bytes_acked:{info['bytes_acked']}" in lines[2] and "joyride:python" in lines[2]
    app.close()
    lsock.close()


def test_state_names_and_groups() -> None:
    assert ss.wanted_states(["established"], listening=False, everything=False) == {"ESTAB"}
    assert ss.wanted_states(["SYN_RECEIVED", "time-wait"], listening=False,
                            everything=False) == {"SYN-RECV", "TIME-WAIT"}
    assert ss.wanted_states([], listening=True, everything=False) == {"LISTEN"}
    connected = ss.wanted_states([], listening=False, everything=False)
    assert "LISTEN" not in connected and "ESTAB" in connected
    assert "LISTEN" in ss.wanted_states([], listening=False, everything=True)
    with pytest.raises(JoyrideError, match="unknown state"):
        ss.wanted_states(["sideways"], listening=False, everything=False)


def test_select_by_state_and_port() -> None:
    rows = [{"state": "ESTAB", "local": "10.0.0.1:80", "peer": "10.0.0.2:5000"},
            {"state": "LISTEN", "local": "0.0.0.0:80", "peer": "0.0.0.0:*"},
            {"state": "ESTAB", "local": "10.0.0.1:81", "peer": "10.0.0.2:5001"}]
    assert ss.select(rows, frozenset({"ESTAB"}), {80}) == rows[:1]
    assert ss.select(rows, frozenset({"ESTAB"}), {5001}) == rows[2:]
    assert ss.select(rows, frozenset({"ESTAB", "LISTEN"}), set()) == rows


def test_info_line_and_process_column(tmp_path: Path) -> None:
    (tmp_path / "42").mkdir()
    (tmp_path / "42" / "comm").write_text("nginx\n")
    assert ss.program_name(42, tmp_path) == "nginx"
    assert ss.program_name(43, tmp_path) is None
    row = {"state": "ESTAB", "recv_q": 0, "send_q": 10, "local": "10.0.0.1:80",
           "peer": "10.0.0.2:5000", "owner": "c", "pid": 42, "program": "nginx",
           "info": {"cc": "cubic", "wscale": [7, 7], "rto_ms": 204.0, "rtt_ms": 0.125,
                    "rttvar_ms": 0.0625, "ato_ms": 40.0, "mss": 1448, "pmtu": 1500,
                    "rcvmss": 536, "cwnd": 10, "ssthresh": None, "bytes_sent": 10,
                    "bytes_acked": 1, "bytes_received": 0, "segs_out": 3, "segs_in": 2,
                    "delivery_rate": None, "unacked": 1, "retrans": 2, "rcv_space": 65535,
                    "snd_wnd": 64240, "notsent": 0, "recovering": False,
                    "fast_path_share": 0.5}}
    lines = ss.format_table([row], info=True, processes=True)
    assert lines[0].split()[-1] == "Process"
    assert lines[1].endswith('users:(("nginx",pid=42))')
    assert lines[2] == ("\t cubic wscale:7,7 rto:204 rtt:0.125/0.062 ato:40 mss:1448 "
                        "pmtu:1500 rcvmss:536 cwnd:10 bytes_sent:10 bytes_acked:1 "
                        "bytes_received:0 segs_out:3 segs_in:2 unacked:1 retrans:0/2 "
                        "rcv_space:65535 snd_wnd:64240 fastpath:50% joyride:c")


def test_stats_text_shows_recovery_and_watch_deltas() -> None:
    from joyride.cli import stats

    lines = stats.tcp_lines({"retransmitted_segments": 3, "undo_rto": 1})
    assert lines == ["  tcp: retransmitted_segments 3", "  recovery: undo_rto 1"]
    assert stats.tcp_lines({}) == []
    before = {"steer": {"a": 1}, "totals": {"t": 1}, "queues": {"0": {"rx": 1}},
              "datapath": {"tcp_total": {"rto_expired": 2}}}
    now = {"steer": {"a": 4}, "totals": {"t": 2}, "queues": {"0": {"rx": 5}},
           "datapath": {"tcp_total": {"rto_expired": 5}, "connections": 1}}
    d = stats._delta(now, before)
    assert d["steer"] == {"a": 3} and d["queues"] == {"0": {"rx": 4}}
    assert d["datapath"]["tcp_total"] == {"rto_expired": 3}
    assert d["datapath"]["connections"] == 1
