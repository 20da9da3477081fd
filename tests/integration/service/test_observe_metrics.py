"""``joyride metrics``: a scrape of the exporter parses as Prometheus text, and its
counters rise with traffic through the service."""

from __future__ import annotations

import os
import subprocess
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families
from service_helpers import JOYRIDE, cli, served_connection, wait_for

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
