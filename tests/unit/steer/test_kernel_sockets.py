"""Reading the kernel's TCP tables for the steering program's KERNEL_CONNS flag."""

from __future__ import annotations

from joyride.steer.kernel_sockets import ports_with_connections

# /proc/net/tcp as Linux prints it: local 8080 listening, 8080 established (state 01),
# 9000 in TIME-WAIT (06), 7000 listening only.
TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1
   1: 0112A8C0:1F90 0212A8C0:D431 01 00000000:00000000 00:00000000 00000000     0        0 2 1
   2: 0112A8C0:2328 0212A8C0:D432 06 00000000:00000000 03:00001771 00000000     0        0 0 3
   3: 00000000:1B58 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 3 1
"""
# /proc/net/tcp6: a dual-stack socket's IPv4 connection on 5201, as a v4-mapped address.
TCP6 = """\
  sl  local_address                         remote_address                        st tx_queue
   0: 0000000000000000FFFF00000112A8C0:1451 0000000000000000FFFF00000212A8C0:E000 01 0:0
"""


def test_connections_count_listeners_and_time_wait_do_not() -> None:
    assert ports_with_connections(TCP, {8080, 9000, 7000, 80}) == {8080}


def test_only_the_ports_asked_about() -> None:
    assert ports_with_connections(TCP, {7000}) == set()


def test_v4_mapped_connections_of_the_ipv6_table() -> None:
    assert ports_with_connections(TCP6, {5201}) == {5201}


def test_garbage_lines_are_skipped() -> None:
    assert ports_with_connections("header\nshort line\n 0: x:zz y st\n", {1}) == set()
