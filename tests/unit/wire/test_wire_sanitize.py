"""The C parser and builder under AddressSanitizer and UBSan.

The hypothesis tests call the compiled module with frames packed side by side in one
buffer, where a read past a frame's end would land in its neighbour unnoticed. Here
``cffi_build/wire_fuzz.c`` compiles ``wire.c`` with sanitizers and mutates seed frames
into heap buffers of exactly their length, so any out-of-bounds access aborts.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from test_ipv6 import LINUX_DATA6, LINUX_SYN6, PADN6, packet
from test_wire_frame import LINUX_ACK, LINUX_SYN, LINUX_SYN_ACK

from joyride.wire.ethernet import EthernetHeader
from joyride.wire.frame import build_frame
from joyride.wire.ipv4 import Ipv4Header
from joyride.wire.seq import Seq
from joyride.wire.tcp import TcpFlags, TcpSegment
from joyride.wire.tcp_options import TcpOptions

CFFI_BUILD = Path(__file__).resolve().parents[3] / "cffi_build"


def seeds() -> list[bytes]:
    eth = EthernetHeader(bytes(6), bytes(6), vlan_tci=7)
    ip = Ipv4Header(bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]), options=b"\x01\x07\x03\x00")
    sack = TcpOptions(timestamps=(1, 2), sack_blocks=((Seq(5), Seq(9)), (Seq(20), Seq(30))))
    return [
        LINUX_SYN,
        LINUX_SYN_ACK,
        LINUX_ACK,
        build_frame(eth, ip, TcpSegment(1, 2, Seq(3), Seq(4), TcpFlags.ACK, 5, b"d" * 100, sack)),
        build_frame(
            eth,
            ip,
            TcpSegment(1, 2, Seq(3), Seq(4), TcpFlags.SYN, 5, options=TcpOptions(mss=1, wscale=3)),
        ),
        # IPv6: Linux's frames, and extension headers in front of a segment.
        LINUX_SYN6,
        LINUX_DATA6,
        bytes(14 - 2) + b"\x86\xdd" + packet([(0, PADN6), (43, bytes([0, 4, 0, 0, 0, 0, 0])),
                                               (44, bytes(7)), (60, PADN6)],
                                              body=LINUX_DATA6[54:]),
    ]


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")
def test_parser_and_builder_under_sanitizers(tmp_path: Path) -> None:
    exe = tmp_path / "wire_fuzz"
    cc = subprocess.run(
        [
            "gcc", "-O1", "-g", "-std=c11", "-fsanitize=address,undefined",
            "-fno-sanitize-recover=all", "-fno-omit-frame-pointer",
            f"-I{CFFI_BUILD}", str(CFFI_BUILD / "wire_fuzz.c"), "-o", str(exe),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip
    if cc.returncode != 0 and "asan" in cc.stderr.lower():
        pytest.skip(f"no sanitizer runtime: {cc.stderr[:200]}")
    assert cc.returncode == 0, cc.stderr
    blob = b"".join(struct.pack("<I", len(s)) + s for s in seeds())
    run = subprocess.run([str(exe), "200000", "1"], input=blob, capture_output=True, timeout=120)
    assert run.returncode == 0, run.stderr.decode(errors="replace")[-2000:]
    words = run.stdout.split()
    assert words[0] == b"ok"
    accepted, built = int(words[1]), int(words[2])
    # The mutations must leave enough frames intact to reach the deep checks, and
    # enough random segments must be buildable, or the run proves little.
    assert accepted > 10_000
    assert built > 10_000
