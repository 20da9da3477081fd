"""Traffic helpers for the AF_XDP integration tests (kernel-side raw packet sockets)."""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from joyride.testbed import Testbed

ETH_P_RX = 0x88B5  # IEEE local experimental ethertypes: nothing else on the link uses them
ETH_P_TX = 0x88B6
MODES = ["native", "skb"]


def mac_bytes(mac: str) -> bytes:
    return bytes.fromhex(mac.replace(":", ""))


def payload(seq: int, size: int) -> bytes:
    """Sequence number, then a pattern that depends on it: any corruption shows."""
    body = bytes((seq * 7 + i) & 0xFF for i in range(size - 4))
    return struct.pack("!I", seq) + body


def frame_size_for(seq: int) -> int:
    return 60 + (seq * 37) % 1400  # 60..1459 bytes of payload: many lengths


@dataclass
class Link:
    """A bed plus raw AF_PACKET sockets on the peer, for kernel-side traffic."""

    tb: Testbed
    peer_tx: socket.socket
    peer_rx: socket.socket
    joy_mac: bytes
    peer_mac: bytes
    sent: int = 0
    closers: list[Callable[[], None]] = field(default_factory=list)

    def frame(self, seq: int, ethertype: int = ETH_P_RX, dst: bytes | None = None) -> bytes:
        head = (dst or self.joy_mac) + self.peer_mac + struct.pack("!H", ethertype)
        return head + payload(seq, frame_size_for(seq))

    def send_seq(self, first: int, count: int) -> None:
        for seq in range(first, first + count):
            self.peer_tx.send(self.frame(seq))

    def recv_peer(self, count: int, timeout: float = 5.0) -> list[bytes]:
        got: list[bytes] = []
        deadline = time.monotonic() + timeout
        while len(got) < count and time.monotonic() < deadline:
            try:
                got.append(self.peer_rx.recv(4096))
            except TimeoutError:
                continue
        return got
