"""Ring mode under ``joyride attach --workers 2`` on a two-queue veth (issue 17): the
workers share one table of channels (``dp_share_channels``), so an unmodified server's
connections claim ring mode whichever worker runs them, the arena's bell is pushed from
both, and a connection the peer moves to the other queue keeps its channel. Kernel
clients in the peer namespace; every byte checked by hash."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from service_helpers import JOYRIDE, attached, stats, wait_port
from test_run_servers import WRK_CHECK, nginx_conf, wrk
from test_workers import closing_all, exchange, move_back_and_forth

from joyride.testbed import Testbed

pytestmark = pytest.mark.integration

PORT = 8097
NGINX_PORT = 8098
CONNECTIONS = 24
CHUNK = 64 * 1024
RING_ENV = {**os.environ, "JOYRIDE_CHANNELS": "1"}

# An asyncio echo server: its event loop waits in epoll_wait, so the process's bell
# (the arena's queue and door) announces its connections' bytes.
ASYNC_ECHO = r'''
import asyncio, sys
async def echo(reader, writer):
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()
async def main():
    server = await asyncio.start_server(echo, "0.0.0.0", int(sys.argv[1]), backlog=128)
    async with server:
        await server.serve_forever()
asyncio.run(main())
'''


def plane_stats(bed: Testbed) -> dict[str, Any]:
    return stats(bed.joy)["datapath"]["dataplane"]


def ring_echo(bed: Testbed) -> None:
    """The asyncio echo server under ``joyride run`` in ring mode, listening."""
    bed.joy.popen(JOYRIDE, "run", "--", sys.executable, "-c", ASYNC_ECHO, str(PORT),
                  env=RING_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(bed.peer, bed.joy.ip, PORT)


def test_both_workers_run_ring_mode_connections() -> None:
    with Testbed(rx_queues=2) as bed, attached(bed, "--ports", f"{PORT},{NGINX_PORT}",
                                               "--workers", "2"):
        ring_echo(bed)
        with bed.peer.inside():
            clients = [socket.create_connection((bed.joy.ip, PORT), timeout=30)
                       for _ in range(CONNECTIONS)]
        with closing_all(clients):
            for sock in clients:
                exchange(sock, os.urandom(4 * CHUNK))
        plane = plane_stats(bed)
        workers = plane["workers"]
        # The peer's sockets pick a transmit queue by their hash: 24 connections all on
        # one queue is a 2^-23 chance. Each worker ran ring-mode flows of its own.
        for worker in workers:
            assert worker["established"] > 0 and worker["chan_ring"] > 0, workers
        assert plane["chan_ring"] >= CONNECTIONS, plane
        assert plane["chan_refused"] == 0 and plane["chan_broken"] == 0, plane
        # One arena (the server's process) for both workers, and its bell rang.
        assert plane["chan_bell_pushes"] > 0, plane
        assert plane["chan_doors"] == 1, plane


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs to move on")
def test_a_ring_mode_flow_the_peer_moves_keeps_its_channel() -> None:
    """As test_workers' move, the application in ring mode: each move releases the flow
    from one worker and gives it, with its channel, to the other."""
    cpus = sorted(os.sched_getaffinity(0))[:2]
    with Testbed(rx_queues=2) as bed, attached(bed, "--ports", str(PORT), "--workers", "2"):
        ring_echo(bed)
        with bed.peer.inside():
            socks = [socket.create_connection((bed.joy.ip, PORT), timeout=30)
                     for _ in range(2)]
        for sock in socks:
            exchange(sock, b"before the moves")
        move_back_and_forth(bed, socks, cpus, moves=8)
        plane = plane_stats(bed)
        assert plane["migrated"] >= 8, plane
        assert all(w["rx_fast"] > 0 for w in plane["workers"]), plane["workers"]
        assert plane["chan_ring"] >= 2 and plane["chan_broken"] == 0, plane
        # Nothing left ring mode: every move carried the channel.
        assert plane["chan_reverts"] == 0, plane


def test_nginx_with_two_workers_on_two_data_plane_workers(tmp_path: Path) -> None:
    """nginx (two forked workers, epoll, sendfile) in ring mode on both data-plane
    workers; wrk's script compares every response's body with the file's."""
    script = tmp_path / "check.lua"
    script.write_text(WRK_CHECK)
    with Testbed(rx_queues=2) as bed, attached(bed, "--ports", str(NGINX_PORT),
                                               "--workers", "2"):
        bed.joy.popen(JOYRIDE, "run", "--", "nginx", "-c",
                      str(nginx_conf(tmp_path, NGINX_PORT)), "-e", str(tmp_path / "error.log"),
                      env=RING_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(bed.peer, bed.joy.ip, NGINX_PORT)
        _rps, bad, out = wrk(bed.peer, f"http://{bed.joy.ip}:{NGINX_PORT}/file.bin", script,
                             seconds=2)
        assert bad == 0 and "Socket errors" not in out and "Non-2xx" not in out, out
        plane = plane_stats(bed)
        assert plane["chan_ring"] >= 100 and plane["chan_broken"] == 0, plane
        assert all(w["chan_ring"] > 0 for w in plane["workers"]), plane["workers"]
