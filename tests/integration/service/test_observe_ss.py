"""``joyride ss``: the service's listeners and connections, while a kernel client holds
one, with the right ports, state, owner and TCP internals; gone after close."""

from __future__ import annotations

import json
import os
import socket
from typing import Any

import pytest
from service_helpers import app_path, ask_as, cli, wait_for

from joyride.service import appclient
from joyride.testbed import Testbed

pytestmark = pytest.mark.integration

PORT = 8091
PAYLOAD = os.urandom(256 * 1024)


def ss(bed: Testbed, *args: str) -> list[dict[str, Any]]:
    return list(json.loads(cli(bed.joy, "ss", bed.joy.ifname, "--json", *args).stdout))


def exchange(a: socket.socket, b: socket.socket, data: bytes) -> None:
    """``data`` from a to b, read back in full (so both sides have RTT samples)."""
    a.sendall(data)
    got = bytearray()
    while len(got) < len(data):
        chunk = b.recv(1 << 16)
        assert chunk, "connection closed early"
        got += chunk
    assert bytes(got) == data


def test_ss_shows_listener_and_connection_then_forgets_it(service_bed: Testbed) -> None:
    bed = service_bed
    with bed.joy.inside():
        lsock = appclient.listen(PORT, path=app_path(bed.joy))
    with lsock:
        listeners = [r for r in ss(bed, "-l", "-p") if r["local"].endswith(f":{PORT}")]
        assert [r["state"] for r in listeners] == ["LISTEN"]
        assert listeners[0]["pid"] == os.getpid()
        assert listeners[0]["program"]  # /proc/<pid>/comm of this test process

        with bed.peer.inside():
            peer = socket.create_connection((bed.joy.ip, PORT), timeout=30)
        client_port = peer.getsockname()[1]
        lsock.settimeout(30)
        joy, _ = lsock.accept()
        joy.settimeout(30)
        try:
            exchange(peer, joy, PAYLOAD)
            exchange(joy, peer, PAYLOAD)
            rows = [r for r in ss(bed, "-i", "-p", "--port", str(PORT))
                    if r["peer"] == f"{bed.peer.ip}:{client_port}"]
            assert len(rows) == 1, rows
            row = rows[0]
            assert row["state"] == "ESTAB" and row["tcp_state"] == "ESTABLISHED"
            assert row["local"] == f"{bed.joy.ip}:{PORT}"
            assert row["pid"] == os.getpid()
            assert row["owner"] in ("c", "python")
            info = row["info"]
            assert info["cwnd"] > 0 and info["rtt_ms"] > 0 and info["mss"] > 0
            assert info["bytes_received"] >= len(PAYLOAD)
            assert info["bytes_acked"] >= len(PAYLOAD)
            assert info["cc"] in ("cubic", "reno")
            # The text view shows the same socket, ss-style.
            text = cli(bed.joy, "ss", bed.joy.ifname, "-i", "--state", "established",
                       "--port", str(client_port)).stdout
            assert f"{bed.peer.ip}:{client_port}" in text and "cwnd:" in text
            # A state filter that excludes it.
            assert not ss(bed, "--state", "time-wait", "--port", str(client_port))
            # Anyone may read the table, as anyone may run ss.
            reply = ask_as(bed.joy, 65534, 65534, {"op": "sockets"})
            assert not reply.startswith("error"), reply
        finally:
            joy.close()
            peer.close()

        def gone() -> bool:
            return not any(r["peer"] == f"{bed.peer.ip}:{client_port}"
                           and r["state"] != "TIME-WAIT" for r in ss(bed, "-a"))

        wait_for(gone, 15, "the closed connection to leave the table")


def test_ss_without_a_service_says_so_in_one_line(service_bed: Testbed) -> None:
    out = cli(service_bed.peer, "ss", service_bed.peer.ifname, check=False)
    assert out.returncode == 3
    assert len(out.stderr.strip().splitlines()) == 1 and "not attached" in out.stderr
