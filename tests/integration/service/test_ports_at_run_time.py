"""``joyride ports add/del`` reach the service's listeners, not only the steering: an
application may listen on a port added at run time and is served there at once; a
deleted port takes no new listeners."""

from __future__ import annotations

import hashlib
import socket

import pytest
from service_helpers import app_path, attached, cli

from joyride.service import appclient
from joyride.testbed import Testbed

pytestmark = pytest.mark.integration


def test_a_port_added_at_run_time_is_served() -> None:
    with Testbed() as bed, attached(bed, "--ports", "8080"):
        path = app_path(bed.joy)
        with bed.joy.inside(), pytest.raises(appclient.NotAccelerated):
            appclient.listen(8081, path=path)
        cli(bed.joy, "ports", bed.joy.ifname, "add", "8081")
        with bed.joy.inside():
            listener = appclient.listen(8081, path=path)
            service = appclient.service_uids()  # in the listener's namespace
        with listener:
            with bed.peer.inside():
                client = socket.create_connection((bed.joy.ip, 8081), timeout=10)
            payload = bytes(range(256)) * 512
            with client:
                listener.settimeout(10)
                conn, _ = appclient.accept(listener, service)
                with conn:
                    client.sendall(payload)
                    client.shutdown(socket.SHUT_WR)
                    got = b""
                    conn.settimeout(10)
                    while chunk := conn.recv(65536):
                        got += chunk
            assert hashlib.sha256(got).digest() == hashlib.sha256(payload).digest()
        cli(bed.joy, "ports", bed.joy.ifname, "del", "8081")
        with bed.joy.inside(), pytest.raises(appclient.NotAccelerated):
            appclient.listen(8081, path=path)
