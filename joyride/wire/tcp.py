"""TCP segments (RFC 9293 §3.1): parse with every length and the checksum checked, emit
with the checksum filled in. Options live in ``tcp_options``; ``TcpOptions`` is
re-exported here because it is part of the segment's shared contract.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import Final

from joyride.wire import flagops
from joyride.wire.checksum import IPPROTO_TCP, ones_sum, pseudo_header_sum
from joyride.wire.errors import IntegrityError, Reason, SanityError
from joyride.wire.seq import Seq
from joyride.wire.tcp_options import (
    NO_OPTIONS,
    TcpOptions,
    emit_options,
    options_len,
    parse_options,
)

__all__ = [
    "FLAGS_BY_BYTE",
    "TCP_HLEN",
    "TcpFlags",
    "TcpOptions",
    "TcpSegment",
    "emit_tcp",
    "emit_tcp_into",
    "parse_tcp",
    "parse_tcp_ex",
]

TCP_HLEN: Final = 20
_FIXED = struct.Struct("!HHIIBBHHH")  # ports, seq, ack, offset, flags, window, sum, urgent


class TcpFlags(enum.IntFlag):
    FIN = 0x01
    SYN = 0x02
    RST = 0x04
    PSH = 0x08
    ACK = 0x10
    URG = 0x20
    ECE = 0x40
    CWR = 0x80


# Every flags byte as a member, built once: constructing an IntFlag costs ~0.3 µs.
FLAGS_BY_BYTE: Final = tuple(TcpFlags(i) for i in range(256))


flagops.install(TcpFlags, FLAGS_BY_BYTE)  # & and | by table lookup (see flagops)
_SYN_FIN: Final = TcpFlags.SYN | TcpFlags.FIN
_NOT_PLAIN: Final = ~int(TcpFlags.PSH) & 0xFF


@dataclass(frozen=True, slots=True)
class TcpSegment:
    src_port: int
    dst_port: int
    seq: Seq
    ack: Seq
    flags: TcpFlags
    window: int  # raw 16-bit field, unscaled
    payload: bytes = b""
    options: TcpOptions = NO_OPTIONS
    urgent: int = 0

    @property
    def seg_len(self) -> int:
        """Sequence space the segment occupies: data plus SYN and FIN (RFC 9293 §3.4)."""
        return (
            len(self.payload)
            + (1 if self.flags & TcpFlags.SYN else 0)
            + (1 if self.flags & TcpFlags.FIN else 0)
        )

    @property
    def header_len(self) -> int:
        return TCP_HLEN + options_len(self.options)


def parse_tcp_ex(
    data: bytes | bytearray | memoryview,
    src_ip: bytes,
    dst_ip: bytes,
    *,
    verify_checksum: bool = True,
) -> tuple[TcpSegment, bool]:
    """Parse one segment (``data`` is exactly the IP payload); also returns whether it is
    a header-prediction candidate: flags ACK (PSH allowed) and no option other than
    NOP/EOL/timestamps (RFC 9293 §3.10.7.4 fast path, RFC 7323 Appendix A)."""
    mv = memoryview(data)
    n = len(mv)
    if n < TCP_HLEN:
        raise IntegrityError(Reason.TCP_TRUNCATED, f"{n} bytes")
    src_port, dst_port, seq, ack, off, flags, window, _csum, urgent = _FIXED.unpack_from(mv)
    hl = (off >> 4) * 4
    if hl < TCP_HLEN or hl > n:
        raise IntegrityError(Reason.TCP_BAD_HEADER_LENGTH, f"{hl} of {n} bytes")
    if verify_checksum:
        pseudo = pseudo_header_sum(src_ip, dst_ip, IPPROTO_TCP, n)
        if ones_sum(mv, pseudo) != 0xFFFF:
            raise IntegrityError(Reason.TCP_BAD_CHECKSUM)
    options, only_ts = parse_options(mv[TCP_HLEN:hl])
    # Sanity, RFC 9293 §3.1: port 0 is reserved; SYN and FIN together are meaningless
    # (a classic scan signature, dropped as Linux does).
    if src_port == 0 or dst_port == 0:
        raise SanityError(Reason.TCP_ZERO_PORT, f"{src_port} -> {dst_port}")
    if flags & _SYN_FIN == _SYN_FIN:
        raise SanityError(Reason.TCP_SYN_FIN)
    seg = TcpSegment(
        src_port,
        dst_port,
        Seq(seq),
        Seq(ack),
        FLAGS_BY_BYTE[flags],
        window,
        bytes(mv[hl:]),
        options,
        urgent,
    )
    plain = only_ts and (flags & _NOT_PLAIN) == TcpFlags.ACK
    return seg, plain


def parse_tcp(
    data: bytes | memoryview,
    src_ip: bytes,
    dst_ip: bytes,
    *,
    verify_checksum: bool = True,
) -> TcpSegment:
    """Parse one segment; raises ``IntegrityError`` or ``SanityError`` on bad input."""
    return parse_tcp_ex(data, src_ip, dst_ip, verify_checksum=verify_checksum)[0]


def emit_tcp_into(
    buf: bytearray | memoryview, offset: int, seg: TcpSegment, src_ip: bytes, dst_ip: bytes
) -> int:
    """Write header and payload at ``buf[offset:]`` with the checksum; returns the length."""
    opts = emit_options(seg.options)
    hl = TCP_HLEN + len(opts)
    n = hl + len(seg.payload)
    # IPv4's total length counts its own header; IPv6's payload length does not.
    if n > (0xFFFF - 20 if len(src_ip) == 4 else 0xFFFF):
        raise ValueError(f"TCP segment of {n} bytes does not fit an IP packet")
    mv = memoryview(buf)[offset : offset + n]
    if len(mv) < n:
        raise ValueError("buffer too small for the segment")
    _FIXED.pack_into(
        mv,
        0,
        seg.src_port,
        seg.dst_port,
        int(seg.seq),
        int(seg.ack),
        (hl // 4) << 4,
        int(seg.flags),
        seg.window,
        0,
        seg.urgent,
    )
    mv[TCP_HLEN:hl] = opts
    mv[hl:] = seg.payload
    pseudo = pseudo_header_sum(src_ip, dst_ip, IPPROTO_TCP, n)
    mv[16:18] = (~ones_sum(mv, pseudo) & 0xFFFF).to_bytes(2, "big")
    return n


def emit_tcp(seg: TcpSegment, src_ip: bytes, dst_ip: bytes) -> bytes:
    """The segment's bytes (header, options, payload) with the checksum filled in."""
    buf = bytearray(seg.header_len + len(seg.payload))
    emit_tcp_into(buf, 0, seg, src_ip, dst_ip)
    return bytes(buf)
