#!/usr/bin/env python3
"""Benchmark the TCP core: an established-state bulk transfer between two in-memory
connections, in batches, through the compiled fast path.

No privileges, no network. One process, one CPU: the sender builds full-sized data
frames (``FastPath.send_batch``, wire batch builder), the receiver parses them (wire
batch parser, checksums verified), runs header prediction (``FastPath.receive_batch``,
C) and builds the ACKs it owes (every second segment, RFC 5681 §4.2); the sender
parses those ACKs and runs them through the same fast path, which drives RTT
estimation and congestion control once per batch. Anything the prediction refuses
goes through the Python state machine, and is counted.

The sending application keeps its send buffer full (it writes until a write is cut
short, as a blocking writer or sendfile does), so every batch runs against a send
buffer holding about 1 MiB.

``segments_per_s`` counts data segments delivered in order to the receiving
application per wall-clock second, with both cores and all four batch steps on the
same CPU. ACK segments (about one per two data segments) are reported separately.
``segments_per_cpu_s`` divides by this process's CPU time instead: on a shared
machine it is the figure to compare across runs.
The last line of output is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from joyride.tcp.config import TcpConfig
from joyride.tcp.connection import TcpConnection
from joyride.tcp.fastpath import FastPath
from joyride.tcp.isn import IsnGenerator
from joyride.tcp.listener import Listener
from joyride.tcp.state import TcpState
from joyride.wire.batch import BatchParser, FrameTemplate

A_IP, B_IP = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])
A_MAC, B_MAC = bytes([2, 0, 0, 0, 0, 1]), bytes([2, 0, 0, 0, 0, 2])


def establish(cfg: TcpConfig) -> tuple[TcpConnection, TcpConnection]:
    """Handshake through the ordinary Python path."""
    isn = IsnGenerator()
    lst = Listener(cfg, 5001, isn_generator=isn)
    a = TcpConnection.connect(cfg, A_IP, 40001, B_IP, 5001, 0.0, isn)
    b: TcpConnection | None = None
    for _ in range(4):
        for seg in a.segments_to_send(0.0):
            lst.receive(seg, A_IP, B_IP, 0.0)
        for out in lst.segments_to_send(0.0):
            a.receive(out.segment, 0.0)
        b = b or lst.accept()
    assert b is not None and a.state is TcpState.ESTABLISHED is b.state
    return a, b


def run(seconds: float, batch: int, verify: bool) -> dict[str, object]:
    cfg = TcpConfig(
        send_buffer=1 << 20, receive_buffer=4 << 20, receive_buffer_max=4 << 20,
        congestion_control="cubic",
    )
    a, b = establish(cfg)
    clock = time.perf_counter
    fa = FastPath(a, FrameTemplate(A_MAC, B_MAC, A_IP, B_IP, a.local_port, a.remote_port),
                  capacity=batch, timer=clock)
    fb = FastPath(b, FrameTemplate(B_MAC, A_MAC, B_IP, A_IP, b.local_port, b.remote_port),
                  capacity=batch, timer=clock)
    pa = BatchParser(batch, verify_checksums=cfg.verify_checksum)
    pb = BatchParser(batch, verify_checksums=cfg.verify_checksum)
    chunk = os.urandom(256 << 10)
    # The stream is ``chunk`` repeated, so every delivered piece can be checked in place.
    doubled = chunk * 2
    source = memoryview(doubled)
    written = 0
    content_ok = True
    now = 1.0
    data_segs = ack_segs = slow_data = slow_acks = 0
    received = 0
    parse_c = 0.0
    start = clock()
    cpu_start = time.process_time()
    deadline = start + seconds
    iterations = 0
    while True:
        iterations += 1
        if iterations % 64 == 0 and clock() >= deadline:
            break
        # The application keeps the send buffer full, as a blocking writer or
        # sendfile does: it writes until a write is cut short.
        while True:
            off = written % len(chunk)
            took = a.send(source[off : off + len(chunk)])
            written += took
            if took < len(chunk):
                break
        a.events()  # drain WRITABLE (and b's DATA) as an event loop would
        b.events()
        n = fa.send_batch(now)
        if n:
            t0 = clock()
            pb.parse_descriptors(fa.tx_base_c, fa.tx_offsets_c, fa.tx_lengths, n)
            parse_c += clock() - t0
            fb.receive_batch(pb, fa.tx_buf, fa.tx_offsets, now)
            data_segs += n
        else:
            # The fast path declined (window, recovery, a timer fired): slow path.
            for seg in a.segments_to_send(now):
                slow_data += 1
                b.receive(seg, now)
        got = b.recv(-1, now=now)
        if verify and got:
            pos = received % len(chunk)
            content_ok = content_ok and got == doubled[pos : pos + len(got)]
        received += len(got)
        k = fb.tx_count
        if k:
            t0 = clock()
            pa.parse_descriptors(fb.tx_base_c, fb.tx_offsets_c, fb.tx_lengths, k)
            parse_c += clock() - t0
            fa.receive_batch(pa, fb.tx_buf, fb.tx_offsets, now)
            ack_segs += k
        due = b.poll_at()
        if due is not None and due <= now:  # as an engine: only when something is due
            for seg in b.segments_to_send(now):
                slow_acks += 1
                a.receive(seg, now)
        now += 50e-6  # simulated time per round: a 50 µs RTT
        deadline_a, deadline_b = a.poll_at(), b.poll_at()
        if deadline_a is not None and deadline_a <= now:
            a.on_timer(now)
        if deadline_b is not None and deadline_b <= now:
            b.on_timer(now)
    elapsed = clock() - start
    cpu = time.process_time() - cpu_start
    c_time = fa.c_seconds + fb.c_seconds + parse_c
    delivered_segs = received / a.mss
    result: dict[str, object] = {
        "bench": "tcp_core",
        "seconds": round(elapsed, 3),
        "batch": batch,
        "mss": a.mss,
        "segments_per_s": round(delivered_segs / elapsed),
        # Per CPU-second of this process: the figure that other load on a shared
        # machine does not move (wall-clock rates drop when the CPU is contended).
        "segments_per_cpu_s": round(delivered_segs / max(cpu, 1e-9)),
        "cpu_share": round(cpu / elapsed, 3),
        "data_segments_built": data_segs,
        "ack_segments_built": ack_segs,
        "segments_per_s_incl_acks": round((delivered_segs + ack_segs + slow_acks) / elapsed),
        "slow_path_data_segments": slow_data + fb.slow_segments,
        "slow_path_ack_segments": slow_acks + fa.slow_segments,
        "fast_path_share": round(
            (fb.fast_segments + fa.fast_segments)
            / max(fb.fast_segments + fa.fast_segments + fb.slow_segments + fa.slow_segments
                  + slow_data + slow_acks, 1), 4),
        "goodput_gbit_s": round(received * 8 / elapsed / 1e9, 3),
        "c_share": round(c_time / elapsed, 3),
        "python_share": round(1 - c_time / elapsed, 3),
        "ns_per_segment": round(elapsed / max(delivered_segs, 1) * 1e9),
        "cwnd": a.congestion.cwnd,
        "verified": verify,
    }
    if verify:
        result["content_ok"] = content_ok
    return result


def run_rr(seconds: float, size: int) -> dict[str, object]:
    """Request/response: ``size`` bytes each way, one exchange in flight, both ends
    through the fast path as the engine drives it (send_batch, parse, receive_batch,
    recv; the state machine for whatever the fast path declines)."""
    cfg = TcpConfig(nodelay=True)
    a, b = establish(cfg)
    clock = time.perf_counter
    fa = FastPath(a, FrameTemplate(A_MAC, B_MAC, A_IP, B_IP, a.local_port, a.remote_port))
    fb = FastPath(b, FrameTemplate(B_MAC, A_MAC, B_IP, A_IP, b.local_port, b.remote_port))
    pa, pb = BatchParser(64), BatchParser(64)
    request = os.urandom(size)
    now = 1.0
    slow = 0
    ok = True

    def carry(src: FastPath, conn: TcpConnection, dst: FastPath, dst_conn: TcpConnection,
              parser: BatchParser) -> int:
        """What ``src`` has to send reaches ``dst``; returns segments carried slowly."""
        n = src.send_batch(now)
        if n:
            parser.parse_descriptors(src.tx_base_c, src.tx_offsets_c, src.tx_lengths, n)
            dst.receive_batch(parser, src.tx_buf, src.tx_offsets, now)
        # As the engine: the state machine's pass only when the fast path left it work.
        segs = [] if n and conn.settle_after_fast_send() else conn.segments_to_send(now)
        for seg in segs:
            dst_conn.receive(seg, now)
        return len(segs)

    done = 0
    start = clock()
    cpu_start = time.process_time()
    deadline = start + seconds
    while True:
        if done % 256 == 0 and clock() >= deadline:
            break
        a.send(request)
        slow += carry(fa, a, fb, b, pb)
        got = b.recv(-1, now=now)
        b.send(got)
        slow += carry(fb, b, fa, a, pa)
        ok = ok and a.recv(-1, now=now) == request
        a.events()
        b.events()
        now += 50e-6
        done += 1
    elapsed = clock() - start
    cpu = time.process_time() - cpu_start
    return {
        "bench": "tcp_core_rr",
        "seconds": round(elapsed, 3),
        "size": size,
        "transactions": done,
        "us_per_transaction": round(elapsed / done * 1e6, 3),
        "us_per_transaction_cpu": round(cpu / done * 1e6, 3),
        "slow_path_segments": slow + fa.slow_segments + fb.slow_segments,
        "content_ok": ok,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--verify", action="store_true",
                    help="check every delivered byte against the sent stream (slower)")
    ap.add_argument("--rr", type=int, metavar="BYTES", default=0,
                    help="request/response of BYTES each way instead of bulk transfer")
    args = ap.parse_args()
    if args.rr:
        res = run_rr(args.seconds, args.rr)
        print(f"tcp core request/response of {res['size']} B: "
              f"{res['us_per_transaction']} us per transaction (both ends; "
              f"{res['us_per_transaction_cpu']} us CPU), "
              f"{res['slow_path_segments']} segments on the slow path, "
              f"content ok: {res['content_ok']}")
        print(json.dumps(res))
        return 0
    res = run(args.seconds, args.batch, args.verify)
    print(f"tcp core: {res['segments_per_s']:,} data segments/s "
          f"({res['segments_per_cpu_s']:,} per CPU-second), "
          f"{res['segments_per_s_incl_acks']:,} incl. ACKs, {res['goodput_gbit_s']} Gbit/s, "
          f"{res['ns_per_segment']} ns/segment, C {res['c_share']:.0%} / "
          f"Python {res['python_share']:.0%}, fast path {res['fast_path_share']:.1%}")
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
