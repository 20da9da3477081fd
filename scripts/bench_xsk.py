#!/usr/bin/env python3
"""AF_XDP packets per second through one socket: the Python batch API vs a pure C loop.

Needs root; builds its own veth test bed (native XDP redirect-all on the Joyride side)
and removes it on exit. Both loops run over the same socket and rings in one run:

* ``rx_drain``: the peer fills the rx ring with K frames while nobody reads; then one
  loop drains it (receive a batch, return it to the fill ring). Time per frame is pure
  user-space cost, with no sender in the way: the difference between the Python and C
  loops is what the Python-visible API adds per packet.
* ``rx``: a C sender (AF_XDP tx from a second socket in the peer namespace, in its own
  thread) runs flat out while the receiver loop counts what it gets.
* ``tx``: the Joyride socket transmits 60-byte frames to the peer as fast as it can
  (completions, allocation, tx ring, wakeup); in copy mode the kernel transmits inside
  the sendto() wakeup, so this includes the kernel's cost per frame.

Batch sizes 1, 16, 64, 256. The last line of output is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import struct
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the source tree, whatever the venv's install maps

from joyride.testbed import Testbed  # noqa: E402
from xsk import Socket, Umem, UmemExhausted, attach_redirect_all  # noqa: E402
from xsk._native import ffi as xsk_ffi  # noqa: E402

LOOPS_C = ROOT / "scripts" / "xsk_loops.c"
XSK_C = ROOT / "cffi_build"


def build_loops() -> Any:
    """The reference C loops (``xsk_loops.c``): not in the shipped module, so compiled
    here into a scratch directory, with a private copy of the xsk sources."""
    import importlib.util
    import tempfile

    from cffi import FFI

    ffi = FFI()
    ffi.cdef("""
        int64_t xsk_loop_rx(void *s, uint32_t batch, uint64_t max_frames, int64_t max_ns);
        int64_t xsk_loop_tx(void *s, uint32_t batch, uint32_t len, uint64_t max_frames,
                            int64_t max_ns);
    """)
    ffi.set_source("_xsk_loops", '#include "xsk.h"\n'
                   "int64_t xsk_loop_rx(struct xsk_sock *, uint32_t, uint64_t, int64_t);\n"
                   "int64_t xsk_loop_tx(struct xsk_sock *, uint32_t, uint32_t, uint64_t, "
                   "int64_t);\n",
                   sources=[str(LOOPS_C), *(str(XSK_C / n) for n in
                                            ("xsk.c", "xsk_tx_thread.c", "xsk_bpf.c"))],
                   include_dirs=[str(XSK_C)], libraries=["pthread"],
                   extra_compile_args=["-O2", "-std=gnu11", "-Wall", "-Wextra"])
    with tempfile.TemporaryDirectory(prefix="joyride-xsk-loops-") as where:
        path = ffi.compile(tmpdir=where, verbose=False)
        spec = importlib.util.spec_from_file_location("_xsk_loops", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)  # mapped: the file may go
    return module


class _Loops:
    """``lib.xsk_loop_rx(sock._s, ...)`` as before the loops left xsk._xsk: the module
    is built on first use and given the socket of xsk._xsk by address."""

    def __init__(self) -> None:
        self._module: Any = None

    def _call(self, name: str, s: Any, args: tuple[int, ...]) -> int:
        if self._module is None:
            self._module = build_loops()
        ffi, loops = self._module.ffi, self._module.lib
        return int(getattr(loops, name)(ffi.cast("void *", int(xsk_ffi.cast("uintptr_t", s))),
                                        *args))

    def xsk_loop_rx(self, s: Any, *args: int) -> int:
        return self._call("xsk_loop_rx", s, args)

    def xsk_loop_tx(self, s: Any, *args: int) -> int:
        return self._call("xsk_loop_tx", s, args)


lib = _Loops()

BATCHES = (1, 16, 64, 256)
FRAME_LEN = 60
ETH_P_BENCH = 0x88B5
TARGET_NS = 100.0


def write_frames(umem: Umem, dst: bytes, src: bytes) -> None:
    """The same 60-byte frame in every UMEM frame: tx loops send whatever frame they get."""
    frame = dst + src + struct.pack("!H", ETH_P_BENCH) + bytes(range(FRAME_LEN - 14))
    arr = umem.array.reshape(umem.frame_count, umem.frame_size)
    arr[:, umem.headroom:umem.headroom + FRAME_LEN] = list(frame)


def py_drain(sock: Socket, batch: int, count: int) -> int:
    """The Python-visible rx path: recv a batch, release it, until ``count`` frames."""
    got = 0
    recv, release = sock.recv, sock.release
    while got < count:
        b = recv(batch, 0)
        n = len(b)
        if n:
            release(b)
            got += n
    return got


def c_drain(sock: Socket, batch: int, count: int) -> int:
    return int(lib.xsk_loop_rx(sock._s, batch, count, 10_000_000_000))


def push(sender: Socket, count: int) -> None:
    """Make the sender put exactly ``count`` frames on the wire (bounded to 10 s)."""
    sent = 0
    deadline = time.monotonic() + 10
    while sent < count and time.monotonic() < deadline:
        sent += int(lib.xsk_loop_tx(sender._s, min(64, count - sent), FRAME_LEN,
                                    count - sent, 1_000_000_000))


def wait_pending(sock: Socket, count: int, timeout: float = 5.0) -> int:
    deadline = time.monotonic() + timeout
    while sock.rx_pending < count and time.monotonic() < deadline:
        time.sleep(0.001)
    return sock.rx_pending


def rx_drain(sock: Socket, sender: Socket, batch: int, ring: int, seconds: float
             ) -> dict[str, float]:
    """ns per frame to drain a full rx ring, Python API vs C loop, interleaved rounds."""
    samples: dict[str, list[float]] = {"python": [], "c": []}
    loops = {"python": py_drain, "c": c_drain}
    end = time.monotonic() + seconds
    rounds = 0
    while time.monotonic() < end or rounds < 2:
        for name, loop in loops.items():
            push(sender, ring)
            pending = wait_pending(sock, ring)
            t0 = time.perf_counter_ns()
            got = loop(sock, batch, pending)
            samples[name].append((time.perf_counter_ns() - t0) / max(got, 1))
        rounds += 1
    out = {name: statistics.median(v) for name, v in samples.items()}
    out["overhead_ns"] = out["python"] - out["c"]
    out["rounds"] = rounds
    return out


class Sender(threading.Thread):
    """Flat-out C sender on the peer's AF_XDP socket (the GIL is released in C)."""

    def __init__(self, sock: Socket, seconds: float) -> None:
        super().__init__(daemon=True)
        self.sock, self.seconds, self.sent = sock, seconds, 0

    def run(self) -> None:
        self.sent = int(lib.xsk_loop_tx(self.sock._s, 64, FRAME_LEN, 1 << 62,
                                        int(self.seconds * 1e9)))


