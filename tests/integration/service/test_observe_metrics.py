"""``joyride metrics``: a scrape of the exporter parses as Prometheus text, and its
counters rise with traffic through the service."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families
from service_helpers import JOYRIDE, app_path, cli, served_connection, wait_for

from joyride.testbed import Testbed

pytestmark = pytest.mark.integration

PORT = 8092
METRICS_PORT = 9477  # not steered: the kernel serves it
PAYLOAD = os.urandom(512 * 1024)

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(bed: Testbed) -> Samples:
    """From the peer's namespace, over the veth, as Prometheus would."""
    url = f"http://{bed.joy.ip}:{METRICS_PORT}/metrics"
    with bed.peer.inside(), urllib.request.urlopen(url, timeout=10) as reply:
        assert reply.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = reply.read().decode()
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, lab), v in samples.items() if n == name and want <= lab)


def test_metrics_parse_and_counters_rise(service_bed: Testbed) -> None:
    bed = service_bed
    exporter = bed.joy.popen(JOYRIDE, "metrics", bed.joy.ifname, "--listen",
                             f"{bed.joy.ip}:{METRICS_PORT}", stderr=subprocess.PIPE)
    try:
        def answers() -> bool:
            try:
                return bool(scrape(bed))
            except OSError:  # not listening yet
                return False

        wait_for(answers, 15, "the exporter to answer")
        before = scrape(bed)
        assert total(before, "joyride_up") == 1
        with served_connection(bed, PORT) as (joy, peer):
            peer.sendall(PAYLOAD)
            got = 0
            while got < len(PAYLOAD):
                got += len(joy.recv(1 << 16))
            during = scrape(bed)
            assert total(during, "joyride_tcp_connections", state="ESTAB") >= 1
        after = scrape(bed)
        for name, labels in (("joyride_steer_packets_total", {"reason": "steered_tcp"}),
                             ("joyride_queue_rx_frames_total", {}),
                             ("joyride_service_accepted_total", {}),
                             ("joyride_tcp_segments_received_total", {}),
                             ("joyride_tcp_segments_sent_total", {})):
            assert total(after, name, **labels) > total(before, name, **labels), name
        assert total(after, "joyride_service_cpu_seconds_total") > 0
    finally:
        exporter.terminate()
        exporter.wait(10)
        if exporter.stderr is not None:
            exporter.stderr.close()


def test_metrics_without_a_service_report_down(service_bed: Testbed) -> None:
    out = cli(service_bed.peer, "metrics", service_bed.peer.ifname, "--once")
    [family] = [f for f in text_string_to_metric_families(out.stdout) if f.name == "joyride_up"]
    assert family.samples[0].value == 0


def test_tcp_totals_count_the_connections_c_runs_from_birth(service_bed: Testbed) -> None:
    """A connection the C data plane opened and closed itself never reaches Python's
    engine: its counters are in ``tcp_total`` all the same (monitoring's counters must
    count every connection), while it lives and after it closes in C."""
    from joyride.service import appclient

    bed = service_bed

    def totals() -> tuple[dict[str, int], dict[str, int]]:
        doc = json.loads(cli(bed.joy, "stats", bed.joy.ifname, "--json").stdout)["datapath"]
        return doc["tcp_total"], doc["dataplane"]

    with bed.joy.inside():
        lsock = appclient.listen(PORT, path=app_path(bed.joy))
    with lsock:
        lsock.settimeout(30)
        # The first delivery verifies the listener (SO_PEERCRED); C opens the rest.
        with bed.peer.inside():
            first = socket.create_connection((bed.joy.ip, PORT), timeout=30)
        first.close()
        lsock.accept()[0].close()
        wait_for(lambda: totals()[1].get("born_live", 0) == 0, 15, "the first to close")
        tcp0, plane0 = totals()
        with bed.peer.inside():
            peer = socket.create_connection((bed.joy.ip, PORT), timeout=30)
        with peer, lsock.accept()[0] as joy:
            joy.settimeout(30)
            peer.sendall(PAYLOAD)
            got = 0
            while got < len(PAYLOAD):
                got += len(joy.recv(1 << 16))
            joy.sendall(b"done")
            assert peer.recv(4) == b"done"
        wait_for(lambda: totals()[1]["born_live"] == 0, 15, "the connection to end in C")
    tcp1, plane1 = totals()
    assert plane1["established"] == plane0["established"] + 1  # born in C
    assert plane1["declined"] == plane0["declined"]  # and never Python's
    assert tcp1["segments_received"] - tcp0.get("segments_received", 0) >= len(PAYLOAD) // 1460
    assert tcp1["bytes_acked"] - tcp0.get("bytes_acked", 0) >= len(b"done")
