"""XDP modes: auto falls back to skb (generic) mode with a notice; native can refuse.

veth refuses native XDP above MTU 3498 (DESIGN.md, facts), which makes the fallback
reproducible; the same steering checks then run in skb mode.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from steer_cli import cli, one_line_error, pin_neighbours, stats, status, wait_for
from steer_frames import Endpoints, mac_bytes, send_raw

from joyride.testbed import Testbed

pytestmark = pytest.mark.integration

PORT = 8080


def test_auto_falls_back_to_skb_mode_and_steers(make_testbed: Callable[..., Testbed]) -> None:
    bed = make_testbed(mtu=4000)
    pin_neighbours(bed)
    joy = bed.joy
    out = cli(joy, "attach", joy.ifname, "--ports", str(PORT), "--mode", "native",
              check=False)
    assert "MTU" in one_line_error(out)
    assert status(joy, joy.ifname)["state"] == "not-attached"

    out = cli(joy, "attach", joy.ifname, "--ports", str(PORT))
    try:
        assert "notice: native XDP unavailable" in out.stderr and "skb" in out.stderr
        assert "(skb XDP)" in out.stdout
        entry = status(joy, joy.ifname)
        assert entry["service"]["mode"] == "skb" and entry["program"]["mode"] == "skb"
        assert entry["service"]["notices"]
        ep = Endpoints(mac_bytes(bed.peer.mac), mac_bytes(joy.mac), bed.peer.ip_bytes,
                       joy.ip_bytes)
        before = stats(joy, joy.ifname)
        with bed.peer.inside():
            send_raw(bed.peer.ifname, [ep.tcp_frame(PORT)] * 4 + [ep.tcp_frame(PORT + 1)])

        def counted() -> bool:
            now = stats(joy, joy.ifname)
            return (now["steer"]["steered_tcp"] - before["steer"]["steered_tcp"] == 4
                    and now["queues"]["0"]["rx_frames"] - before["queues"]["0"]["rx_frames"]
                    == 4
                    and now["steer"]["pass_port_tcp"] - before["steer"]["pass_port_tcp"] == 1)

        wait_for(counted, what="4 steered frames in the skb-mode socket")
        peer_ping = bed.peer.run("ping", "-c", "1", "-W", "2", joy.ip, check=False)
        assert peer_ping.returncode == 0
    finally:
        cli(joy, "detach", joy.ifname)
