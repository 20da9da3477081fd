#!/usr/bin/env python3
"""Per-frame cost of the wire layer (no privileges needed).

Prints ns/frame for: the Python whole-frame parser, the compiled batch parser (batch of
64, raw C call and through ``BatchParser``), the compiled batch builder, and the internet
checksum of a 1500-byte frame. Frames are 1514-byte data segments with timestamps (a
full MSS at MTU 1500) unless noted. Each figure is the best of several repetitions, so
that a busy neighbour on this shared machine inflates it as little as possible. The last
line is one JSON object with every number.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import numpy as np

from joyride.wire._native import ffi, lib
from joyride.wire.batch import BatchBuilder, BatchParser, FrameTemplate
from joyride.wire.checksum import _ones_sum_py
from joyride.wire.ethernet import EthernetHeader
from joyride.wire.frame import build_frame, parse_frame
from joyride.wire.ipv4 import Ipv4Header
from joyride.wire.seq import Seq
from joyride.wire.tcp import TcpFlags, TcpSegment
from joyride.wire.tcp_options import TcpOptions

BATCH = 64
MSS = 1448  # 1500 - 20 (IPv4) - 20 (TCP) - 12 (timestamps)
SLOT = 2048  # UMEM frame size


def best_ns(fn: Callable[[], object], per_call: int, repeat: int, number: int) -> float:
    """Best-of-``repeat`` mean ns per item, ``fn`` handling ``per_call`` items."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter_ns()
        for _ in range(number):
            fn()
        best = min(best, (time.perf_counter_ns() - t0) / (number * per_call))
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--scale", type=float, default=1.0, help="multiply iteration counts")
    args = ap.parse_args()
    rep = args.repeat

    def n(x: int) -> int:
        return max(1, int(x * args.scale))

    eth = EthernetHeader(bytes.fromhex("2a75775f0c2c"), bytes.fromhex("5afedcef6c68"))
    ip = Ipv4Header(bytes([10, 77, 0, 1]), bytes([10, 77, 0, 2]), ident=1)
    payload = bytes(range(256)) * (MSS // 256 + 1)
    segs = [
        TcpSegment(
            59350,
            8080,
            Seq(1000 + i * MSS),
            Seq(77),
            TcpFlags.ACK | TcpFlags.PSH,
            512,
            payload[:MSS],
            TcpOptions(timestamps=(i, 5)),
        )
        for i in range(BATCH)
    ]
    frames = [build_frame(eth, ip, s) for s in segs]
    ack = build_frame(
        eth,
        ip,
        TcpSegment(
            59350, 8080, Seq(1), Seq(2), TcpFlags.ACK, 512, b"", TcpOptions(timestamps=(1, 2))
        ),
    )
    results: dict[str, float | int] = {"batch": BATCH, "frame_bytes": len(frames[0])}

    # Python reference parser.
    results["py_parse_ns"] = best_ns(lambda: parse_frame(frames[0]), 1, rep, n(3000))
    results["py_parse_ack_ns"] = best_ns(lambda: parse_frame(ack), 1, rep, n(3000))
    results["py_parse_noverify_ns"] = best_ns(
        lambda: parse_frame(frames[0], verify_checksums=False), 1, rep, n(3000)
    )

    # C batch parse over a UMEM-like region: frames in 2 KiB slots.
    region = bytearray(BATCH * SLOT)
    for i, f in enumerate(frames):
        region[i * SLOT : i * SLOT + len(f)] = f
    base = ffi.from_buffer(region)
    offs = ffi.new("uint64_t[]", [i * SLOT for i in range(BATCH)])
    lens = ffi.new("uint32_t[]", [len(f) for f in frames])
    out = ffi.new("struct wire_parsed[]", BATCH)
    assert lib.wire_parse_batch(base, offs, lens, BATCH, 1, out) == BATCH
    results["c_parse_ns"] = best_ns(
        lambda: lib.wire_parse_batch(base, offs, lens, BATCH, 1, out), BATCH, rep, n(20000)
    )
    results["c_parse_noverify_ns"] = best_ns(
        lambda: lib.wire_parse_batch(base, offs, lens, BATCH, 0, out), BATCH, rep, n(20000)
    )
    parser = BatchParser(BATCH)
    np_offs = np.arange(BATCH, dtype=np.uint64) * SLOT
    np_lens = np.array([len(f) for f in frames], dtype=np.uint32)
    results["c_parse_wrapper_ns"] = best_ns(
        lambda: parser.parse_descriptors(region, np_offs, np_lens, BATCH), BATCH, rep, n(10000)
    )
    results["c_parse_then_frame_ns"] = best_ns(
        lambda: [parser.frame(i) for i in range(BATCH)], BATCH, rep, n(200)
    )

    # C batch build: 64 data segments, payload copied from one buffer, both checksums.
    tmpl = FrameTemplate(eth.src, eth.dst, ip.src, ip.dst, 59350, 8080)
    builder = BatchBuilder(tmpl, BATCH)
    sp = builder.specs
    sp["seq"][:] = np.arange(BATCH, dtype=np.uint32) * MSS + 1000
    sp["ack"][:] = 77
    sp["window"][:] = 512
    sp["flags"][:] = int(TcpFlags.ACK | TcpFlags.PSH)
    sp["has_ts"][:] = 1
    sp["tsval"][:] = np.arange(BATCH)
    sp["tsecr"][:] = 5
    sp["payload_len"][:] = MSS
    sp["ip_id"][:] = 1
    pbuf = ffi.from_buffer(payload)
    caps = ffi.new("uint32_t[]", [SLOT] * BATCH)
    out_region = bytearray(BATCH * SLOT)
    obase = ffi.from_buffer(out_region)
    build_args = (builder._tmpl, builder.segs, BATCH, pbuf, obase, offs, caps, builder.out_lens)
    assert lib.wire_build_batch(*build_args) == BATCH
    assert bytes(out_region[: len(frames[0])]) == frames[0]
    results["c_build_ns"] = best_ns(lambda: lib.wire_build_batch(*build_args), BATCH, rep, n(20000))
    # Zero copy: payloads already in place, only headers and checksums are written.
    zc_args = (builder._tmpl, builder.segs, BATCH, ffi.NULL, obase, offs, caps, builder.out_lens)
    results["c_build_zerocopy_ns"] = best_ns(
        lambda: lib.wire_build_batch(*zc_args), BATCH, rep, n(20000)
    )
    sp["payload_len"][:] = 0
    sp["flags"][:] = int(TcpFlags.ACK)
    results["c_build_ack_ns"] = best_ns(
        lambda: lib.wire_build_batch(*build_args), BATCH, rep, n(20000)
    )

    # Checksum of 1500 bytes: through the Python call, and the in-C cost derived from
    # the parse with and without verification (IPv4 header + 1480-byte TCP segment).
    blob = bytes(frames[0][14:])
    cblob = ffi.from_buffer(blob)
    results["csum1500_c_call_ns"] = best_ns(
        lambda: lib.wire_ones_sum(cblob, 1500, 0), 1, rep, n(50000)
    )
    results["csum1500_py_fallback_ns"] = best_ns(lambda: _ones_sum_py(blob, 0), 1, rep, n(5000))
    results["csum1500_in_c_derived_ns"] = results["c_parse_ns"] - results["c_parse_noverify_ns"]

    for k, v in results.items():
        print(f"{k:28s} {v:10.1f}" if isinstance(v, float) else f"{k:28s} {v:10d}")
    print(json.dumps({k: round(v, 1) if isinstance(v, float) else v for k, v in results.items()}))


if __name__ == "__main__":
    main()
