"""nginx as a reverse proxy under ``joyride run --outgoing``: its upstream connections
are Joyride's. Two things nginx does that the shim must follow: its workers reset their
environment (keeping only TZ), so the shim's settings are the ones the process started
with; and it registers an upstream socket in its epoll set before it calls ``connect``
(ngx_event_connect_peer: ngx_add_conn, then connect), so the shim's swap of that socket
for the service's connection must make the registration again. A kernel client in
the peer namespace fetches a body through the proxy from a kernel server there; every
byte is checked by hash."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from service_helpers import JOYRIDE, stats, wait_port

from joyride.bench import servers
from joyride.testbed import Testbed

pytestmark = pytest.mark.integration



@pytest.mark.parametrize("buffering", ["on", "off"])
def test_nginx_proxies_to_a_kernel_upstream(service_bed: Testbed, tmp_path: Path,
                                            buffering: str) -> None:
    bed = service_bed
    www = tmp_path / "www"
    www.mkdir()
    body = os.urandom(3 << 20)
    (www / "blob.bin").write_bytes(body)
    upstream_port = 7086 if buffering == "on" else 7087
    bed.peer.popen(sys.executable, "-m", "http.server", "-b", "0.0.0.0", "-d", str(www),
                   str(upstream_port), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(bed.joy, bed.peer.ip, upstream_port)
    work = tmp_path / "nginx"
    port = 8101 if buffering == "on" else 8102  # not accelerated: the kernel's listener
    conf = servers.nginx_conf(work, port, reuseport=False, locations=(
        f"location / {{ proxy_pass http://{bed.peer.ip}:{upstream_port}; "
        f"proxy_buffering {buffering}; }}"))
    service = stats(bed.joy)["datapath"]["service"]
    started, granted = service.get("connect_started", 0), service.get("connect_channels", 0)
    bed.joy.popen(JOYRIDE, "run", "--outgoing", "--", "nginx", "-c", str(conf),
                  "-e", str(work / "error.log"), stdout=subprocess.DEVNULL,
                  stderr=subprocess.DEVNULL)
    wait_port(bed.peer, bed.joy.ip, port)
    out = tmp_path / "got.bin"
    for _ in range(3):  # new upstream connections each time (no upstream keep-alive)
        bed.peer.run("curl", "-sS", "-f", "-m", "20", "-o", str(out),
                     f"http://{bed.joy.ip}:{port}/blob.bin", timeout=60)
        assert hashlib.sha256(out.read_bytes()).digest() == hashlib.sha256(body).digest()
    # The upstream connections were the service's, in ring mode: nginx's workers reset
    # their environment, and the shim keeps what `joyride run` set at the start.
    service = stats(bed.joy)["datapath"]["service"]
    assert service["connect_started"] - started >= 3
    assert service["connect_channels"] - granted >= 3
