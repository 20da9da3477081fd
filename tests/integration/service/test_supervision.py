"""The service SIGKILLed mid-transfer: applications get errors, not hangs; the kernel
keeps serving; the supervisor brings the service back, which re-adopts the
application's listener and serves new connections."""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time

import pytest
from service_helpers import app_path, attached, cli, segments_in, service_pid, stats, wait_for

from joyride.service import appclient
from joyride.testbed import Testbed

pytestmark = pytest.mark.integration


def test_sigkill_mid_transfer_then_restart() -> None:
    with Testbed() as bed, attached(bed, "--ports", "8080"):
        with bed.joy.inside():
            lsock = appclient.listen(8080, path=app_path(bed.joy))
            kernel_server = socket.create_server(("0.0.0.0", 8081))  # a kernel port
        with lsock, kernel_server:
            with bed.peer.inside():
                client = socket.create_connection((bed.joy.ip, 8080), timeout=10)
            lsock.settimeout(10)
            conn, _ = lsock.accept()
            outcome: dict[str, object] = {}

            def pump_from_peer() -> None:
                # The peer keeps sending; the application reads until the service dies.
                try:
                    while True:
                        client.sendall(os.urandom(1 << 16))
                except OSError as exc:
                    outcome["client"] = exc

            def app_reader() -> None:
                conn.settimeout(30)  # a hang would show as TimeoutError
                total = 0
                try:
                    while chunk := conn.recv(1 << 16):
                        total += len(chunk)
                    outcome["app"] = "eof"
                except OSError as exc:
                    outcome["app"] = exc
                outcome["app_bytes"] = total
                outcome["app_done_at"] = time.monotonic()

            sender = threading.Thread(target=pump_from_peer, daemon=True)
            reader = threading.Thread(target=app_reader, daemon=True)
            sender.start()
            reader.start()
            wait_for(lambda: segments_in(stats(bed.joy)) > 200,
                     10, "the transfer to be under way")
            old = service_pid(bed)
            assert old is not None
            killed_at = time.monotonic()
            os.kill(old, signal.SIGKILL)
            reader.join(15)
            assert not reader.is_alive(), "the application's recv hung"
            assert outcome["app"] == "eof" or isinstance(outcome["app"], ConnectionResetError)
            assert float(outcome["app_done_at"]) - killed_at < 5  # type: ignore[arg-type]
            assert int(outcome["app_bytes"]) > 0  # type: ignore[call-overload]
            # A write on the lost connection fails at once (EPIPE), it does not block.
            with pytest.raises((BrokenPipeError, ConnectionResetError)):
                for _ in range(64):
                    conn.send(b"x" * 65536)
            conn.close()
            client.close()

            # The kernel still serves its own ports throughout.
            with bed.peer.inside():
                probe = socket.create_connection((bed.joy.ip, 8081), timeout=5)
            probe.close()

            # The supervisor restarts the service; it re-adopts our listener.
            wait_for(lambda: (pid := service_pid(bed)) is not None and pid != old, 30,
                     "the supervisor to restart the service")
            wait_for(lambda: "8080" in stats(bed.joy)["datapath"]["listeners"], 10,
                     "the restarted service to adopt the listener")
            with bed.peer.inside():
                again = socket.create_connection((bed.joy.ip, 8080), timeout=10)
            with again:
                fresh, _ = lsock.accept()
                with fresh:
                    again.sendall(b"after the restart")
                    assert fresh.recv(64) == b"after the restart"
                    fresh.sendall(b"served")
                    assert again.recv(64) == b"served"
            assert stats(bed.joy)["datapath"]["service"]["listen_adopted"] >= 1


def test_detach_stops_supervisor_and_service() -> None:
    with Testbed() as bed:
        with attached(bed, "--ports", "8080"):
            pid = service_pid(bed)
            assert pid is not None
        # detach ran: nothing restarts the service, no state is left.
        time.sleep(1.0)
        assert service_pid(bed) is None
        out = cli(bed.joy, "status", bed.joy.ifname, "--json", check=False)
        [entry] = json.loads(out.stdout)
        assert entry["state"] == "not-attached", entry