def rx_rate(sock: Socket, sender: Socket, batch: int, seconds: float) -> dict[str, float]:
    out: dict[str, float] = {}
    for name in ("python", "c"):
        flood = Sender(sender, seconds + 0.2)
        flood.start()
        time.sleep(0.05)
        t0 = time.perf_counter()
        got = 0
        if name == "c":
            got = int(lib.xsk_loop_rx(sock._s, batch, 1 << 62, int(seconds * 1e9)))
        else:
            end = t0 + seconds
            recv, release = sock.recv, sock.release
            while True:
                b = recv(batch, 0)
                n = len(b)
                if n:
                    release(b)
                    got += n
                elif time.perf_counter() > end:
                    break
                if got & 0xFFF < n and time.perf_counter() > end:
                    break
        elapsed = time.perf_counter() - t0
        flood.join()
        out[f"{name}_pps"] = got / elapsed
        # Drain what is left so the next point starts from an empty ring.
        while c_drain_quiet(sock):
            pass
    return out


def c_drain_quiet(sock: Socket) -> int:
    return int(lib.xsk_loop_rx(sock._s, 256, 1 << 30, 20_000_000))


def py_tx(sock: Socket, batch: int, seconds: float) -> int:
    sent = 0
    end = time.perf_counter() + seconds
    alloc, send, complete = sock.alloc_tx, sock.send, sock.poll_completions
    i = 0
    while True:
        complete()
        try:
            txb = alloc(batch, FRAME_LEN)
        except UmemExhausted:
            sock.kick()
            continue
        sent += send(txb)
        if len(txb):
            txb.release()
        i += 1
        if i & 0x3F == 0 and time.perf_counter() > end:
            break
    return sent


