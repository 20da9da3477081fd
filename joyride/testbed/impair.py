"""Link impairments without netem.

This kernel has no ``sch_netem``, so each impairment is built from what it does have:

- loss and duplication: an nftables ``netdev`` table. Frames towards the Joyride side
  are impaired in the *egress* hook of the middle namespace's Joyride-facing veth (the
  middle namespace holds the relay or, without one, a kernel bridge). A drop there is
  network loss: the peer's stack handed its frame to its own device and learns nothing.
  The peer's own egress hook would not do: ``dev_queue_xmit`` reports that drop to the
  sender (``NET_XMIT_DROP``), and Linux TCP keeps the segment, sends it again in order
  and enters CWR, so the receiver never sees a gap. Joyride's own ingress hook would not
  do either: XDP runs before netfilter. Frames from the Joyride side are impaired in the
  peer's *ingress* hook (AF_XDP transmits bypass the sender's egress hook, and an
  ingress drop is invisible to the sender).
- rate: a ``tbf`` qdisc on the peer's veth (towards the Joyride side).
- delay, reordering and corruption: a user-space relay namespace between the two ends
  (``joyride.testbed.relay``), since nothing in this kernel can hold a frame back.
  Corruption must happen there, on the finished frame: Linux TCP hands the device
  CHECKSUM_PARTIAL packets and completes the sum in software *after* the egress hook,
  so a byte flipped by nft at egress gets a valid checksum — corruption no receiver
  could detect. The relay flips one payload byte of the finished frame and leaves the
  sum stale, as a damaged frame would arrive.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

NFT_TABLE: Final = "joyride_impair"
# Marks a duplicate so the egress hook, which the clone re-enters, does not duplicate it
# again (that would make the duplication rate p/(1-p) instead of p).
DUP_MARK: Final = 0x4A52
# Byte offset (from the start of the Ethernet header) of the byte that corruption flips:
# past the largest Ethernet + IPv4 + TCP header (14 + 60 + 60), so only payload is hit and
# the frame still parses; frames shorter than this are never corrupted.
CORRUPT_OFFSET: Final = 14 + 60 + 60
# Probabilities are expressed to nft as "numgen random mod SCALE < k".
SCALE: Final = 1_000_000


@dataclass(frozen=True)
class Impairment:
    """What happens to frames in one direction of the link. Probabilities are in [0, 1]."""

    loss: float = 0.0
    duplicate: float = 0.0
    corrupt: float = 0.0
    delay: float = 0.0  # seconds, added by the relay
    reorder: float = 0.0  # probability that a frame is held back behind the next one
    rate_bps: int | None = None  # bits per second (towards the Joyride side only)

    def __post_init__(self) -> None:
        for name in ("loss", "duplicate", "corrupt", "reorder"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"impairment {name}={value!r} must be a probability in [0, 1]")
        if self.reorder > 0.5:
            raise ValueError(f"impairment reorder={self.reorder!r}: at most 0.5 (adjacent swaps)")
        if self.delay < 0:
            raise ValueError(f"impairment delay={self.delay!r} must be >= 0 seconds")
        if self.rate_bps is not None and self.rate_bps <= 0:
            raise ValueError(f"impairment rate_bps={self.rate_bps!r} must be positive")

    @property
    def needs_relay(self) -> bool:
        return self.delay > 0 or self.reorder > 0 or self.corrupt > 0

    @property
    def needs_nft(self) -> bool:
        return self.loss > 0 or self.duplicate > 0

    @property
    def is_none(self) -> bool:
        return not (self.needs_relay or self.needs_nft or self.rate_bps)


def _threshold(p: float) -> int:
    return round(p * SCALE)


def _rules(imp: Impairment, device: str, *, egress: bool) -> list[str]:
    """nft rules for one hook; each decision draws its own random number."""
    rules: list[str] = []
    if imp.loss:
        # IPv4 whole, IPv6's TCP only: neighbour discovery (ICMPv6) is left alone, as
        # ARP is, so a loss test measures TCP's recovery, not address resolution's.
        for match in ("meta protocol ip", "meta protocol ip6 ip6 nexthdr tcp"):
            rules.append(f"{match} numgen random mod {SCALE} < {_threshold(imp.loss)} drop")
    if imp.duplicate:
        if not egress:
            raise ValueError(
                "duplication is only available towards the Joyride side "
                "(an ingress hook cannot re-inject a copy in the same direction)"
            )
        rules.append(
            f"meta protocol ip meta mark != {DUP_MARK:#x} "
            f"numgen random mod {SCALE} < {_threshold(imp.duplicate)} "
            f'meta mark set {DUP_MARK:#x} dup to "{device}"'
        )
    return rules


def nft_table(hook: Literal["egress", "ingress"], device: str, imp: Impairment) -> str | None:
    """The nft script impairing frames through ``hook`` of ``device``; None when none is."""
    rules = _rules(imp, device, egress=hook == "egress")
    if not rules:
        return None
    body = "\n".join(f"    {rule}" for rule in rules)
    return (
        f"table netdev {NFT_TABLE} {{\n"
        f"  chain {hook} {{\n"
        f'    type filter hook {hook} device "{device}" priority 0; policy accept;\n'
        f"{body}\n  }}\n}}\n"
    )


def tbf_args(device: str, rate_bps: int) -> list[str]:
    """``tc`` arguments for a token bucket limiting ``device`` to ``rate_bps``."""
    # A burst of at least one max-size frame and ~1 ms worth of bytes keeps tbf accurate at
    # both low and high rates; the queue holds about 50 ms before tail-dropping.
    burst = max(16 * 1024, rate_bps // 8 // 1000)
    return ["tc", "qdisc", "replace", "dev", device, "root", "tbf",
            "rate", f"{rate_bps}bit", "burst", str(burst), "latency", "50ms"]
