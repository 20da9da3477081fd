"""Bulk sender for the Python sink: ``flows`` kernel TCP connections for ``seconds``.

Each flow sends until the deadline, then shuts its side down and waits for the
server's EOF, so every byte counted has reached the server's application: the rate is
delivered bytes over the time until the last flow's EOF. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import threading
import time

CHUNK = memoryview(bytes(256 << 10))


def flow(ip: str, port: int, deadline: float, out: list[int], errors: list[str]) -> None:
    sent = 0
    try:
        with socket.create_connection((ip, port), timeout=10) as sock:
            while time.monotonic() < deadline:
                sock.sendall(CHUNK)
                sent += len(CHUNK)
            sock.shutdown(socket.SHUT_WR)
            while sock.recv(4096):
                pass
    except OSError as exc:
        errors.append(f"{type(exc).__name__}: {exc}")
    out.append(sent)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("ip")
    ap.add_argument("port", type=int)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--flows", type=int, default=1)
    args = ap.parse_args(argv)
    sent: list[int] = []
    errors: list[str] = []
    t0 = time.monotonic()
    threads = [threading.Thread(target=flow, args=(args.ip, args.port, t0 + args.seconds,
                                                   sent, errors))
               for _ in range(args.flows)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - t0
    if errors:
        print("; ".join(errors), file=sys.stderr)
        return 1
    total = sum(sent)
    print(json.dumps({"bytes": total, "seconds": elapsed,
                      "gbps": total * 8 / elapsed / 1e9}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
