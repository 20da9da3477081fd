"""A path narrower than the link (issue 18): a router between the two namespaces whose
far side has an MTU of 1300. The router answers Joyride's full-sized segments with ICMP
"fragmentation needed" (IPv4) or ICMPv6 "packet too big" (IPv6); the Joyride side's
kernel has no socket for the connection and drops it, but the service's raw ICMP and
ICMPv6 sockets get a copy (joyride.service.pathmtu) and the connection's MSS fits the
path within a round trip. With the router's ICMP
filtered the path is a black hole, found by RFC 4821 §3 detection after three
timeouts. A kernel client downloads from a server under ``joyride run``, checked by
hash, and from the kernel's own server on the same path beside it."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from typing import Any

import pytest
from service_helpers import JOYRIDE, attached, stats, wait_port

from joyride.testbed import Testbed

pytestmark = pytest.mark.integration

SIZE = 2_000_000
PAYLOAD = hashlib.sha256(b"narrow path").digest() * (SIZE // 32)

SERVER = r'''
import hashlib, socket, sys
data = hashlib.sha256(b"narrow path").digest() * (int(sys.argv[2]) // 32)
s = socket.socket(socket.AF_INET6); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("::", int(sys.argv[1]))); s.listen(8)  # dual-stack: both families' clients
while True:
    c, _ = s.accept()
    with c:
        try:
            c.sendall(data)
        except OSError:
            pass  # a client that left early (wait_port's probe)
'''

CLIENT = r'''
import hashlib, socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=60)
got = bytearray()
while chunk := s.recv(1 << 20):
    got += chunk
print(len(got), hashlib.sha256(got).hexdigest())
'''


def download(bed: Testbed, port: int, ipv6: bool) -> str:
    host = bed.joy.ip6 if ipv6 else bed.joy.ip
    assert host is not None
    return bed.peer.run(sys.executable, "-c", CLIENT, host, str(port),
                        timeout=90).stdout.decode().strip()


def narrow_path_download(block_icmp: bool, ipv6: bool = False) -> dict[str, Any]:
    """The downloads through the narrow path (over IPv6 with ``ipv6``); the service's
    counters after them."""
    want = f"{SIZE} {hashlib.sha256(PAYLOAD).hexdigest()}"
    with Testbed(path_mtu=1300, ipv6=True) as bed, attached(bed, "--ports", "8090"):
        if block_icmp:
            assert bed.middle_ns is not None
            subprocess.run(["ip", "netns", "exec", bed.middle_ns, "nft", "-f", "-"],
                           input=BLOCK_ICMP.encode(), check=True)
        # The kernel, on a port Joyride does not steer: PMTUD from the router's ICMP.
        bed.joy.popen(sys.executable, "-c", SERVER, "8091", str(SIZE),
                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        bed.joy.popen(JOYRIDE, "run", "--", sys.executable, "-c", SERVER, "8090", str(SIZE),
                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(bed.peer, bed.joy.ip, 8091)
        wait_port(bed.peer, bed.joy.ip, 8090)
        if not block_icmp:
            assert download(bed, 8091, ipv6) == want
        assert download(bed, 8090, ipv6) == want
        datapath: dict[str, Any] = stats(bed.joy)["datapath"]
        if block_icmp:
            # The black-hole guess (then what the search found) is remembered for the
            # destination: a further download starts at it, with no timeout to cut.
            assert download(bed, 8090, ipv6) == want
            again = stats(bed.joy)["datapath"]
            assert again["tcp_total"].get("mss_black_hole", 0) == \
                datapath["tcp_total"].get("mss_black_hole", 0)
            assert again["service"].get("path_mss_found_learnt", 0) >= 1
        if not block_icmp:
            # The path MSS was learnt (by the first connection the router reported on):
            # a further download starts at it, as the kernel's route cache makes its
            # own connections do, and draws no report of its own.
            assert download(bed, 8090, ipv6) == want
            again: dict[str, Any] = stats(bed.joy)["datapath"]
            applied = datapath["service"].get("path_too_big_applied", 0)
            assert again["service"].get("path_too_big_applied", 0) == applied
            assert again["dataplane"].get("syn_path_mss", 0) + again["service"].get(
                "path_mss_learnt_applied", 0) > datapath["dataplane"].get(
                "syn_path_mss", 0) + datapath["service"].get("path_mss_learnt_applied", 0)
        return datapath


# The router sends no "fragmentation needed" (RFC 1191 §4) nor "packet too big" (RFC
# 8201 §4) at all: a black hole.
BLOCK_ICMP = """
table inet jr_pmtu {
    chain out {
        type filter hook output priority 0; policy accept;
        icmp type destination-unreachable drop
        icmpv6 type packet-too-big drop
    }
}
"""


@pytest.mark.parametrize("ipv6", [False, True], ids=["ipv4", "ipv6"])
def test_a_download_through_a_narrower_path_fits_the_mss_to_the_routers_report(
        ipv6: bool) -> None:
    datapath = narrow_path_download(block_icmp=False, ipv6=ipv6)
    assert datapath["service"].get("path_too_big_applied", 0) >= 1, datapath["service"]
    assert datapath["tcp_total"].get("mss_path_mtu", 0) >= 1
    assert datapath["tcp_total"].get("mss_black_hole", 0) == 0


@pytest.mark.parametrize("ipv6", [False, True], ids=["ipv4", "ipv6"])
def test_a_download_through_an_icmp_black_hole_completes(ipv6: bool) -> None:
    datapath = narrow_path_download(block_icmp=True, ipv6=ipv6)
    assert datapath["service"].get("path_too_big_applied", 0) == 0
    assert datapath["tcp_total"].get("mss_black_hole", 0) >= 1, datapath["tcp_total"]
    # Then the search (RFC 4821 §7) probed upward from the guess; the path carries more
    # than IPv4's cut of 1024 (IPv6's floor, 1220, is not below what a 1300 path takes
    # by more than the search's step, so there it may find nothing to raise).
    assert datapath["tcp_total"].get("mss_probes", 0) >= 1, datapath["tcp_total"]
    if not ipv6:
        assert datapath["tcp_total"].get("mss_probe_raised", 0) >= 1, datapath["tcp_total"]
