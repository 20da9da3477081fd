"""Stateless SYN cookies (RFC 4987 §3.6), laid out much as Linux does.

Under a SYN flood a listener answers with a SYN-ACK whose ISN encodes everything it
needs to rebuild the connection from the final ACK, and keeps no state:

    cookie = H1(4-tuple) + client_isn + (count << 24) + (MAC << 3 | mssind)
    MAC    = H2(4-tuple, client_isn, count, mssind) mod 2**21

``count`` is a 64-second counter (8 bits survive in the cookie), ``mssind`` indexes a
small table of common MSS values (3 bits). H1 and H2 are keyed BLAKE2s hashes. Unlike
Linux, which adds ``mssind`` to the hash (so ``cookie + 1`` decodes as a different
but valid MSS), the MSS index is covered by the MAC: any change to the cookie, the
4-tuple or the client ISN passes with probability 2**-21. A cookie is accepted during
its own counter period and the next one, so it lives 64 to 128 seconds.

Window scale and SACK-permitted do not fit in the cookie; when the client offered
timestamps they travel in the low bits of our TSval and come back in its TSecr
(``encode_ts_options``/``decode_ts_options``, as Linux's cookie_init_timestamp).

Memory: two keys.
"""

from __future__ import annotations

import hashlib
import struct
from typing import Final

from joyride.tcp.isn import derive_key, pack_tuple
from joyride.wire.seq import MASK, Seq

COUNTER_PERIOD: Final = 64.0  # seconds per counter tick (RFC 4987 §3.6: "t")
MAX_AGE: Final = 2  # a cookie is valid for counter values count and count + 1
_COUNT_BITS: Final = 8
_COOKIE_BITS: Final = 24
_COOKIE_MASK: Final = (1 << _COOKIE_BITS) - 1
_MSSIND_BITS: Final = 3
_MAC_MASK: Final = (1 << (_COOKIE_BITS - _MSSIND_BITS)) - 1

# Ascending, at most 2**_MSSIND_BITS entries; the largest entry not above the peer's
# MSS is encoded. 536 is the RFC 9293 §3.7.1 default, 1220 fits IPv6-minimum paths,
# 1460 Ethernet, 4312/8960 common jumbo sizes. 64 is a floor for pathological peers
# (Linux refuses an MSS below 48).
MSS_TABLE: Final = (64, 536, 1220, 1300, 1440, 1460, 4312, 8960)

# TSval low bits used to carry options (Linux TSMASK / TS_OPT_*).
TS_OPT_BITS: Final = 6
TS_OPT_MASK: Final = (1 << TS_OPT_BITS) - 1
TS_OPT_WSCALE_MASK: Final = 0x0F  # 0x0F = "no window scaling"
TS_OPT_SACK: Final = 0x10
_MAX_WSCALE: Final = 14  # RFC 7323 §2.3

_MAC_TAIL: Final = struct.Struct("!IIB")  # after the 4-tuple: ISN, counter, MSS index


def counter(now: float) -> int:
    """The 64-second counter at ``now``."""
    return int(now // COUNTER_PERIOD)


def encode_ts_options(wscale: int | None, sack_permitted: bool) -> int:
    """Low TSval bits that carry the client's window scale and SACK-permitted."""
    bits = TS_OPT_WSCALE_MASK if wscale is None else min(max(wscale, 0), _MAX_WSCALE)
    if sack_permitted:
        bits |= TS_OPT_SACK
    return bits


def decode_ts_options(tsecr: int) -> tuple[int | None, bool]:
    """Inverse of ``encode_ts_options`` applied to the TSecr of the final ACK."""
    wscale = tsecr & TS_OPT_WSCALE_MASK
    return (None if wscale == TS_OPT_WSCALE_MASK else wscale), bool(tsecr & TS_OPT_SACK)


def embed_ts_options(tsval: int, wscale: int | None, sack_permitted: bool) -> int:
    """Our TSval with the option bits in its low 6 bits, never ahead of ``tsval``.

    RFC 7323 §5.4 needs TSval to be monotonic; replacing the low bits could move it
    forward by up to 63 ticks, so step back one 64-tick block when it would.
    """
    ts = ((tsval & ~TS_OPT_MASK) | encode_ts_options(wscale, sack_permitted)) & MASK
    if ts > (tsval & MASK):
        ts = (ts - (TS_OPT_MASK + 1)) & MASK
    return ts


class SynCookies:
    """Make and check SYN cookies with a per-instance secret."""

    __slots__ = ("_k1", "_k2")

    def __init__(self, secret: bytes | None = None) -> None:
        # One random (or given) secret, split into two independent keys for H1/H2.
        base = derive_key(None, b"jr-ck") if secret is None else secret
        self._k1 = derive_key(base, b"jr-ck1")
        self._k2 = derive_key(base, b"jr-ck2")

    def _h1(self, lip: bytes, lport: int, rip: bytes, rport: int) -> int:
        data = pack_tuple(lip, lport, rip, rport)
        return int.from_bytes(hashlib.blake2s(data, digest_size=4, key=self._k1).digest())

    def _mac(
        self, lip: bytes, lport: int, rip: bytes, rport: int, isn: int, count: int, mssind: int
    ) -> int:
        data = pack_tuple(lip, lport, rip, rport) + _MAC_TAIL.pack(
            isn & MASK, count & MASK, mssind)
        digest = hashlib.blake2s(data, digest_size=4, key=self._k2).digest()
        return int.from_bytes(digest) & _MAC_MASK

    def make(
        self,
        local_ip: bytes,
        local_port: int,
        remote_ip: bytes,
        remote_port: int,
        client_isn: Seq,
        mss: int,
        now: float,
    ) -> tuple[Seq, int]:
        """Return (our ISN for the SYN-ACK, the MSS actually encoded)."""
        mssind = 0
        for i, value in enumerate(MSS_TABLE):
            if mss >= value:
                mssind = i
        count = counter(now)
        h1 = self._h1(local_ip, local_port, remote_ip, remote_port)
        mac = self._mac(
            local_ip, local_port, remote_ip, remote_port, int(client_isn), count, mssind
        )
        cookie = (
            h1
            + int(client_isn)
            + ((count & ((1 << _COUNT_BITS) - 1)) << _COOKIE_BITS)
            + ((mac << _MSSIND_BITS) | mssind)
        )
        return Seq(cookie), MSS_TABLE[mssind]

    def check(
        self,
        local_ip: bytes,
        local_port: int,
        remote_ip: bytes,
        remote_port: int,
        client_isn: Seq,
        cookie: Seq,
        now: float,
    ) -> int | None:
        """Validate a cookie from the final ACK: ``client_isn`` = SEG.SEQ - 1 and
        ``cookie`` = SEG.ACK - 1. Returns the encoded MSS, or None if forged/expired.

        Counter values are compared modulo 2**8, as they travel in 8 bits.
        """
        h1 = self._h1(local_ip, local_port, remote_ip, remote_port)
        v = (int(cookie) - h1 - int(client_isn)) & MASK
        now_count = counter(now)
        age = (now_count - (v >> _COOKIE_BITS)) & ((1 << _COUNT_BITS) - 1)
        if age >= MAX_AGE:
            return None
        mssind = v & ((1 << _MSSIND_BITS) - 1)
        mac = self._mac(
            local_ip, local_port, remote_ip, remote_port, int(client_isn), now_count - age, mssind
        )
        if mssind >= len(MSS_TABLE) or (v & _COOKIE_MASK) >> _MSSIND_BITS != mac:
            return None
        return MSS_TABLE[mssind]
