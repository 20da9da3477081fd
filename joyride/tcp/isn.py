"""Initial sequence numbers (RFC 6528).

ISN = M + F(localip, localport, remoteip, remoteport, secretkey)   (RFC 6528 §3)

where M is a timer ticking every 4 microseconds (RFC 9293 §3.4.1) and F is a keyed
hash: here BLAKE2s with the secret as key, truncated to 32 bits. Within one 4-tuple
the ISN advances with time, so a new incarnation of a connection starts above the old
one's sequence space; across 4-tuples the offsets are unpredictable to an off-path
attacker who does not know the key.

Memory: the key only.
"""

from __future__ import annotations

import hashlib
import os
import struct
from typing import Final

from joyride.wire.seq import MASK, Seq

# RFC 9293 §3.4.1: the ISN clock is "bound to a (possibly fictitious) 32-bit clock
# whose low-order bit is incremented roughly every 4 microseconds".
TICKS_PER_SECOND: Final = 250_000

# RFC 6528 §3: the secret key should be at least 128 bits; BLAKE2s takes up to 256.
_KEY_BYTES: Final = 32
_TUPLE4: Final = struct.Struct("!4sH4sH")
_TUPLE6: Final = struct.Struct("!16sH16sH")


def pack_tuple(local_ip: bytes, local_port: int, remote_ip: bytes, remote_port: int) -> bytes:
    """The 4-tuple as the keyed hashes read it (here, syncookies.py and C's isn.c):
    addresses at their family's length, both IPv4 (4 bytes) or both IPv6 (16), ports
    in network order. ``struct`` would silently cut a longer address to its first
    bytes, so the family picks the layout, and a mixed pair is refused."""
    if len(local_ip) != len(remote_ip) or len(local_ip) not in (4, 16):
        raise ValueError("a 4-tuple's addresses are both IPv4 or both IPv6")
    layout = _TUPLE4 if len(local_ip) == 4 else _TUPLE6
    return layout.pack(local_ip, local_port & 0xFFFF, remote_ip, remote_port & 0xFFFF)


def derive_key(secret: bytes | None, person: bytes) -> bytes:
    """A 32-byte BLAKE2s key from ``secret`` (random when None), domain-separated."""
    raw = os.urandom(_KEY_BYTES) if secret is None else secret
    return hashlib.blake2s(raw, digest_size=_KEY_BYTES, person=person).digest()


def clock_ticks(now: float) -> int:
    """RFC 9293 §3.4.1 4-µs clock at ``now`` seconds, modulo 2**32."""
    return int(now * TICKS_PER_SECOND) & MASK


class IsnGenerator:
    """RFC 6528 ISN generator with a per-instance secret."""

    __slots__ = ("_key",)

    def __init__(self, secret: bytes | None = None) -> None:
        # Hashing the secret into a fixed-size key accepts any length of secret and
        # keeps ISN keys unrelated to keys derived from the same secret elsewhere.
        self._key = derive_key(secret, b"jr-isn")

    @property
    def key(self) -> bytes:
        """The derived 32-byte key (the C data plane's ISNs use the same: isn.c)."""
        return self._key

    def offset(
        self, local_ip: bytes, local_port: int, remote_ip: bytes, remote_port: int
    ) -> int:
        """F(): the keyed 32-bit hash of the 4-tuple (RFC 6528 §3)."""
        h = hashlib.blake2s(
            pack_tuple(local_ip, local_port, remote_ip, remote_port),
            digest_size=4,
            key=self._key,
        )
        return int.from_bytes(h.digest(), "big")

    def isn(
        self,
        local_ip: bytes,
        local_port: int,
        remote_ip: bytes,
        remote_port: int,
        now: float,
    ) -> Seq:
        """RFC 6528 §3: ISN = M + F(4-tuple, key), modulo 2**32."""
        return Seq(clock_ticks(now) + self.offset(local_ip, local_port, remote_ip, remote_port))
