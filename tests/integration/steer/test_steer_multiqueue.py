"""Two rx queues: one AF_XDP socket per queue, each registered in the XSKMAP."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
from steer_cli import cli, pin_neighbours, stats, status, wait_for
from steer_frames import ETH_P_IP, IPPROTO_TCP, Endpoints, mac_bytes, send_raw

from joyride.testbed import Testbed

pytestmark = pytest.mark.integration

PORT = 8080
FLOWS = 32


@pytest.fixture
def two_queue_bed(make_testbed: Callable[..., Testbed]) -> Iterator[Testbed]:
    bed = make_testbed(rx_queues=2)
    pin_neighbours(bed)
    cli(bed.joy, "attach", bed.joy.ifname, "--ports", str(PORT))
    try:
        yield bed
    finally:
        cli(bed.joy, "detach", bed.joy.ifname, check=False)


def test_every_queue_has_a_socket_and_no_frame_misses(two_queue_bed: Testbed) -> None:
    bed = two_queue_bed
    assert status(bed.joy, bed.joy.ifname)["service"]["queues"] == [0, 1]
    ep = Endpoints(mac_bytes(bed.peer.mac), mac_bytes(bed.joy.mac), bed.peer.ip_bytes,
                   bed.joy.ip_bytes)
    # Distinct 4-tuples hash to both of the peer's tx queues, and veth delivers tx queue
    # i of one end to rx queue i of the other.
    frames = [ep.eth(ETH_P_IP) + ep.ipv4(IPPROTO_TCP, ep.tcp(PORT, sport=40000 + i))
              for i in range(FLOWS)]
    before = stats(bed.joy, bed.joy.ifname)
    with bed.peer.inside():
        send_raw(bed.peer.ifname, frames)

    def received() -> int:
        now = stats(bed.joy, bed.joy.ifname)
        return sum(q["rx_frames"] - before["queues"][i]["rx_frames"]
                   for i, q in now["queues"].items())

    wait_for(lambda: received() == FLOWS, what=f"{FLOWS} frames in the sockets")
    time.sleep(0.2)
    after = stats(bed.joy, bed.joy.ifname)
    assert after["steer"]["steered_tcp"] - before["steer"]["steered_tcp"] == FLOWS
    assert after["steer"]["redirect_miss"] == before["steer"]["redirect_miss"]
    per_queue = {i: q["rx_frames"] - before["queues"][i]["rx_frames"]
                 for i, q in after["queues"].items()}
    assert set(per_queue) == {"0", "1"}
    assert sum(per_queue.values()) == FLOWS
    assert all(n > 0 for n in per_queue.values()), per_queue