def tx_rate(sock: Socket, batch: int, seconds: float) -> dict[str, float]:
    out: dict[str, float] = {}
    for name in ("python", "c"):
        t0 = time.perf_counter()
        if name == "c":
            sent = int(lib.xsk_loop_tx(sock._s, batch, FRAME_LEN, 1 << 62, int(seconds * 1e9)))
        else:
            sent = py_tx(sock, batch, seconds)
        elapsed = time.perf_counter() - t0
        out[f"{name}_pps"] = sent / elapsed
        out[f"{name}_ns_per_pkt"] = elapsed * 1e9 / max(sent, 1)
        deadline = time.monotonic() + 2
        while sock.tx_outstanding and time.monotonic() < deadline:
            sock.poll_completions()
            time.sleep(0.001)
    out["overhead_ns"] = out["python_ns_per_pkt"] - out["c_ns_per_pkt"]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=1.5, help="per measured point")
    ap.add_argument("--ring", type=int, default=4096, help="rx ring size (frames drained)")
    ap.add_argument("--mode", choices=("native", "skb"), default="native")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench_xsk: needs root (network namespaces, XDP, AF_XDP)", file=sys.stderr)
        return 77
    ring = args.ring
    result: dict[str, Any] = {"mode": args.mode, "frame_len": FRAME_LEN, "ring": ring,
                              "seconds_per_point": args.seconds, "batches": list(BATCHES)}
    with Testbed() as tb:
        joy_mac = bytes.fromhex(tb.joy.mac.replace(":", ""))
        peer_mac = bytes.fromhex(tb.peer.mac.replace(":", ""))
        with tb.joy.inside():
            umem = Umem(frame_count=4 * ring)
            prog = attach_redirect_all(tb.joy.ifname, args.mode)
            sock = Socket(tb.joy.ifname, 0, umem, mode=args.mode, rx_size=ring,
                          fill_size=2 * ring, tx_size=2048, comp_size=2 * ring,
                          fill_frames=2 * ring)
            prog.register(sock)
        with tb.peer.inside():
            peer_umem = Umem(frame_count=8192)
            sender = Socket(tb.peer.ifname, 0, peer_umem, fill_frames=0, tx_size=2048,
                            comp_size=8192)
        write_frames(peer_umem, joy_mac, peer_mac)
        write_frames(umem, peer_mac, joy_mac)
        try:
            result["rx_drain"] = {b: rx_drain(sock, sender, b, ring, args.seconds)
                                  for b in BATCHES}
            result["rx"] = {b: rx_rate(sock, sender, b, args.seconds) for b in BATCHES}
            result["tx"] = {b: tx_rate(sock, b, args.seconds) for b in BATCHES}
            result["stats"] = sock.statistics()
        finally:
            sock.close()
            sender.close()
            prog.detach()
            umem.close()
            peer_umem.close()
    over = result["rx_drain"][64]["overhead_ns"]
    result["rx_overhead_ns_at_64"] = round(over, 1)
    result["target_ns"] = TARGET_NS
    result["target_met"] = over < TARGET_NS
    for name, table in result.items():
        if name in ("rx_drain", "rx", "tx"):
            for b, row in table.items():
                print(f"{name:9s} batch {b:4d}: " + ", ".join(
                    f"{k}={v:,.1f}" for k, v in row.items()), file=sys.stderr)
    print(json.dumps(result, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
