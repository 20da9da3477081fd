"""Frame formats: Ethernet, IPv4, IPv6, TCP (+options), checksums, sequence numbers.

Formats know nothing of connection state, I/O or clocks. One call each way in Python:
``parse_frame(bytes) -> Frame`` (raises only ``ParseError``: ``IntegrityError`` when the
bytes are unsafe to parse, ``SanityError`` when they parse but are refused; the
``reason`` is a stable drop-counter key) and ``build_frame(eth, ip, seg) -> bytes``:
the reference of tests and tools.

The engine parses every frame through the compiled per-packet path in
``joyride.wire.batch`` (``BatchParser``, over ``cffi_build/wire.c``; imported explicitly
since it pulls in numpy and needs the built ``joyride._wire``) and builds its data
segments there too (``BatchBuilder``); the rest it builds with ``build_frame_into``.

IPv6 (``ipv6``: the fixed header, the extension headers walked; the pseudo-header
checksum in ``checksum``) is built by ``build_frame`` and read by ``parse_frame`` and
``BatchParser`` when asked (``ipv6=True``); the engine and the data plane read IPv4
only until the C fast path carries both families (issue 18).

Modules: ``errors`` (reasons and exceptions), ``checksum``, ``ethernet``, ``ipv4``,
``ipv6``, ``tcp_options``, ``tcp``, ``frame``, ``seq``, ``batch``.
"""

from joyride.wire.errors import IntegrityError, ParseError, Reason, SanityError
from joyride.wire.ethernet import EthernetHeader
from joyride.wire.frame import Frame, build_frame, build_frame_into, parse_frame
from joyride.wire.ipv4 import Ipv4Header
from joyride.wire.ipv6 import Ipv6Header
from joyride.wire.seq import Seq
from joyride.wire.tcp import TcpFlags, TcpOptions, TcpSegment, emit_tcp, parse_tcp

__all__ = [
    "EthernetHeader",
    "Frame",
    "IntegrityError",
    "Ipv4Header",
    "Ipv6Header",
    "ParseError",
    "Reason",
    "SanityError",
    "Seq",
    "TcpFlags",
    "TcpOptions",
    "TcpSegment",
    "build_frame",
    "build_frame_into",
    "emit_tcp",
    "parse_frame",
    "parse_tcp",
]
