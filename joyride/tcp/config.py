"""Every tunable of the TCP core in one place.

Defaults follow the RFCs and, where an RFC leaves a choice, what Linux does; each
field says where its default comes from. A ``TcpConfig`` is plain data: connections
copy what they need at creation and never mutate it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Final

#: How much longer IPv6's fixed header is than IPv4's (RFC 8200 §3: 40 bytes, 20).
IPV6_EXTRA_HEADER: Final = 20


@dataclass(slots=True)
class TcpConfig:
    # -- segment size -----------------------------------------------------------------
    #: MSS we advertise and the ceiling on what we send (RFC 9293 §3.7.1). 1460 fits a
    #: 1500-byte Ethernet MTU behind 20-byte IPv4 and TCP headers.
    mss: int = 1460
    #: MSS assumed when the peer's SYN carries no MSS option (RFC 9293 §3.7.1: 536).
    default_peer_mss: int = 536
    #: Smallest peer MSS we accept; smaller announcements are raised to it (as Linux's
    #: tcp_min_snd_mss, to stop a peer from forcing tiny segments: CVE-2019-11479).
    min_peer_mss: int = 88

    # -- buffers ----------------------------------------------------------------------
    #: Initial send buffer; autotuning (TcpConnection._grow_send_buffer) grows it to two
    #: congestion windows, up to ``send_buffer_max`` (SO_SNDBUF fixes it: both equal).
    send_buffer: int = 256 * 1024
    send_buffer_max: int = 4 * 1024 * 1024
    #: Initial receive buffer; autotuning (ReceiveBuffer.note_read) grows it up to
    #: ``receive_buffer_max``, which also sets the window-scale shift we offer.
    receive_buffer: int = 128 * 1024
    receive_buffer_max: int = 4 * 1024 * 1024
    #: Bound on distinct out-of-order ranges kept by the reassembler.
    reassembly_max_ranges: int = 64

    # -- options (RFC 7323, RFC 2018) -------------------------------------------------
    window_scaling: bool = True
    timestamps: bool = True
    sack: bool = True

    # -- ACK and send policy ----------------------------------------------------------
    #: Delayed-ACK timeout. RFC 9293 §3.8.6.3 requires < 0.5 s; Linux uses 40 ms.
    delayed_ack_timeout: float = 0.04
    #: Disable Nagle's algorithm (RFC 9293 §3.7.4), like TCP_NODELAY.
    nodelay: bool = False
    #: Congestion controller name, a key of ``congestion.CONGESTION_CONTROLS``.
    congestion_control: str = "cubic"
    #: HyStart++ (RFC 9406) in the initial slow start: leave it on rising delay, before
    #: a deep queue overflows (Linux's CUBIC: hystart=1).
    hystart: bool = True
    #: Duplicate-ACK threshold for fast retransmit (RFC 5681 §3.2, RFC 6675 DupThresh).
    dupthresh: int = 3
    #: Tail loss probes (RFC 8985 §7; with SACK only, as Linux's tcp_early_retrans=3).
    tlp: bool = True
    #: F-RTO after a retransmission timeout (RFC 5682 §2; Linux's tcp_frto, on).
    frto: bool = True

    # -- timers -----------------------------------------------------------------------
    #: RFC 6298 §2.1 initial RTO of 1 s; §2.4 lower bound (RFC says 1 s, Linux 200 ms).
    initial_rto: float = 1.0
    min_rto: float = 0.2
    max_rto: float = 60.0
    #: Retransmissions before giving up: data (RFC 1122 §4.2.3.5 R2, Linux tcp_retries2)
    #: and SYN / SYN-ACK (Linux tcp_syn_retries / tcp_synack_retries).
    max_retries: int = 15
    max_syn_retries: int = 6
    #: TIME-WAIT lasts 2*MSL (RFC 9293 §3.3.2, MSL = 30 s here as in Linux).
    time_wait: float = 60.0
    #: An orphaned FIN-WAIT-2 connection (closed by the application) is dropped after
    #: this long, as Linux's tcp_fin_timeout, so a silent peer cannot pin memory.
    fin_wait2_timeout: float = 60.0

    # -- path MTU ---------------------------------------------------------------------
    #: ICMP black-hole detection (RFC 4821 §3, as Linux's tcp_mtu_probing=1): after this
    #: many retransmission timeouts in a row (Linux's tcp_retries1), full-sized segments
    #: are taken to be lost to a smaller MTU on the path whose "packet too big" never
    #: arrived, and the MSS drops to ``black_hole_mss`` (Linux's tcp_base_mss), then
    #: halves at each further timeout, never below the family's minimum (536 for IPv4,
    #: RFC 9293 §3.7.1; 1220 for IPv6, RFC 8200 §5). 0: off.
    black_hole_rtos: int = 3
    black_hole_mss: int = 1024

    # -- keepalive (RFC 9293 §3.8.4 / RFC 1122 §4.2.3.6: off by default, >= 2 h idle) --
    keepalive: bool = False
    keepalive_idle: float = 7200.0
    keepalive_interval: float = 75.0
    keepalive_probes: int = 9

    # -- RFC 5961 ---------------------------------------------------------------------
    #: Challenge ACKs allowed per connection per second (RFC 5961 §7).
    challenge_ack_limit: int = 10

    # -- integrity --------------------------------------------------------------------
    #: Verify TCP checksums on receive ("full") or trust the NIC ("none").
    checksum: str = "full"

    # -- listener ---------------------------------------------------------------------
    #: Half-open connections kept per listener before SYN cookies take over.
    syn_backlog: int = 128
    #: Established connections waiting for accept(); when full, final ACKs are dropped.
    backlog: int = 128
    syn_cookies: bool = True

    def __post_init__(self) -> None:
        if not 88 <= self.mss <= 65495:
            raise ValueError(f"mss {self.mss} outside [88, 65495]")
        if self.delayed_ack_timeout >= 0.5:
            raise ValueError("delayed_ack_timeout must be < 0.5 s (RFC 9293 §3.8.6.3)")
        if self.receive_buffer > self.receive_buffer_max:
            raise ValueError("receive_buffer exceeds receive_buffer_max")
        if self.send_buffer > self.send_buffer_max:
            raise ValueError("send_buffer exceeds send_buffer_max")
        if self.checksum not in ("full", "none"):
            raise ValueError("checksum must be 'full' or 'none'")
        if self.send_buffer <= 0 or self.receive_buffer <= 0:
            raise ValueError("buffers must be positive")
        if self.syn_backlog < 1 or self.backlog < 1:
            raise ValueError("backlogs must be >= 1")

    def for_address(self, ip: bytes) -> TcpConfig:
        """The configuration of a connection whose addresses are ``ip``'s family.
        ``mss`` is an IPv4 connection's (the MTU less 40 bytes of IPv4 and TCP
        headers); an IPv6 connection's fixed header is 20 bytes longer, so it
        advertises and sends 20 bytes less (RFC 9293 §3.7.1, RFC 8200 §8.3)."""
        if len(ip) != 16:
            return self
        return replace(self, mss=max(88, self.mss - IPV6_EXTRA_HEADER))

    @property
    def verify_checksum(self) -> bool:
        return self.checksum == "full"

    @property
    def window_scale_shift(self) -> int:
        """Shift we offer: the smallest that lets the largest buffer be advertised
        (RFC 7323 §2.3, at most 14)."""
        shift = 0
        while shift < 14 and (0xFFFF << shift) < self.receive_buffer_max:
            shift += 1
        return shift
