"""joyride metrics' text exposition: Prometheus's own parser reads it, each family once,
labels escaped, counters named by the conventions."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from joyride.cli.metrics import parse_listen
from joyride.errors import JoyrideError
from joyride.service import exposition

STATS = {
    "ifname": "eth0", "mode": "native", "uptime": 12.5,
    "steer": {"steered_tcp": 10, "pass_not_ipv4": 3, "err_ip_trunc": 0},
    "queues": {"0": {"rx_frames": 7, "xsk_rx_dropped": 1}, "1": {"rx_frames": 3}},
    "datapath": {
        "engine": {"rx_segments": 5, "drop_not_local": 2},
        "service": {"accepted": 4, "connections_closed": 3},
        "tcp_total": {"segments_received": 40, "retransmitted_segments": 2,
                      "drop_paws": 1, "reset_received": 1},
        "dataplane": {"rx_fast": 30, "handback_rto": 2, "handback_segment": 1, "flows": 1},
        "connections": 2, "pumps": 1, "pump_buffered_bytes": 100, "connecting": 0,
    },
    "memory": {"VmRSS_kB": 2048},
    "cpu": {"user": 1.25, "system": 0.5},
}
SOCKETS = [
    {"state": "LISTEN", "local": "0.0.0.0:80", "peer": "0.0.0.0:*", "recv_q": 2,
     "send_q": 128, "owner": "python"},
    {"state": "ESTAB", "local": "10.0.0.1:80", "peer": "10.0.0.2:5000", "recv_q": 5,
     "send_q": 7, "owner": "c"},
    {"state": "ESTAB", "local": "10.0.0.1:80", "peer": "10.0.0.2:5001", "recv_q": 0,
     "send_q": 1, "owner": "python"},
]


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def test_render_parses_and_names_by_convention() -> None:
    text = exposition.render(STATS, SOCKETS)
    got = samples(text)
    iface = ("interface", "eth0")

    def value(name: str, **labels: str) -> float:
        return got[(name, frozenset({iface, *labels.items()}))]

    assert value("joyride_up") == 1
    assert value("joyride_steer_packets_total", group="steered", reason="steered_tcp") == 10
    assert value("joyride_steer_packets_total", group="pass", reason="pass_not_ipv4") == 3
    assert value("joyride_queue_rx_frames_total", queue="1") == 3
    assert value("joyride_engine_drops_total", reason="not_local") == 2
    assert value("joyride_tcp_segments_received_total") == 40
    assert value("joyride_tcp_retransmitted_segments_total") == 2
    assert value("joyride_tcp_drops_total", reason="paws") == 1
    assert value("joyride_dataplane_handbacks_total", reason="rto") == 2
    assert value("joyride_dataplane_flows") == 1
    assert value("joyride_service_cpu_seconds_total", mode="user") == 1.25
    assert value("joyride_service_resident_memory_bytes") == 2048 * 1024
    assert value("joyride_tcp_connections", state="ESTAB", owner="c") == 1
    assert value("joyride_tcp_recv_queue_bytes") == 5
    assert value("joyride_tcp_send_queue_bytes") == 8
    assert value("joyride_listen_queue_length", port="80") == 2
    # Each family's HELP/TYPE once, its samples together.
    types = [line for line in text.splitlines() if line.startswith("# TYPE ")]
    assert len(types) == len(set(types))


def test_labels_are_escaped() -> None:
    e = exposition.Exposition()
    e.add("joyride_x", "gauge", "a\\b", 1.5, path='a"b\\c\nd')
    [family] = text_string_to_metric_families(e.text())
    assert family.samples[0].labels == {"path": 'a"b\\c\nd'}
    assert family.samples[0].value == 1.5


@pytest.mark.parametrize(("text", "want"), [("127.0.0.1:9477", ("127.0.0.1", 9477)),
                                            (":9477", ("0.0.0.0", 9477)),
                                            ("[::1]:80", ("::1", 80))])
def test_parse_listen(text: str, want: tuple[str, int]) -> None:
    assert parse_listen(text) == want


@pytest.mark.parametrize("text", ["9477", "host:", "host:0", "host:70000"])
def test_parse_listen_refuses(text: str) -> None:
    with pytest.raises(JoyrideError):
        parse_listen(text)
