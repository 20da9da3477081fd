"""``joyride metrics IFACE --listen ADDR:PORT`` (or ``--once``): the service's counters
for Prometheus, over HTTP at ``/metrics``.

An exporter process beside the service, not a part of it: the service serves no TCP
socket of the kernel's (its seccomp allow-list admits only unix sockets once it has
dropped privileges) and its loop is the data path's. Each scrape asks the service
over its control socket (``stats`` and ``sockets``, which any user may read), so the
exporter needs no privilege; ``joyride.service.exposition`` renders the text. While no
service answers, a scrape still succeeds with ``joyride_up 0``, as exporters do.
"""

from __future__ import annotations

import argparse
import socket
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from joyride.errors import JoyrideError


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "metrics", help="serve the service's counters to Prometheus (text exposition)")
    parser.add_argument("ifname", metavar="IFACE")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--listen", metavar="ADDR:PORT",
                       help="serve http://ADDR:PORT/metrics (e.g. 127.0.0.1:9477, :9477)")
    where.add_argument("--once", action="store_true",
                       help="print one scrape on stdout and exit (textfile collectors)")
    parser.set_defaults(func=run)


def scrape(ifname: str) -> str:
    """One exposition of the service's counters (``joyride_up 0`` without a service)."""
    from joyride.service import client, control, exposition

    try:
        stats = client.ask(ifname, {"op": "stats"})
        sockets = client.ask(ifname, {"op": "sockets"}, max_reply=control.MAX_REPLY)
    except JoyrideError as exc:
        e = exposition.Exposition()
        e.add("joyride_up", "gauge", "1 while the Joyride service answers", 0,
              interface=ifname)
        print(f"joyride metrics: {exc}", file=sys.stderr, flush=True)
        return e.text()
    return exposition.render(stats, sockets["sockets"])


def parse_listen(text: str) -> tuple[str, int]:
    """``ADDR:PORT``, ``[V6ADDR]:PORT`` or ``:PORT`` (every address)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise JoyrideError(f"--listen {text!r}: expected ADDR:PORT")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)


def run(args: argparse.Namespace) -> int:
    from joyride.service.exposition import CONTENT_TYPE

    if args.once:
        sys.stdout.write(scrape(args.ifname))
        return 0
    host, port = parse_listen(args.listen)
    ifname = args.ifname

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.partition("?")[0]
            if path == "/metrics":
                body, ctype, code = scrape(ifname).encode(), CONTENT_TYPE, 200
            elif path == "/":
                body, ctype, code = (b'<a href="/metrics">/metrics</a>\n',
                                     "text/html; charset=utf-8", 200)
            else:
                body, ctype, code = b"not found\n", "text/plain; charset=utf-8", 404
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *log_args: Any) -> None:
            pass  # a scrape every few seconds is not worth a log line

    family = socket.AF_INET6 if ":" in host else socket.AF_INET

    class Server(ThreadingHTTPServer):
        address_family = family
        daemon_threads = True

    try:
        server = Server((host, port), Handler)
    except OSError as exc:
        raise JoyrideError(f"--listen {args.listen}: {exc.strerror or exc}") from exc
    print(f"joyride metrics: serving {ifname}'s counters at "
          f"http://{args.listen}/metrics", file=sys.stderr, flush=True)
    with server:
        server.serve_forever()
    return 0
