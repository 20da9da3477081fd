"""``joyride capture IFACE [-w FILE|-] [--count N] [--snaplen N] [FILTER]``: a pcap of
the frames Joyride receives and sends on IFACE, both directions.

``tcpdump -i IFACE`` sees none of them (XDP takes the frames before the kernel's
capture point, and Joyride's own never pass it). The service's tap
(``joyride.service.capture``) copies them; FILTER is tcpdump's language, compiled here
by libpcap into the classic BPF program the tap runs. Without ``-w`` the frames are
shown by ``tcpdump -n -r -``. Root only: frames carry every user's data.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from typing import IO, Any, Final

from joyride.errors import JoyrideError

WAKE: Final = 0.2  # seconds between looks at a Ctrl-C while no frame arrives
SUMMARY_WAIT: Final = 5.0  # seconds the service has to finish after a stop


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "capture", help="pcap of the frames Joyride receives and sends (tcpdump -r reads it)")
    parser.add_argument("ifname", metavar="IFACE")
    parser.add_argument("-w", dest="write", metavar="FILE",
                        help="write a pcap file (- for standard output, e.g. to a pipe)")
    parser.add_argument("-c", "--count", type=int, default=0,
                        help="stop after N frames (0: until Ctrl-C)")
    parser.add_argument("-s", "--snaplen", type=int, default=0,
                        help="bytes kept of each frame (default 262144: all)")
    parser.add_argument("trailing", nargs="*", metavar="FILTER",
                        help="tcpdump's filter language, e.g. tcp port 80 and host 10.0.0.2")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from joyride import pcap
    from joyride.service import client
    from joyride.service.capture import MAX_SNAPLEN

    client.require_root("capturing frames")
    snaplen = args.snaplen or pcap.DEFAULT_SNAPLEN
    if not 0 < snaplen <= MAX_SNAPLEN:
        raise JoyrideError(f"--snaplen {snaplen}: expected 1..{MAX_SNAPLEN}")
    expression = " ".join(args.trailing)
    program = pcap.compile_filter(expression, snaplen) if expression else []
    sock, rest = client.open_stream(args.ifname, {
        "op": "capture", "snaplen": snaplen, "filter": [list(i) for i in program]})
    viewer: subprocess.Popen[bytes] | None = None
    try:
        if args.write == "-":
            out: IO[bytes] = sys.stdout.buffer
        elif args.write:
            out = open(args.write, "wb")  # noqa: SIM115 (closed by _close)
        else:
            tcpdump = shutil.which("tcpdump")
            if tcpdump is None:
                raise JoyrideError("no tcpdump to show the frames: write them with -w FILE")
            viewer = subprocess.Popen([tcpdump, "-n", "-r", "-"], stdin=subprocess.PIPE)
            assert viewer.stdin is not None
            out = viewer.stdin
    except BaseException:
        sock.close()
        raise
    try:
        written, summary = stream(sock, rest, out, snaplen, args.count)
    finally:
        sock.close()
        _close(out, viewer)
    dropped = int(summary.get("dropped", 0)) if summary else 0
    print(f"joyride capture: {written} frames written"
          + (f", {dropped} dropped by the service's full capture ring" if summary else
             " (the service ended the capture: no summary)"), file=sys.stderr, flush=True)
    return 0


def stream(sock: socket.socket, rest: bytes, out: IO[bytes], snaplen: int, count: int
           ) -> tuple[int, dict[str, Any] | None]:
    """Copy records to ``out`` (a pcap file) until ``count`` frames, Ctrl-C/SIGTERM or
    the service's end. To stop, it asks the service, which stops tapping and sends
    what it had captured, then its summary: those frames are written too (up to
    ``count``). A signal only sets a flag: a read it interrupted would lose bytes of
    the stream, so reads time out every ``WAKE`` seconds to look at it instead."""
    from joyride import pcap
    from joyride.service.capture import RECORDS

    interrupted: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        interrupted.append(signum)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    reader = FrameReader(sock, rest)
    sock.settimeout(WAKE)
    out.write(pcap.file_header(snaplen))
    out.flush()
    written = 0
    writable = True
    stop_at: float | None = None  # monotonic deadline for the summary, once stopping
    try:
        while True:
            if stop_at is None and (interrupted or not writable
                                    or (count and written >= count)):
                stop_at = time.monotonic() + SUMMARY_WAIT
                with contextlib.suppress(OSError):
                    sock.sendall(b"stop\n")
            try:
                got = reader.next()
            except TimeoutError:
                if stop_at is not None and time.monotonic() > stop_at:
                    return written, None
                continue
            except OSError:
                return written, None
            if got is None:
                return written, None
            kind, payload = got
            if kind != RECORDS:
                return written, json.loads(payload)
            keep, n = _first_records(payload, count - written if count else None)
            if writable and keep:
                try:
                    out.write(keep)
                    out.flush()
                    written += n
                except BrokenPipeError:
                    writable = False  # the reader went away: stop, take the summary
                    if out is sys.stdout.buffer:  # and no complaint at exit's flush
                        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _first_records(data: bytes, limit: int | None) -> tuple[bytes, int]:
    """The first ``limit`` pcap records of ``data`` (None: all) and how many."""
    from joyride.pcap import RECORD_HEADER

    pos = n = 0
    while pos + RECORD_HEADER.size <= len(data) and (limit is None or n < limit):
        caplen = RECORD_HEADER.unpack_from(data, pos)[2]
        pos += RECORD_HEADER.size + caplen
        n += 1
    return data[:pos], n


class FrameReader:
    """The capture stream's frames (``joyride.service.capture.FRAME``)."""

    def __init__(self, sock: socket.socket, rest: bytes) -> None:
        self.sock = sock
        self.buf = bytearray(rest)

    def _fill(self, n: int) -> bool:
        while len(self.buf) < n:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                return False
            self.buf += chunk
        return True

    def next(self) -> tuple[int, bytes] | None:
        from joyride.service.capture import FRAME

        if not self._fill(FRAME.size):
            return None
        length, kind = FRAME.unpack_from(self.buf)
        if not self._fill(FRAME.size + length):
            return None
        payload = bytes(self.buf[FRAME.size:FRAME.size + length])
        del self.buf[:FRAME.size + length]
        return kind, payload


def _close(out: IO[bytes], viewer: subprocess.Popen[bytes] | None) -> None:
    if out is not sys.stdout.buffer:
        with contextlib.suppress(OSError):
            out.close()
    if viewer is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            viewer.wait(10)
