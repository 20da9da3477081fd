"""Embedded mode drops root after setup (issue 21): ``embed(..., drop_to="nobody")``
leaves the process uid nobody with no capabilities in any thread, the embedded stack
still serves (echo checked by hash), and the privileged helper undoes the setup when
the process is done (program detached, reserved ports restored, state removed)."""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from joyride.claim.statedir import StateDir
from joyride.steer import xdp
from joyride.testbed import Testbed

pytestmark = pytest.mark.integration

PORT = 8080
SERVER = r"""
import hashlib, json, os, sys
import joyride.socket as jsocket
from joyride.embed import embed

ifname, port = sys.argv[1], int(sys.argv[2])
with embed(ifname, [port], drop_to="nobody"):
    threads = {}
    for tid in os.listdir("/proc/self/task"):
        fields = dict(line.split(":", 1) for line in
                      open(f"/proc/self/task/{tid}/status").read().splitlines() if ":" in line)
        threads[tid] = {k: fields[k].split() for k in
                        ("Uid", "Gid", "CapPrm", "CapEff", "CapAmb", "NoNewPrivs")}
    srv = jsocket.socket()
    srv.bind(("", port))
    srv.listen()
    print(json.dumps({"uid": os.getuid(), "threads": threads}), flush=True)
    conn, _ = srv.accept()
    got = hashlib.sha256()
    while chunk := conn.recv(65536):
        got.update(chunk)
        conn.sendall(chunk)
    conn.close()
    srv.close()
    print(json.dumps({"received": got.hexdigest()}), flush=True)
"""


def test_embedded_drop_to_nobody_serves_and_undoes() -> None:
    nobody = pwd.getpwnam("nobody").pw_uid
    data = os.urandom(1 << 20)
    with Testbed() as bed:
        with bed.joy.inside():
            reserved_before = Path("/proc/sys/net/ipv4/ip_local_reserved_ports").read_text()
            state_dir = StateDir(bed.joy.ifname)
        proc = bed.joy.popen(sys.executable, "-c", SERVER, bed.joy.ifname, str(PORT),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line, proc.stderr and proc.stderr.read()
        report = json.loads(line)
        assert report["uid"] == nobody != 0
        assert len(report["threads"]) >= 2  # the engine's and the transmit threads
        for fields in report["threads"].values():
            assert fields["Uid"] == [str(nobody)] * 4
            assert fields["Gid"][0] != "0"
            for cap in ("CapPrm", "CapEff", "CapAmb"):
                assert int(fields[cap][0], 16) == 0, (cap, fields)
            assert fields["NoNewPrivs"] == ["1"]

        with bed.peer.inside():
            client = socket.create_connection((bed.joy.ip, PORT), timeout=20)
        with client:
            def send() -> None:
                client.sendall(data)
                client.shutdown(socket.SHUT_WR)

            sender = threading.Thread(target=send, daemon=True)
            sender.start()
            echoed = hashlib.sha256()
            while chunk := client.recv(1 << 16):
                echoed.update(chunk)
            sender.join(20)
        assert echoed.hexdigest() == hashlib.sha256(data).hexdigest()
        assert json.loads(proc.stdout.readline())["received"] == echoed.hexdigest()
        assert proc.wait(60) == 0, proc.stderr and proc.stderr.read()
        # close() waited for the helper: everything root set up is undone.
        with bed.joy.inside():
            assert xdp.query(xdp.ifindex(bed.joy.ifname)) is None
            assert not state_dir.path.exists()
            reserved_after = Path("/proc/sys/net/ipv4/ip_local_reserved_ports").read_text()
        assert reserved_after == reserved_before
